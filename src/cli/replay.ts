// `portcullis replay <session-id>`: a recorded session's timeline, or its raw messages (--json).
// The recording is verified against its seals in the audit chain first; a recording that fails
// is still printed (it is evidence), followed by what is wrong with it on stderr, and exit 1.
import type { Command } from 'commander';
import { formatTimeline } from '../audit/replay.js';
import { describeRecordingBreak, verifyStoredSession } from '../audit/verify.js';
import { keyFor, openTargetStore, type StoreTargetOptions } from './audit.js';

interface ReplayOpts extends StoreTargetOptions {
  json?: boolean;
  publicKey?: string;
}

export function register(program: Command): void {
  program
    .command('replay')
    .description("print a recorded session's timeline")
    .argument('<session-id>', 'the Mcp-Session-Id (or stdio session id) to replay')
    .option('-c, --config <file>', 'configuration file (default ./portcullis.yaml unless --store is given)')
    .option('--store <url>', 'store to read, e.g. sqlite:./data/portcullis.db')
    .option('--public-key <file>', 'Ed25519 public (or private) key PEM that signed the checkpoints (default: audit.signingKey)')
    .option('--json', 'print the raw messages, one JSON line each: {ts, direction, message}')
    .action(async (sessionId: string, o: ReplayOpts) => {
      const { store, target } = await openTargetStore(o);
      try {
        const messages = await store.readRecording(sessionId);
        const report = await verifyStoredSession(store, sessionId, messages, { publicKey: keyFor(o, target.loaded), checkpointEvery: target.loaded?.config.audit.checkpointEvery });
        const broken = report.recordings?.breaks[0];
        // Not a usage error: the command was right, the session is not there (exit 1).
        if (!messages.length && !broken) throw new Error(`no recorded messages for session ${sessionId}`);
        if (o.json) {
          for (const m of messages) {
            const message = m.truncatedFrom === null ? parseOr(m.body) : { truncated: true, originalBytes: m.truncatedFrom, text: m.body };
            process.stdout.write(`${JSON.stringify({ ts: new Date(m.ts).toISOString(), direction: m.direction, message })}\n`);
          }
        } else if (messages.length) {
          process.stdout.write(`${formatTimeline(sessionId, messages).join('\n')}\n`);
        }
        if (report.break) {
          process.stderr.write(`portcullis: the recording cannot be verified: the audit log is broken at seq ${report.break.seq} (${report.break.kind}): ${report.break.message}\n`);
          process.exitCode = 1;
        } else if (broken) {
          process.stderr.write(`portcullis: this recording fails verification: ${describeRecordingBreak(broken)}\n`);
          process.exitCode = 1;
        } else {
          for (const u of report.recordings?.unsealed ?? []) {
            process.stderr.write(`portcullis: warning: messages ${u.from}–${u.to} are not sealed yet (the session is open, or was cut short): checked by their links only\n`);
          }
        }
      } finally {
        await store.close();
      }
    });
}

/** A tampered body may not even be JSON: show its text rather than stop. */
function parseOr(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return { unparseable: text };
  }
}
