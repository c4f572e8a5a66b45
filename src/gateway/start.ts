// Builds a gateway from a loaded portcullis.yaml: the logger, the policy in force (watched and
// hot-reloaded), the store with its audit log and recorder, each from its own section.
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { openAuditing, type Auditing } from '../audit/open.js';
import type { LoadedConfig } from '../config/load.js';
import { formatProblem, PortcullisError } from '../errors.js';
import { createLogger, type LogFormat } from '../observability/log.js';
import { PolicySource } from '../policy/watch.js';
import { policyPoint } from './decide.js';
import { Gateway, startGateway, type GatewayOptions, type RunningGateway } from './gateway.js';

export interface Wiring {
  log: Logger;
  /** Called after each policy reload (the gateway tells open sessions their lists changed). */
  onPolicyChange(listener: () => void): void;
  options: GatewayOptions;
  auditing: Auditing;
  close(): Promise<void>;
}

export async function wire(loaded: LoadedConfig, opts: { logToStderr?: boolean; logFormat?: LogFormat } = {}): Promise<Wiring> {
  const { config, baseDir } = loaded;
  const log = createLogger(config.logging.level, opts.logToStderr, opts.logFormat);
  if (!config.policy || !('path' in config.policy)) {
    throw new PortcullisError('PCL_CONFIG_INVALID', `${loaded.file}: policy.path is required (policy pushed to the store through the admin API is not available in this version)`);
  }
  const reloadListeners: Array<() => void> = [];
  const source = new PolicySource(resolve(baseDir, config.policy.path), {
    watch: config.policy.watch,
    onReload: (bundle, previous) => {
      log.info({ version: bundle.version, previous: previous.version }, `policy reloaded: version ${bundle.version.slice(0, 12)} is in force`);
      for (const listener of reloadListeners) listener();
      auditing.log.append('policy.change', 'file-watch', { version: bundle.version, previous: previous.version, files: Object.keys(bundle.files) }).catch((e) => log.error({ err: (e as Error).message }, 'could not record a policy change'));
    },
    onInvalid: (e) => log.error({ problems: e.problems.map(formatProblem) }, `policy change rejected, the running version stays in force: ${e.message}`),
    onRecovered: (bundle) => log.info({ version: bundle.version }, `policy files are valid again: version ${bundle.version.slice(0, 12)} is in force`),
  });
  let auditing: Auditing;
  try {
    auditing = await openAuditing(config, baseDir);
  } catch (e) {
    source.close();
    throw e;
  }
  const policy = policyPoint(source);
  log.info({ version: source.current().version, path: source.path }, 'policy loaded');
  return {
    log,
    onPolicyChange: (listener) => reloadListeners.push(listener),
    auditing,
    options: { baseDir, log, policy, audit: auditing.log, recorder: auditing.recorder, health: auditing.log },
    close: async () => {
      source.close();
      await auditing.close();
      log.flush();
    },
  };
}

export async function serveFromConfig(loaded: LoadedConfig, opts: { logFormat?: LogFormat } = {}): Promise<RunningGateway & { wiring: Wiring }> {
  const wiring = await wire(loaded, opts);
  const running = await startGateway(loaded.config, wiring.options);
  wiring.onPolicyChange(() => running.gateway.policyChanged());
  return { ...running, wiring, close: async () => (await running.close(), await wiring.close()) };
}

export async function gatewayFromConfig(loaded: LoadedConfig): Promise<{ gateway: Gateway; wiring: Wiring }> {
  const wiring = await wire(loaded, { logToStderr: true });
  const gateway = new Gateway(loaded.config, wiring.options);
  wiring.onPolicyChange(() => gateway.policyChanged());
  return { gateway, wiring };
}
