// `portcullis audit verify` and `portcullis audit export` (SPEC section 6).
// The store comes from --store, else from the config (-c, default ./portcullis.yaml); the
// config also supplies the signing key (its public half verifies) and checkpointEvery.
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { Command } from 'commander';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { PortcullisError } from '../errors.js';
import { linesOf } from '../lines.js';
import { resolveKeyPath, signerFromConfig } from '../audit/open.js';
import { loadVerifyKey } from '../audit/keys.js';
import { MAX_PAGE, queryAudit, type AuditQuery } from '../audit/query.js';
import { describeReport, verifyChain, verifyStore, type VerifyReport } from '../audit/verify.js';
import { openStore } from '../store/open.js';
import type { AuditRecord, Checkpoint, Store } from '../store/store.js';

export interface StoreTargetOptions {
  config?: string;
  store?: string;
}

export interface StoreTarget {
  url: string;
  baseDir: string;
  /** The config, when one was given or defaulted to. */
  loaded?: LoadedConfig;
}

/** --store wins for the store; -c (default ./portcullis.yaml when --store is absent) for the rest. */
export function resolveStoreTarget(o: StoreTargetOptions): StoreTarget {
  const loaded = o.config !== undefined || o.store === undefined ? loadConfig(o.config ?? 'portcullis.yaml') : undefined;
  if (o.store !== undefined) return { url: o.store, baseDir: process.cwd(), loaded };
  return { url: loaded!.config.store.url, baseDir: loaded!.baseDir, loaded };
}

export async function openTargetStore(o: StoreTargetOptions): Promise<{ store: Store; target: StoreTarget }> {
  const target = resolveStoreTarget(o);
  return { store: await openStore(target.url, target.baseDir, { mustExist: true }), target };
}

function readCheckpointFile(file: string): Checkpoint {
  let parsed: Partial<Checkpoint>;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<Checkpoint>;
  } catch (e) {
    throw new PortcullisError('PCL_USAGE', `cannot read the checkpoint ${file}: ${(e as Error).message}`);
  }
  if (typeof parsed.seq !== 'number' || typeof parsed.hash !== 'string' || typeof parsed.ts !== 'string') {
    throw new PortcullisError('PCL_USAGE', `${file} is not a checkpoint (needs seq, hash, ts; written by audit export --checkpoint-out)`);
  }
  return { seq: parsed.seq, hash: parsed.hash, ts: parsed.ts, signature: parsed.signature ?? null, keyId: parsed.keyId ?? null };
}

async function* readJsonl(file: string): AsyncIterable<AuditRecord> {
  const lines = linesOf(createReadStream(file));
  let n = 0;
  for await (const line of lines) {
    n++;
    if (!line.trim()) continue;
    try {
      yield JSON.parse(line) as AuditRecord;
    } catch {
      throw new PortcullisError('PCL_USAGE', `${file}:${n}: not a JSON line`);
    }
  }
}

function isoOption(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new PortcullisError('PCL_USAGE', `${name} "${value}" is not a date (use ISO 8601, e.g. 2026-11-24 or 2026-11-24T10:00:00Z)`);
  return new Date(t).toISOString();
}

interface VerifyOpts extends StoreTargetOptions {
  checkpoint?: string;
  publicKey?: string;
  checkpointEvery?: string;
  input?: string;
  json?: boolean;
}

interface ExportOpts extends StoreTargetOptions {
  since?: string;
  until?: string;
  format: string;
  checkpointOut?: string;
}

