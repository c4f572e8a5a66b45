// `portcullis replay <session-id>`: a recorded session's timeline, or its raw messages (--json).
import type { Command } from 'commander';
import { formatTimeline } from '../audit/replay.js';
import { openTargetStore, type StoreTargetOptions } from './audit.js';

interface ReplayOpts extends StoreTargetOptions {
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('replay')
    .description("print a recorded session's timeline")
    .argument('<session-id>', 'the Mcp-Session-Id (or stdio session id) to replay')
    .option('-c, --config <file>', 'configuration file (default ./portcullis.yaml unless --store is given)')
    .option('--store <url>', 'store to read, e.g. sqlite:./data/portcullis.db')
    .option('--json', 'print the raw messages, one JSON line each: {ts, direction, message}')
    .action(async (sessionId: string, o: ReplayOpts) => {
      const { store } = await openTargetStore(o);
      try {
        const messages = await store.readRecording(sessionId);
        // Not a usage error: the command was right, the session is not there (exit 1).
        if (!messages.length) throw new Error(`no recorded messages for session ${sessionId}`);
        if (o.json) {
          for (const m of messages) {
            const message = m.truncatedFrom === null ? (JSON.parse(m.body) as unknown) : { truncated: true, originalBytes: m.truncatedFrom, text: m.body };
            process.stdout.write(`${JSON.stringify({ ts: new Date(m.ts).toISOString(), direction: m.direction, message })}\n`);
          }
        } else {
          process.stdout.write(`${formatTimeline(sessionId, messages).join('\n')}\n`);
        }
      } finally {
        await store.close();
      }
    });
}
