// Builds a gateway from a loaded portcullis.yaml: the logger, the policy in force, the audit
// log and the authenticator, each from its own section of the config.
import type { Logger } from 'pino';
import type { LoadedConfig } from '../config/load.js';
import { createLogger } from '../observability/log.js';
import type { AuditSink, PolicyPoint } from './decide.js';
import { Gateway, startGateway, type RunningGateway } from './gateway.js';

export interface Wiring {
  log: Logger;
  policy: PolicyPoint;
  audit: AuditSink;
  close(): Promise<void>;
}

export async function wire(loaded: LoadedConfig, opts: { logToStderr?: boolean } = {}): Promise<Wiring> {
  const log = createLogger(loaded.config.logging.level, opts.logToStderr);
  // Until the policy engine is wired, nothing governed is allowed: fail closed.
  const policy: PolicyPoint = { decide: () => ({ effect: 'deny', rule: '(no policy engine)', bundleVersion: 'none' }), version: () => 'none' };
  const audit: AuditSink = { append: async (type, actor, data) => log.info({ audit: { type, actor, data } }, 'audit') };
  return { log, policy, audit, close: async () => undefined };
}

export async function serveFromConfig(loaded: LoadedConfig): Promise<RunningGateway & { wiring: Wiring }> {
  const wiring = await wire(loaded);
  const running = await startGateway(loaded.config, { baseDir: loaded.baseDir, log: wiring.log, policy: wiring.policy, audit: wiring.audit });
  return { ...running, wiring, close: async () => (await running.close(), await wiring.close()) };
}

export async function gatewayFromConfig(loaded: LoadedConfig): Promise<{ gateway: Gateway; wiring: Wiring }> {
  const wiring = await wire(loaded, { logToStderr: true });
  return { gateway: new Gateway(loaded.config, { baseDir: loaded.baseDir, log: wiring.log, policy: wiring.policy, audit: wiring.audit }), wiring };
}
