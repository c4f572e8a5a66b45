// V8 heap settings for `portcullis serve` (docs/operations.md, "Memory").
//
// Under load most of what a call allocates outlives a scavenge or two (32 clients' calls in
// flight while the young generation fills every ~25 ms) and is promoted, then dies in the old
// generation. V8 lets the old generation grow to about four times what was live after the last
// full collection before it collects again: with ~30 MB live, the heap reached 130-170 MB of
// garbage at 32 clients. Growth of 50% caps it near 1.5 times the live heap, for more frequent
// full collections (mostly on V8's helper threads). The flag is read at every collection, so it
// can be set here, at run time. The young generation's size cannot: V8 reads it when the process
// starts, and lets it grow to 16 MB per semi-space (32 MB resident, also after start-up, where a
// 1,000-rule policy's YAML parse grows it). The launchers this package ships (the Dockerfile's
// ENTRYPOINT, the systemd unit) start node with SERVE_NODE_FLAGS; deploy.test.ts holds them to it.
// Started bare, serve re-executes itself with them where Node can (withServeFlags).
import v8 from 'node:v8';

export const HEAP_GROWING_PERCENT = 50;

/**
 * The node options the shipped launchers give the gateway. 8 MB semi-spaces (a 16 MB young
 * generation): at 4 MB the scavenges come twice as often and promote more, 15-25% more CPU per
 * call, measured; at 8 MB the CPU per call is within the noise of V8's 16 MB. A 1 GiB old
 * generation: besides a ceiling far above what the gateway keeps live (about 30 MB, more with
 * calls held for approval), V8 sizes its growth by it, about 1.6 times the live heap at 1 GiB
 * against 4 times at 2 GiB and more (V8's default limit is 4 GiB on this 24 GB machine); on Node 24,
 * where the growth is not set at run time, it took 20-44 MB off the peaks at 32 clients for no
 * measurable CPU (docs/bench.md).
 */
export const SERVE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8', '--max-old-space-size=1024'];

/** The SERVE_NODE_FLAGS this process was not started with (on its command line or in NODE_OPTIONS, `-` or `_` alike). */
export function missingServeFlags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const name = (flag: string) => flag.split('=')[0]!.replaceAll('_', '-');
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].map(name));
  return SERVE_NODE_FLAGS.filter((f) => !given.has(name(f)));
}

/**
 * A `portcullis serve` started without SERVE_NODE_FLAGS (bare, `npm start`) becomes the same
 * command with them, where Node can replace a process's image (process.execve, Node 22.15 and
 * later): the same process, pid and environment, so a supervisor or a terminal sees nothing but
 * a gateway with its memory bounded. A flag the operator gave is kept as given. On Node 20 it
 * returns, and the gateway runs with V8's defaults (docs/operations.md, "Memory").
 */
export function withServeFlags(execve: ((file: string, args: string[], env: NodeJS.ProcessEnv) => never) | undefined = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve): void {
  const missing = missingServeFlags();
  if (!missing.length || typeof execve !== 'function' || process.argv[1] === undefined) return;
  execve.call(process, process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], process.env);
}

/**
 * Whether serve sets the growth at run time on this V8. On V8 13 (Node 24) the flag set at run
 * time made the heap's peaks erratic (27-77 MB where the default stays at 31, measured), so there
 * the old generation limit in SERVE_NODE_FLAGS bounds the growth instead: only older V8s get it.
 */
export function growthTuned(v8Version = process.versions.v8): boolean {
  return Number.parseInt(v8Version, 10) < 13;
}

/**
 * Sets V8's heap growth for this process, unless the operator chose one (in the node command
 * line or NODE_OPTIONS) or this V8 needs none. Returns the flag it set, or undefined.
 */
export function tuneHeap(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? '', v8Version = process.versions.v8): string | undefined {
  const given = (s: string) => /--heap[-_]growing[-_]percent\b/.test(s);
  if (execArgv.some(given) || given(nodeOptions)) return undefined;
  if (!growthTuned(v8Version)) return undefined;
  const flag = `--heap-growing-percent=${HEAP_GROWING_PERCENT}`;
  v8.setFlagsFromString(flag);
  return flag;
}
