// Shared by the audit and store tests: temp folders, keys, configs, the real CLI.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ThreadWriter } from '../writer-thread.js';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = join(REPO, 'bin', 'portcullis.js');

export function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pcl-audit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes an Ed25519 private key PEM; returns its path. */
export function writeKey(dir: string, name = 'audit-ed25519.pem'): string {
  const { privateKey } = generateKeyPairSync('ed25519');
  const path = join(dir, name);
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return path;
}

/** A minimal portcullis.yaml with the store and audit settings under test. */
export function writeConfig(dir: string, audit: { signingKey?: string; checkpointEvery?: number }, storeFile = 'audit.db'): string {
  const lines = [
    'servers:',
    '  demo: { transport: stdio, command: echo }',
    'store:',
    `  url: "sqlite:./${storeFile}"`,
    'audit:',
    ...(audit.signingKey ? [`  signingKey: ${JSON.stringify(audit.signingKey)}`] : []),
    ...(audit.checkpointEvery ? [`  checkpointEvery: ${audit.checkpointEvery}`] : []),
  ];
  const path = join(dir, 'portcullis.yaml');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI as a child process. */
export function cli(args: string[], cwd = REPO): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Makes the writer's thread fail the way a bug would, with an uncaught error, and waits until it
 * has ended. (Not worker.terminate(): terminating a thread inside a better-sqlite3 call can abort
 * the process, WiseLibs/better-sqlite3#842.)
 */
export async function crashWriterThread(writer: ThreadWriter): Promise<void> {
  const thread = writer.worker;
  if (!thread) throw new Error('no writer thread is serving');
  const exited = new Promise((resolve) => thread.once('exit', resolve));
  thread.postMessage({ id: 0, op: 'crash on purpose', args: [] });
  await exited;
}
