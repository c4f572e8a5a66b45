// One call for the gateway: the store, the audit log and the recorder from the config, and
// one close() that flushes and checkpoints them in the right order.
//
// The gateway (serve) writes through a thread of its own (writer-thread.ts) unless
// audit.writer is `loop`: commits, fsyncs, inserts and the chain's hashing leave the event loop
// that serves every session. Measured (docs/audit.md), that halves the event loop's CPU per
// append, for more CPU in all (two thread handoffs per batch), so `loop` is the choice on a
// small machine. `wrap` serves one session per process, which waits for each record anyway: it
// writes on its own event loop (thread: false).
import { isAbsolute, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { AuditLog } from './chain.js';
import { loadSigningKey, type CheckpointSigner } from './keys.js';
import { Recorder } from './recorder.js';
import { ThreadWriter } from './writer-thread.js';
import { storeWriter, type AuditWriter } from './writer.js';

export interface Auditing {
  store: Store;
  /** Where the audit log and the recorder write (see AuditingOptions.thread). */
  writer: AuditWriter;
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

export interface AuditingOptions {
  /** false: never through a thread, whatever audit.writer says (an in-memory SQLite store cannot be shared with one either). */
  thread?: boolean;
}

export async function openAuditing(config: Pick<Config, 'audit' | 'store'>, baseDir: string, options: AuditingOptions = {}): Promise<Auditing> {
  const signer = signerFromConfig(config, baseDir); // a bad key fails before anything is opened
  const store = await openStore(config.store.url, baseDir);
  let writer: AuditWriter | undefined;
  try {
    const sealing = { signer, checkpointEvery: config.audit.checkpointEvery };
    const thread = options.thread !== false && config.audit.writer === 'thread' && store.location !== ':memory:';
    const w = (writer = thread ? await ThreadWriter.start({ url: config.store.url, baseDir, ...sealing }) : storeWriter(store, sealing));
    const log = await AuditLog.open(store, { writer: w });
    const rec = config.audit.recordings;
    const recorder = rec.enabled ? new Recorder(w, { retention: rec.retention, maxMessageBytes: rec.maxMessageBytes, audit: log, sealInterval: rec.sealInterval }) : undefined;
    return {
      store,
      writer: w,
      log,
      recorder,
      async close() {
        try {
          await recorder?.close();
          await log.close();
        } finally {
          await w.close();
          await store.close();
        }
      },
    };
  } catch (e) {
    await writer?.close();
    await store.close();
    throw e;
  }
}
