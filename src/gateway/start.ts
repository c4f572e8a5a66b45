// Builds a gateway from a loaded portcullis.yaml: the logger, the policy in force (watched and
// hot-reloaded), the store with its audit log and recorder, each from its own section.
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { openAuditing, type Auditing } from '../audit/open.js';
import type { LoadedConfig } from '../config/load.js';
import { formatProblem, PortcullisError } from '../errors.js';
import { createLogger } from '../observability/log.js';
import { usesHash } from '../policy/compile.js';
import { PolicySource } from '../policy/watch.js';
import { policyPoint } from './decide.js';
import { Gateway, startGateway, type GatewayOptions, type RunningGateway, type ShutdownOptions } from './gateway.js';

export interface Wiring {
  log: Logger;
  /** Called after each policy reload (the gateway tells open sessions their lists changed). */
  onPolicyChange(listener: () => void): void;
  options: GatewayOptions;
  auditing: Auditing;
  close(): Promise<void>;
}

export async function wire(loaded: LoadedConfig, opts: { log?: Logger } = {}): Promise<Wiring> {
  const { config, baseDir } = loaded;
  const log = opts.log ?? createLogger(config.logging.level);
  if (!config.policy) throw new PortcullisError('PCL_CONFIG_INVALID', `${loaded.file}: policy.path is required (a file or folder of policy documents)`);
  const reloadListeners: Array<() => void> = [];
  const hashKey = config.masking.hashKey === undefined ? undefined : Buffer.from(config.masking.hashKey, 'utf8');
  const source = new PolicySource(resolve(baseDir, config.policy.path), {
    watch: config.policy.watch,
    check: (bundle) => {
      if (!hashKey && usesHash(bundle)) throw new PortcullisError('PCL_CONFIG_INVALID', `${loaded.file}: a mask uses strategy hash, which needs masking.hashKey (e.g. hashKey: \${file:./keys/masking.key}); the policy was not loaded`);
    },
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
  const policy = policyPoint(source, { hashKey });
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

export async function serveFromConfig(loaded: LoadedConfig, log?: Logger): Promise<RunningGateway & { wiring: Wiring }> {
  const wiring = await wire(loaded, { log });
  const running = await startGateway(loaded.config, wiring.options);
  wiring.onPolicyChange(() => running.gateway.policyChanged());
  // The sessions end (their session.end records queued) before the audit log writes its closing checkpoint.
  let closing: Promise<void> | undefined;
  const close = (opts?: ShutdownOptions) => (closing ??= running.close(opts).finally(() => wiring.close()));
  return { ...running, wiring, close };
}

/** For the stdio front: logs go to stderr (stdout carries the protocol). */
export async function gatewayFromConfig(loaded: LoadedConfig, log: Logger = createLogger(loaded.config.logging.level, true)): Promise<{ gateway: Gateway; wiring: Wiring }> {
  const wiring = await wire(loaded, { log });
  const gateway = new Gateway(loaded.config, wiring.options);
  wiring.onPolicyChange(() => gateway.policyChanged());
  return { gateway, wiring };
}
