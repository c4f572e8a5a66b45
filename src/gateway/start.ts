// Builds a gateway from a loaded portcullis.yaml: the logger, the policy in force (watched and
// hot-reloaded), the store with its audit log and recorder, each from its own section.
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { startAdmin, type RunningAdmin } from '../admin/server.js';
import type { PolicyState } from '../admin/routes.js';
import { openAuditing, signerFromConfig, type Auditing, type AuditingOptions } from '../audit/open.js';
import type { LoadedConfig } from '../config/load.js';
import { formatProblem, PortcullisError } from '../errors.js';
import { createLogger } from '../observability/log.js';
import { usesHash, type CompiledBundle } from '../policy/compile.js';
import { StorePolicySource } from '../policy/store-source.js';
import { PolicySource } from '../policy/watch.js';
import { ApprovalDesk } from './approvals.js';
import { policyPoint } from './decide.js';
import { Gateway, startGateway, type GatewayOptions, type RunningGateway, type ShutdownOptions } from './gateway.js';

export interface Wiring {
  log: Logger;
  /** Called after each policy reload (the gateway tells open sessions their lists changed). */
  onPolicyChange(listener: () => void): void;
  options: GatewayOptions;
  auditing: Auditing;
  /** The policy in force and where it comes from (the admin API reads and pushes through it). */
  policy: PolicyState;
  /** Calls held for approval (the admin API decides them). */
  approvals: ApprovalDesk;
  close(): Promise<void>;
}

export async function wire(loaded: LoadedConfig, opts: { log?: Logger } & AuditingOptions = {}): Promise<Wiring> {
  const { config, baseDir } = loaded;
  const log = opts.log ?? createLogger(config.logging.level);
  if (!config.policy) throw new PortcullisError('PCL_CONFIG_INVALID', `${loaded.file}: policy is required: policy.path (a folder or file), or policy.source: store`);
  const reloadListeners: Array<() => void> = [];
  const hashKey = config.masking.hashKey === undefined ? undefined : Buffer.from(config.masking.hashKey, 'utf8');
  /** What a bundle needs of this config before it may be in force, wherever it comes from. */
  const check = (bundle: CompiledBundle) => {
    if (!hashKey && usesHash(bundle)) throw new PortcullisError('PCL_CONFIG_INVALID', `${loaded.file}: a mask uses strategy hash, which needs masking.hashKey (e.g. hashKey: \${file:./keys/masking.key}); the policy was not loaded`);
  };
  const changed = (by: string) => (bundle: CompiledBundle, previous: CompiledBundle) => {
    log.info({ version: bundle.version, previous: previous.version }, `policy reloaded: version ${bundle.version.slice(0, 12)} is in force`);
    for (const listener of reloadListeners) listener();
    auditing.log.append('policy.change', by, { version: bundle.version, previous: previous.version, files: Object.keys(bundle.files) }).catch((e) => log.error({ err: (e as Error).message }, 'could not record a policy change'));
  };
  let folder: PolicySource | undefined;
  let loadedAt = new Date().toISOString();
  if (config.policy.source === 'folder') {
    folder = new PolicySource(resolve(baseDir, config.policy.path), {
      watch: config.policy.watch,
      check,
      onReload: (bundle, previous) => ((loadedAt = new Date().toISOString()), changed('file-watch')(bundle, previous)),
      onInvalid: (e) => log.error({ problems: e.problems.map(formatProblem) }, `policy change rejected, the running version stays in force: ${e.message}`),
      onRecovered: (bundle) => log.info({ version: bundle.version }, `policy files are valid again: version ${bundle.version.slice(0, 12)} is in force`),
    });
  }
  let auditing: Auditing;
  try {
    auditing = await openAuditing(config, baseDir, { thread: opts.thread });
  } catch (e) {
    folder?.close();
    throw e;
  }
  let fromStore: StorePolicySource | undefined;
  if (!folder) {
    try {
      // The push itself is audited by the admin API (admin.request, with its caller); this
      // record says what came into force here, also when another replica pushed it.
      fromStore = await StorePolicySource.open(auditing.store, log, changed('policy-store'), check);
    } catch (e) {
      await auditing.close();
      throw e;
    }
    if (!fromStore.entry()) log.warn('policy.source is store and nothing has been pushed yet: every request is denied until the first push (PUT /admin/v1/policy)');
  }
  const source = (folder ?? fromStore)!;
  const approvals = new ApprovalDesk({ store: auditing.store, audit: auditing.log, log, timeoutMs: config.approvals.timeout, webhooks: config.approvals.webhooks });
  try {
    await approvals.start();
  } catch (e) {
    await fromStore?.close();
    folder?.close();
    await auditing.close();
    throw e;
  }
  const policy = policyPoint(source, { hashKey });
  log.info({ version: source.current().version, ...(folder ? { path: folder.path } : { source: 'store' }) }, 'policy loaded');
  return {
    log,
    onPolicyChange: (listener) => reloadListeners.push(listener),
    auditing,
    policy: { current: () => source.current(), store: fromStore, folder: folder && { path: folder.path, loadedAt: () => loadedAt } },
    approvals,
    options: { baseDir, log, policy, audit: auditing.log, recorder: auditing.recorder, health: auditing.log, approvals },
    close: async () => {
      folder?.close();
      await fromStore?.close();
      await approvals.close();
      await auditing.close();
      log.flush();
    },
  };
}

export async function serveFromConfig(loaded: LoadedConfig, log?: Logger): Promise<RunningGateway & { wiring: Wiring; admin?: RunningAdmin }> {
  const wiring = await wire(loaded, { log });
  let running: RunningGateway | undefined;
  let admin: RunningAdmin | undefined;
  try {
    running = await startGateway(loaded.config, wiring.options);
    wiring.onPolicyChange(() => running!.gateway.policyChanged());
    if (loaded.config.admin) {
      admin = await startAdmin({
        config: loaded.config,
        log: wiring.log,
        auth: running.gateway.auth,
        audit: wiring.auditing.log,
        store: wiring.auditing.store,
        policy: wiring.policy,
        servers: Object.keys(loaded.config.servers),
        publicKey: signerFromConfig(loaded.config, loaded.baseDir)?.publicKey,
        checkpointEvery: loaded.config.audit.checkpointEvery,
        approvals: wiring.approvals,
      });
      wiring.approvals.adminUrl = admin.base;
    }
  } catch (e) {
    await running?.close();
    await wiring.close();
    throw e;
  }
  const gateway = running;
  // The sessions end (their session.end records queued) before the audit log writes its closing checkpoint.
  let closing: Promise<void> | undefined;
  const close = (opts?: ShutdownOptions) => (closing ??= (async () => (await admin?.close(), await gateway.close(opts)))().finally(() => wiring.close()));
  return { ...gateway, wiring, admin, close };
}

/**
 * For the stdio front: logs go to stderr (stdout carries the protocol). One session per process,
 * so the audit log writes on this thread: a writer thread would only add its handoffs.
 */
export async function gatewayFromConfig(loaded: LoadedConfig, log: Logger = createLogger(loaded.config.logging.level, true)): Promise<{ gateway: Gateway; wiring: Wiring }> {
  const wiring = await wire(loaded, { log, thread: false });
  const gateway = new Gateway(loaded.config, wiring.options);
  wiring.onPolicyChange(() => gateway.policyChanged());
  return { gateway, wiring };
}