export function register(program: Command): void {
  const audit = program.command('audit').description('verify, query and export the tamper-evident audit log');

  audit
    .command('verify')
    .description('walk the hash chain and checkpoint signatures; exit 1 at the first broken record')
    .option('-c, --config <file>', 'configuration file (default ./portcullis.yaml unless --store is given)')
    .option('--store <url>', 'store to verify, e.g. sqlite:./data/portcullis.db')
    .option('--checkpoint <file>', 'a checkpoint written by audit export --checkpoint-out (detects a truncated tail)')
    .option('--public-key <file>', 'Ed25519 public (or private) key PEM that signed the checkpoints (default: audit.signingKey)')
    .option('--checkpoint-every <n>', 'require a checkpoint every n records (default: audit.checkpointEvery from the config)')
    .option('--input <file>', 'verify a JSONL export instead of a store')
    .option('--json', 'print the report as JSON')
    .action(async (o: VerifyOpts) => {
      let publicKey: KeyObject | undefined;
      let every: number | undefined;
      if (o.checkpointEvery !== undefined) {
        every = Number(o.checkpointEvery);
        if (!Number.isInteger(every) || every < 1) throw new PortcullisError('PCL_USAGE', '--checkpoint-every must be a positive integer');
      }
      const checkpoint = o.checkpoint ? readCheckpointFile(o.checkpoint) : undefined;
      let report: VerifyReport;
      if (o.input) {
        const loaded = o.config ? loadConfig(o.config) : undefined;
        publicKey = keyFor(o, loaded);
        const input = o.input;
        report = await verifyChain(() => readJsonl(input), [], { publicKey, checkpoint, anchored: false });
      } else {
        const { store, target } = await openTargetStore(o);
        try {
          publicKey = keyFor(o, target.loaded);
          every ??= target.loaded?.config.audit.checkpointEvery;
          report = await verifyStore(store, { publicKey, checkpoint, checkpointEvery: every });
        } finally {
          await store.close();
        }
      }
      if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else {
        process.stdout.write(`${describeReport(report)}\n`);
        if (report.ok) for (const w of report.warnings) process.stderr.write(`portcullis: warning: ${w}\n`);
      }
      if (!report.ok) process.exitCode = 1;
    });

  registerQuery(audit);

  audit
    .command('export')
    .description('print audit records as JSON lines, and optionally the checkpoint that verifies them elsewhere')
    .option('-c, --config <file>', 'configuration file (default ./portcullis.yaml unless --store is given)')
    .option('--store <url>', 'store to read, e.g. sqlite:./data/portcullis.db')
    .option('--since <iso>', 'only records at or after this time')
    .option('--until <iso>', 'only records at or before this time')
    .option('--format <format>', 'output format (jsonl)', 'jsonl')
    .option('--checkpoint-out <file>', 'write a checkpoint of the last exported record (signed with audit.signingKey when configured)')
    .action(async (o: ExportOpts) => {
      if (o.format !== 'jsonl') throw new PortcullisError('PCL_USAGE', `--format ${o.format} is not supported (use jsonl)`);
      const since = isoOption(o.since, '--since');
      const until = isoOption(o.until, '--until');
      const { store, target } = await openTargetStore(o);
      try {
        const signer = target.loaded ? signerFromConfig(target.loaded.config, target.loaded.baseDir) : undefined;
        let last: AuditRecord | undefined;
        let chunk: string[] = [];
        for await (const r of store.readAudit({ since, until })) {
          chunk.push(JSON.stringify({ seq: r.seq, ts: r.ts, type: r.type, actor: r.actor, data: r.data, prev: r.prev, hash: r.hash }));
          last = r;
          if (chunk.length >= 1000) {
            await write(`${chunk.join('\n')}\n`);
            chunk = [];
          }
        }
        if (chunk.length) await write(`${chunk.join('\n')}\n`);
        if (o.checkpointOut) {
          if (!last) throw new PortcullisError('PCL_USAGE', 'no records matched: no checkpoint written');
          const stored = (await store.listCheckpoints()).find((c) => c.seq === last.seq && c.signature);
          const unsigned = { seq: last.seq, hash: last.hash, ts: new Date().toISOString() };
          const cp: Checkpoint = signer ? signer.sign(unsigned) : (stored ?? { ...unsigned, signature: null, keyId: null });
          writeFileSync(o.checkpointOut, `${JSON.stringify(cp, null, 2)}\n`);
          process.stderr.write(`portcullis: checkpoint of seq ${cp.seq} written to ${o.checkpointOut}${cp.signature ? ' (signed)' : ' (unsigned: no audit.signingKey)'}\n`);
        }
      } finally {
        await store.close();
      }
    });
}

/** The admin API's filters (AuditQuery), as command-line strings. */
interface QueryOpts extends StoreTargetOptions, Pick<AuditQuery, 'server' | 'tool' | 'effect' | 'sub' | 'since' | 'until'> {
  type?: string;
  limit?: string;
}

/** `audit query`: the records that match, as JSON lines, every page (the admin API's filters). */
function registerQuery(audit: Command): void {
  audit
    .command('query')
    .description('print the audit records that match, as JSON lines (e.g. --type decision --tool deploy --effect deny)')
    .option('-c, --config <file>', 'configuration file (default ./portcullis.yaml unless --store is given)')
    .option('--store <url>', 'store to read, e.g. sqlite:./data/portcullis.db')
    .option('--type <types>', 'record types, comma-separated (decision, session.start, policy.change, admin.request, …)')
    .option('--server <name>', 'only records about this server')
    .option('--tool <name>', 'only records about this tool')
    .option('--effect <effect>', 'only decisions with this effect (allow, deny, approve)')
    .option('--sub <sub>', 'only records by or about this subject')
    .option('--since <iso>', 'only records at or after this time')
    .option('--until <iso>', 'only records at or before this time')
    .option('--limit <n>', 'at most n records (default: all)')
    .action(async (o: QueryOpts) => {
      const limit = o.limit === undefined ? Infinity : Number(o.limit);
      if (!(limit === Infinity || (Number.isInteger(limit) && limit > 0))) throw new PortcullisError('PCL_USAGE', '--limit must be a positive integer');
      const { store } = await openTargetStore(o);
      try {
        const query = {
          type: o.type?.split(',').map((t) => t.trim()).filter(Boolean),
          server: o.server,
          tool: o.tool,
          effect: o.effect,
          sub: o.sub,
          since: isoOption(o.since, '--since'),
          until: isoOption(o.until, '--until'),
        };
        let left = limit;
        let cursor: string | undefined;
        do {
          const page = await queryAudit(store, { ...query, limit: Math.min(left, MAX_PAGE), cursor });
          if (page.records.length) await write(`${page.records.map((r) => JSON.stringify(r)).join('\n')}\n`);
          left -= page.records.length;
          cursor = page.nextCursor;
        } while (cursor !== undefined && left > 0);
      } finally {
        await store.close();
      }
    });
}

/** --public-key, else the public half of audit.signingKey, else none. */
export function keyFor(o: { publicKey?: string }, loaded: LoadedConfig | undefined): KeyObject | undefined {
  if (o.publicKey) return loadVerifyKey(o.publicKey);
  const path = loaded?.config.audit.signingKey;
  return path ? loadVerifyKey(resolveKeyPath(path, loaded.baseDir)) : undefined;
}

function write(text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(text, (e) => (e ? reject(e) : resolve()));
  });
}
