// The stdio upstream transport: a child process per session, one JSON-RPC message per line.
// Each child leads its own process group (spawned detached), because what a config launches is
// often not the server itself: `npx pkg`, `npm exec` and `sh -c` start the real server as a
// grandchild, and ending only the process we started leaves that grandchild running. Ending an
// upstream therefore ends its whole group, and the gateway ends every group it still has on
// its way out. (A side effect: a Ctrl-C at the terminal reaches the gateway, not its upstreams,
// so requests in flight can still finish while the gateway drains.)
import { spawn, type ChildProcess } from 'node:child_process';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { readLines } from '../lines.js';
import { noteWireSize } from './wire-size.js';

/** A line the child has not finished after this many bytes cannot be a message the gateway would pass on. */
const MAX_LINE_BYTES = 64 * 1024 * 1024;

/** How long an upstream gets to exit after its stdin closes, and again after SIGTERM, before SIGKILL. */
export const STDIO_GRACE_MS = 2_000;

export interface StdioParams {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** Each line the child writes to stderr (its log). Always read: an unread pipe would block the child once full, and hold its close back. */
  stderr?: (line: string) => void;
  graceMs?: number;
}

/** Every upstream whose process group may still have members. */
const live = new Set<StdioUpstreamTransport>();

/** SIGKILLs every stdio upstream's process group at once: for a forced shutdown and for the way out. */
export function killStdioUpstreams(): void {
  for (const t of live) t.kill();
}

// Whatever way the gateway exits (a normal end, process.exit, an uncaught exception), no group
// outlives it. Only a SIGKILL of the gateway itself escapes this; the children then read EOF.
process.on('exit', killStdioUpstreams);

export class StdioUpstreamTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onerror?: (error: Error) => void;
  onclose?: () => void;
  private child?: ChildProcess;
  /** stdin is corked until the end of this turn of the event loop (see send). */
  private corked = false;
  /** The start of a line whose end has not arrived yet. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private readonly graceMs: number;
  /** Resolves once the leader has exited and every pipe to the group is closed. */
  private readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private closing?: Promise<void>;
  private ending?: Promise<void>;
  /** How the leader ended: `code 3`, `SIGTERM`; undefined while it runs. */
  exitStatus?: string;

  constructor(private readonly params: StdioParams) {
    this.graceMs = params.graceMs ?? STDIO_GRACE_MS;
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): Promise<void> {
    if (this.child) throw new Error('stdio upstream already started');
    const { command, args, env, cwd } = this.params;
    const child = (this.child = spawn(command, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'], detached: true, windowsHide: true }));
    child.stdout!.on('data', (chunk: Buffer) => this.read(chunk));
    const stderr = this.params.stderr;
    readLines(child.stderr!).on('line', (line: string) => stderr?.(line));
    child.stdin!.on('error', (e) => this.onerror?.(e));
    child.stdout!.on('error', (e) => this.onerror?.(e));
    child.once('exit', (code, signal) => {
      this.exitStatus = signal ?? `code ${code}`;
      // The leader is gone: what it started goes too.
      void this.endGroup();
    });
    child.once('close', () => {
      live.delete(this);
      this.resolveClosed();
      this.onclose?.();
    });
    return new Promise((resolve, reject) => {
      child.once('spawn', () => {
        live.add(this);
        resolve();
      });
      child.once('error', (e) => {
        reject(e);
        this.onerror?.(e);
      });
    });
  }

  /**
   * Splits the child's output into lines and parses each once. Shape is checked where it matters
   * (classify, the session), not by a schema pass per message here: this is the relaying hot path.
   */
  private read(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      const line = this.partial.length ? Buffer.concat([...this.partial, piece]) : piece;
      this.partial = [];
      this.partialBytes = 0;
      this.deliver(line);
    }
    if (start === chunk.length) return;
    this.partialBytes += chunk.length - start;
    if (this.partialBytes > MAX_LINE_BYTES) {
      // A line this long cannot be resynchronised: the stream is no longer usable.
      this.onerror?.(new Error(`the upstream wrote a line over ${MAX_LINE_BYTES} bytes`));
      void this.close();
      return;
    }
    this.partial.push(chunk.subarray(start));
  }

  private deliver(line: Buffer): void {
    const text = line.toString('utf8').trim();
    if (text === '') return;
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch (e) {
      this.onerror?.(new Error(`the upstream wrote a line that is not JSON: ${(e as Error).message}`));
      return;
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message) || (message as { jsonrpc?: unknown }).jsonrpc !== '2.0') {
      this.onerror?.(new Error('the upstream wrote a line that is not a JSON-RPC message'));
      return;
    }
    noteWireSize(message, line.length);
    this.onmessage?.(message as JSONRPCMessage);
  }

  send(message: JSONRPCMessage): Promise<void> {
    const stdin = this.child?.stdin;
    if (!stdin?.writable) return Promise.reject(new Error('Not connected'));
    // The lines sent in one turn of the event loop (many sessions' requests on a shared upstream)
    // go down the pipe in one write: each write wakes the server.
    if (!this.corked) {
      this.corked = true;
      stdin.cork();
      setImmediate(() => {
        this.corked = false;
        stdin.uncork();
      });
    }
    return new Promise((resolve) => (stdin.write(`${JSON.stringify(message)}\n`) ? resolve() : stdin.once('drain', resolve)));
  }

  /** Closing stdin is how MCP asks a stdio server to exit; then SIGTERM, then SIGKILL, each to the group. Bounded by twice the grace period. */
  close(): Promise<void> {
    if (!this.child) return Promise.resolve();
    return (this.closing ??= (async () => {
      this.child!.stdin!.end();
      await within(this.closed, this.graceMs);
      await this.endGroup();
    })());
  }

  /** SIGKILLs the group now (synchronous: usable in an exit handler). */
  kill(): void {
    this.signal('SIGKILL');
  }

  /**
   * SIGTERM to the group; SIGKILL to whatever is left of it once every pipe to it is closed (its
   * servers are done: what remains has let go of its stdio, or is a zombie not yet reaped) or
   * after the grace period, whichever comes first.
   */
  private endGroup(): Promise<void> {
    return (this.ending ??= (async () => {
      if (this.signal('SIGTERM')) {
        await within(this.closed, this.graceMs);
        if (this.signal('SIGKILL')) {
          // A process that left the group may still hold a pipe open: stop waiting for it.
          for (const s of [this.child!.stdin, this.child!.stdout, this.child!.stderr]) s?.destroy();
          await within(this.closed, this.graceMs);
          // A SIGKILLed process is gone only once the kernel has torn it down and its parent (init,
          // for the leader's orphans) has reaped it: a moment after the leader's exit is seen.
          const until = performance.now() + this.graceMs;
          while (this.signal(0) && performance.now() < until) await new Promise((r) => setTimeout(r, 5));
        }
      }
      live.delete(this);
    })());
  }

  /** Sends a signal to the whole group; false when no process of the group is left. */
  private signal(signal: NodeJS.Signals | 0): boolean {
    const pid = this.child?.pid;
    if (pid === undefined) return false;
    try {
      process.kill(-pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}

function delay(ms: number): { done: Promise<void>; cancel(): void } {
  let timer!: NodeJS.Timeout;
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
    timer = setTimeout(r, ms);
  });
  return { done, cancel: () => (clearTimeout(timer), resolve()) };
}

/** Waits for p, at most ms (and leaves no timer behind). */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  const d = delay(ms);
  await Promise.race([p, d.done]);
  d.cancel();
}
