// One call for the gateway: the store, the audit log and the recorder from the config, and
// one close() that flushes and checkpoints them in the right order.
import { isAbsolute, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { AuditLog } from './chain.js';
import { loadSigningKey, type CheckpointSigner } from './keys.js';
import { Recorder } from './recorder.js';

export interface Auditing {
  store: Store;
  log: AuditLog;
  /** Undefined when audit.recordings.enabled is false. */
  recorder: Recorder | undefined;
  /** Flushes and seals recordings, writes the closing checkpoint, closes the store. */
  close(): Promise<void>;
}

export function resolveKeyPath(path: string, baseDir: string): string {
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/** The signer named by audit.signingKey, or undefined when none is configured. Throws naming the path. */
export function signerFromConfig(config: Pick<Config, 'audit'>, baseDir: string): CheckpointSigner | undefined {
  return config.audit.signingKey ? loadSigningKey(resolveKeyPath(config.audit.signingKey, baseDir)) : undefined;
}

export async function openAuditing(config: Pick<Config, 'audit' | 'store'>, baseDir: string): Promise<Auditing> {
  const signer = signerFromConfig(config, baseDir); // a bad key fails before anything is opened
  const store = await openStore(config.store.url, baseDir);
  try {
    const log = await AuditLog.open(store, { signer, checkpointEvery: config.audit.checkpointEvery });
    const rec = config.audit.recordings;
    const recorder = rec.enabled ? new Recorder(store, { retention: rec.retention, maxMessageBytes: rec.maxMessageBytes, audit: log, sealInterval: rec.sealInterval }) : undefined;
    return {
      store,
      log,
      recorder,
      async close() {
        try {
          await recorder?.close();
          await log.close();
        } finally {
          await store.close();
        }
      },
    };
  } catch (e) {
    await store.close();
    throw e;
  }
}
