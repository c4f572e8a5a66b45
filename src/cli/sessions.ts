// `portcullis sessions [--since …] [--sub …] [--server …]`: the sessions in a store, one line
// each (or JSON lines), so a session to replay is found without reading the gateway's log.
import type { Command } from 'commander';
import { listSessions } from '../audit/query.js';
import { PortcullisError } from '../errors.js';
import { openTargetStore, type StoreTargetOptions } from './audit.js';

interface SessionsOpts extends StoreTargetOptions {
  since?: string;
  sub?: string;
  server?: string;
  limit?: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('sessions')
    .description('list recorded sessions: id, subject, server, start, end, messages')
    .option('-c, --config <file>', 'configuration file (default ./portcullis.yaml unless --store is given)')
    .option('--store <url>', 'store to read, e.g. sqlite:./data/portcullis.db')
    .option('--since <iso>', 'sessions started at or after this time')
    .option('--sub <sub>', "only this subject's sessions")
    .option('--server <name>', 'only sessions of this server')
    .option('--limit <n>', 'the newest n sessions (default 100, at most 1000)')
    .option('--json', 'one JSON line per session')
    .action(async (o: SessionsOpts) => {
      const since = o.since === undefined ? undefined : Date.parse(o.since);
      if (since !== undefined && Number.isNaN(since)) throw new PortcullisError('PCL_USAGE', `--since "${o.since}" is not a date (use ISO 8601)`);
      const limit = o.limit === undefined ? undefined : Number(o.limit);
      if (limit !== undefined && !(Number.isInteger(limit) && limit > 0 && limit <= 1000)) throw new PortcullisError('PCL_USAGE', '--limit must be an integer from 1 to 1000');
      const { store } = await openTargetStore(o);
      try {
        const sessions = await listSessions(store, { since: since === undefined ? undefined : new Date(since).toISOString(), sub: o.sub, server: o.server, limit });
        const lines = o.json
          ? sessions.map((s) => JSON.stringify(s))
          : sessions.map((s) => `${s.id}  ${s.server}  ${s.sub}  ${s.startedAt} → ${s.endedAt ?? 'open'}  ${s.messages} messages`);
        if (lines.length) process.stdout.write(`${lines.join('\n')}\n`);
      } finally {
        await store.close();
      }
    });
}
