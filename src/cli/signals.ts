// Signals for the long-running commands (serve, wrap). The first SIGTERM, SIGINT or SIGHUP stops
// gracefully (drain, then end); a later one (a second Ctrl-C) forces: no more draining, stdio
// upstreams SIGKILLed. The closing audit checkpoint is written either way: the handlers stay
// installed until the command is done, so no repeated signal falls back to Node's default of
// exiting at once. A copy of the first signal within REPEAT_MS counts once: `npm start` forwards
// the terminal's SIGINT to a gateway that already received it from the terminal.
import type { Logger } from 'pino';

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
const REPEAT_MS = 1_000;
/** After a forced stop, the longest the process waits for its store before exiting 1. */
const FORCED_EXIT_MS = 10_000;

export interface Stop {
  /** Resolves with the first signal's name. */
  requested: Promise<string>;
  /** Aborted by a second signal. */
  force: AbortSignal;
  /** Removes the handlers; the process then exits even if a handle is left open. */
  done(): void;
}

export function stopOnSignals(log: Logger): Stop {
  const force = new AbortController();
  let first: { signal: string; at: number } | undefined;
  let request!: (signal: string) => void;
  const requested = new Promise<string>((r) => (request = r));
  const handler = (signal: NodeJS.Signals) => {
    if (!first) {
      first = { signal, at: Date.now() };
      log.info({ signal }, 'shutting down: no new sessions, finishing requests in flight (signal again to force)');
      return request(signal);
    }
    if (force.signal.aborted || (signal === first.signal && Date.now() - first.at < REPEAT_MS)) return;
    log.warn({ signal }, 'forced shutdown: requests in flight are cut off, upstreams killed; the audit log still closes');
    force.abort();
    setTimeout(() => {
      log.error(`shutdown did not finish within ${FORCED_EXIT_MS} ms of being forced; exiting (the closing audit checkpoint may be missing)`);
      log.flush();
      process.exit(1);
    }, FORCED_EXIT_MS).unref();
  };
  for (const s of SIGNALS) process.on(s, handler);
  return {
    requested,
    force: force.signal,
    done: () => {
      for (const s of SIGNALS) process.off(s, handler);
      // Everything is closed and recorded: nothing left open (a stuck pipe, a pool) may hold the exit up.
      setTimeout(() => process.exit(), 1_000).unref();
    },
  };
}
