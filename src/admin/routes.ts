// The admin API's routes (SPEC 7): policy (read, history, push, rollback, dry-run), audit (query,
// verify) and sessions (list, one recording). Handlers validate everything they read and answer
// through AdminError; the server turns both into JSON and an audit record.
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { recordedText } from '../audit/chain.js';
import { listSessions, parseCursor, queryAudit } from '../audit/query.js';
import { describeReport, verifyStore } from '../audit/verify.js';
import { PortcullisError } from '../errors.js';
import { compileWithProblems, type CompiledBundle } from '../policy/compile.js';
import { explain } from '../policy/explain.js';
import { testInput } from '../policy/policy-tests.js';
import type { PolicyTestCase } from '../policy/schema.js';
import type { StorePolicySource } from '../policy/store-source.js';
import type { ApprovalRecord, Store } from '../store/store.js';
import { identityKey } from '../auth/identity.js';
import type { ApprovalDesk } from '../gateway/approvals.js';
import type { AuditSink } from '../gateway/decide.js';
import type { Identity } from '../auth/identity.js';

/** Who called: an admin token, or an identity of the gateway (admin when in admin.groups). */
export type Caller = { kind: 'token'; id: string; admin: true } | { kind: 'identity'; identity: Identity; admin: boolean };

export const actorOf = (c: Caller | undefined): string => (!c ? 'unauthenticated' : c.kind === 'token' ? `admin:${c.id}` : c.identity.sub);

/** An answer with a status: thrown by handlers, sent as {error, message}. */
export class AdminError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Where policy comes from, as the admin API sees it. */
export interface PolicyState {
  current(): CompiledBundle;
  /** Set with `policy.source: store`: pushes and the history go through it. */
  store?: StorePolicySource;
  /** With `policy.source: folder`: the folder, and when the bundle in force was loaded. */
  folder?: { path: string; loadedAt(): string };
}

const approvalStatus = z.enum(['pending', 'approved', 'denied', 'expired', 'cancelled']);
const verdictBody = z.strictObject({ reason: z.string().max(2_000).optional() });

/** An approval as the admin API shows it (SPEC 7): the requester's credential key stays inside. */
function approvalView(a: ApprovalRecord): Record<string, unknown> {
  return {
    id: a.id,
    status: a.status,
    requester: { sub: a.requester.sub, groups: a.requester.groups },
    server: a.server,
    method: a.method,
    ...(a.tool !== undefined && { tool: a.tool }),
    ...(a.resource !== undefined && { resource: a.resource }),
    ...(a.prompt !== undefined && { prompt: a.prompt }),
    args: a.args ?? {},
    rule: a.rule,
    approvers: a.approvers,
    createdAt: a.createdAt,
    expiresAt: a.expiresAt,
    ...(a.decidedAt !== undefined && { decidedAt: a.decidedAt, decidedBy: a.decidedBy, reason: a.reason ?? null }),
  };
}

/** The rule's approvers decide: identities by sub or group, an admin token only when named as "admin:<id>". */
function mayDecide(caller: Caller, a: ApprovalRecord): boolean {
  const subs = a.approvers.sub ?? [];
  if (caller.kind === 'token') return subs.includes(`admin:${caller.id}`);
  const groups = a.approvers.groups ?? [];
  return subs.includes(caller.identity.sub) || caller.identity.groups.some((g) => groups.includes(g));
}

function isRequester(caller: Caller, a: ApprovalRecord): boolean {
  return caller.kind === 'identity' && (identityKey(caller.identity) === a.requester.key || caller.identity.sub === a.requester.sub);
}

function verdictRoute(verdict: 'approve' | 'deny'): Route {
  return {
    method: 'POST',
    path: new RegExp(`^/admin/v1/approvals/([^/]{1,100})/${verdict}$`),
    adminOnly: false,
    async handle(ctx, [id]) {
      const { reason } = parse(verdictBody, ctx.body);
      const a = await ctx.store.getApproval(id);
      if (!a) throw new AdminError(404, 'not_found', `no approval ${id}`);
      // Who may decide comes first: a caller who may not learns nothing about the approval's state.
      if (isRequester(ctx.caller, a)) throw new AdminError(403, 'forbidden', 'the requester never decides their own request');
      if (!mayDecide(ctx.caller, a)) throw new AdminError(403, 'forbidden', `${actorOf(ctx.caller)} is not among the approvers of rule ${a.rule}`);
      if (a.status !== 'pending') throw new AdminError(409, 'conflict', `approval ${id} is ${a.status}${a.decidedBy ? ` (by ${a.decidedBy})` : ''}: it cannot be decided again`);
      const by = actorOf(ctx.caller);
      const status = verdict === 'approve' ? 'approved' : 'denied';
      const grantUntil = status === 'approved' && a.grantMs ? new Date(Date.now() + a.grantMs).toISOString() : undefined;
      const settled = await ctx.store.settleApproval(id, { status, decidedBy: by, reason, grantUntil });
      if (!settled) {
        const now = await ctx.store.getApproval(id);
        throw new AdminError(409, 'conflict', `approval ${id} is ${now?.status ?? 'gone'}: it cannot be decided again`);
      }
      await ctx.audit.append(`approval.${status}`, by, { approvalId: id, by, reason: reason ?? null, rule: a.rule, sessionId: a.sessionId, requestId: recordedText(a.requestId), requester: a.requester.sub, ...(grantUntil && { grantUntil }) });
      await ctx.approvals.settled(id);
      return { body: { approval: approvalView(settled) }, audit: { approvalId: id, status } };
    },
  };
}

export interface AdminContext {
  caller: Caller;
  body: Record<string, unknown> | undefined;
  query: URLSearchParams;
  store: Store;
  policy: PolicyState;
  /** The configured server names (unknown-server findings on push). */
  servers: string[];
  /** Checks checkpoint signatures in /audit/verify when a key is configured. */
  publicKey?: KeyObject;
  checkpointEvery?: number;
  approvals: ApprovalDesk;
  /** flush(): the audit log is written by its own thread; reads of it wait for the appends made before them, so a caller sees its own earlier calls. */
  audit: AuditSink & { flush(): Promise<void> };
}

export interface Answer {
  status?: number;
  body: unknown;
  /** What the call's audit record says besides method, path and status. */
  audit?: Record<string, unknown>;
}

interface Route {
  method: string;
  path: RegExp;
  /** False only where any authenticated identity may call (approvals, where the rule decides). */
  adminOnly: boolean;
  handle(ctx: AdminContext, params: string[]): Promise<Answer>;
}

/** Limits on a pushed bundle: far above any real policy, low enough that a push cannot exhaust the gateway. */
export const MAX_FILES = 1000;
/** A relative path of segments without "." or "..", ending in .yaml, .yml or .json. */
const FILE_NAME = /^(?!.*(?:^|\/)\.{1,2}(?:\/|$))[A-Za-z0-9_][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_][A-Za-z0-9_.-]*)*\.(?:ya?ml|json)$/;

const pushBody = z.strictObject({
  files: z.record(z.string(), z.string()).superRefine((files, ctx) => {
    const names = Object.keys(files);
    if (!names.length) ctx.addIssue({ code: 'custom', message: 'at least one policy file is required' });
    if (names.length > MAX_FILES) return void ctx.addIssue({ code: 'custom', message: `at most ${MAX_FILES} files` });
    for (const name of names) {
      if (name.length > 256 || !FILE_NAME.test(name)) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'file names are relative paths of letters, digits, "_", "." and "-" ending in .yaml, .yml or .json (no "..")' });
      }
    }
  }),
  message: z.string().max(10_000).default(''),
});

const rollbackBody = z.strictObject({ version: z.string().regex(/^[0-9a-f]{64}$/, 'a bundle version: 64 hex digits'), message: z.string().max(10_000).optional() });

const decideBody = z
  .strictObject({
    identity: z.strictObject({ sub: z.string().min(1), groups: z.array(z.string()).default([]), claims: z.record(z.string(), z.unknown()).default({}) }),
    server: z.string().min(1),
    method: z.string().min(1).optional(),
    tool: z.string().optional(),
    resource: z.string().optional(),
    prompt: z.string().optional(),
    args: z.record(z.string(), z.unknown()).optional(),
    time: z.iso.datetime({ offset: true }).optional(),
    files: pushBody.shape.files.optional(),
  })
  .refine((b) => [b.tool, b.resource, b.prompt].filter((x) => x !== undefined).length <= 1, 'give at most one of tool, resource and prompt')
  .refine((b) => b.method !== undefined || b.tool !== undefined || b.resource !== undefined || b.prompt !== undefined, 'give a tool, a resource, a prompt or a method');

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const errors = r.error.issues.map((i) => ({ field: i.path.map(String).join('.'), message: i.message }));
  throw new AdminError(400, 'bad_request', errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; '), { errors });
}

function invalidBundle(e: PortcullisError): AdminError {
  return new AdminError(422, 'policy_invalid', e.message, { errors: e.problems.map((p) => ({ file: p.file ?? null, line: p.line ?? null, field: p.field ?? null, message: p.message })) });
}

/** Who makes a policy change (SPEC 7 `by`: the pusher's sub or token id), and what was in force before it. */
function change(ctx: AdminContext, source: StorePolicySource): { by: string; previous: string } {
  return { by: ctx.caller.kind === 'token' ? ctx.caller.id : ctx.caller.identity.sub, previous: source.current().version };
}

function storeSource(ctx: AdminContext): StorePolicySource {
  if (ctx.policy.store) return ctx.policy.store;
  throw new AdminError(409, 'policy_source_folder', `policy comes from the folder ${ctx.policy.folder?.path ?? ''} (policy.path): change the files there, or set policy.source: store to push through the admin API`);
}

const ISO = z.iso.datetime({ offset: true });
function isoParam(q: URLSearchParams, name: string): string | undefined {
  const v = q.get(name) ?? undefined;
  if (v === undefined) return undefined;
  if (!ISO.safeParse(v).success) throw new AdminError(400, 'bad_request', `${name} must be an ISO 8601 time, e.g. 2026-11-29T10:00:00Z`);
  return new Date(v).toISOString();
}

/** `?type=a,b` or `?type=a&type=b`; undefined when absent. */
function listParam(q: URLSearchParams, name: string): string[] | undefined {
  const values = q.getAll(name).flatMap((t) => t.split(',')).filter(Boolean);
  return values.length ? values : undefined;
}

function limitParam(q: URLSearchParams): number | undefined {
  const v = q.get('limit');
  if (v === null) return undefined;
  if (!/^[1-9][0-9]{0,3}$/.test(v)) throw new AdminError(400, 'bad_request', 'limit must be an integer from 1 to 1000');
  return Number(v);
}

const routes: Route[] = [
  {
    method: 'GET',
    path: /^\/admin\/v1\/approvals$/,
    adminOnly: false,
    async handle(ctx) {
      const raw = ctx.query.get('status') ?? undefined;
      const status = raw === undefined ? undefined : approvalStatus.safeParse(raw);
      if (status && !status.success) throw new AdminError(400, 'bad_request', 'status is pending, approved, denied, expired or cancelled');
      const all = await ctx.store.listApprovals({ status: status?.data, limit: limitParam(ctx.query) ?? 100 });
      // An admin lists everything; anyone else what they may decide (never their own requests).
      const shown = ctx.caller.admin && ctx.caller.kind === 'token' ? all : all.filter((a) => (ctx.caller.admin || mayDecide(ctx.caller, a)) && !isRequester(ctx.caller, a));
      return { body: { approvals: shown.map(approvalView) } };
    },
  },
  {
    method: 'GET',
    path: /^\/admin\/v1\/approvals\/([^/]{1,100})$/,
    adminOnly: false,
    async handle(ctx, [id]) {
      const a = await ctx.store.getApproval(id);
      if (!a || (!ctx.caller.admin && !mayDecide(ctx.caller, a) && !isRequester(ctx.caller, a))) throw new AdminError(404, 'not_found', `no approval ${id}`);
      return { body: { approval: approvalView(a) } };
    },
  },
  verdictRoute('approve'),
  verdictRoute('deny'),
  {
    method: 'GET',
    path: /^\/admin\/v1\/policy$/,
    adminOnly: true,
    async handle(ctx) {
      const bundle = ctx.policy.current();
      const entry = ctx.policy.store?.entry();
      if (ctx.policy.store) {
        if (!entry) return { body: { version: null, files: {}, message: 'nothing pushed yet: every request is denied', loadedAt: null, by: null } };
        return { body: { version: entry.version, files: entry.files, message: entry.message, loadedAt: entry.loadedAt, by: entry.by } };
      }
      return { body: { version: bundle.version, files: bundle.files, message: `loaded from ${ctx.policy.folder?.path}`, loadedAt: ctx.policy.folder?.loadedAt() ?? null, by: 'file-watch' } };
    },
  },
  {
    method: 'GET',
    path: /^\/admin\/v1\/policy\/versions$/,
    adminOnly: true,
    async handle(ctx) {
      storeSource(ctx);
      const versions = await ctx.store.policyHistory(limitParam(ctx.query) ?? 100);
      return { body: { versions: versions.map((v) => ({ version: v.version, message: v.message, loadedAt: v.loadedAt, by: v.by, action: v.action })) } };
    },
  },
  {
    method: 'PUT',
    path: /^\/admin\/v1\/policy$/,
    adminOnly: true,
    async handle(ctx) {
      const source = storeSource(ctx);
      const { files, message } = parse(pushBody, ctx.body);
      const { by, previous } = change(ctx, source);
      try {
        const { entry, warnings } = await source.push(files, message, by, ctx.servers);
        return { body: { version: entry.version, warnings: warnings.map(({ file, line, field, message: m, ruleId }) => ({ file, line, field, rule: ruleId, message: m })) }, audit: { version: entry.version, previous, message } };
      } catch (e) {
        // PCL_CONFIG_INVALID: the bundle needs what this gateway's config lacks (a hash key for hash masks).
        if (e instanceof PortcullisError && (e.code === 'PCL_POLICY_INVALID' || e.code === 'PCL_CONFIG_INVALID')) throw invalidBundle(e);
        throw e;
      }
    },
  },
  {
    method: 'POST',
    path: /^\/admin\/v1\/policy\/rollback$/,
    adminOnly: true,
    async handle(ctx) {
      const source = storeSource(ctx);
      const { version, message } = parse(rollbackBody, ctx.body);
      const { by, previous } = change(ctx, source);
      const entry = await source.rollback(version, message ?? `rollback to ${version}`, by);
      if (!entry) throw new AdminError(404, 'not_found', `no version ${version} in the policy history`);
      return { body: { version: entry.version }, audit: { version, previous } };
    },
  },
  {
    method: 'POST',
    path: /^\/admin\/v1\/decide$/,
    adminOnly: true,
    async handle(ctx) {
      const b = parse(decideBody, ctx.body);
      let bundle = ctx.policy.current();
      if (b.files) {
        const compiled = compileWithProblems(b.files);
        if (!compiled.bundle) throw invalidBundle(new PortcullisError('PCL_POLICY_INVALID', `the supplied bundle has ${compiled.problems.length} errors`, compiled.problems));
        bundle = compiled.bundle;
      }
      const input = testInput({ ...b, name: 'dry-run', identity: { sub: b.identity.sub, groups: b.identity.groups, claims: b.identity.claims } } as PolicyTestCase);
      const explanation = explain(bundle, input);
      const d = explanation.decision;
      return { body: { effect: d.effect, rule: d.rule, message: d.message ?? null, bundleVersion: d.bundleVersion, explanation } };
    },
  },
  {
    method: 'GET',
    path: /^\/admin\/v1\/audit$/,
    adminOnly: true,
    async handle(ctx) {
      const q = ctx.query;
      const cursor = q.get('cursor') ?? undefined;
      if (Number.isNaN(parseCursor(cursor))) throw new AdminError(400, 'bad_request', 'cursor must be the nextCursor of a previous page');
      await ctx.audit.flush();
      const page = await queryAudit(ctx.store, {
        type: listParam(q, 'type'),
        server: q.get('server') ?? undefined,
        tool: q.get('tool') ?? undefined,
        effect: q.get('effect') ?? undefined,
        sub: q.get('sub') ?? undefined,
        since: isoParam(q, 'since'),
        until: isoParam(q, 'until'),
        limit: limitParam(q),
        cursor,
      });
      return { body: page };
    },
  },
  {
    method: 'GET',
    path: /^\/admin\/v1\/audit\/verify$/,
    adminOnly: true,
    async handle(ctx) {
      await ctx.audit.flush();
      const report = await verifyStore(ctx.store, { publicKey: ctx.publicKey, checkpointEvery: ctx.checkpointEvery });
      return { body: { ...report, summary: describeReport(report) }, audit: { ok: report.ok } };
    },
  },
  {
    method: 'GET',
    path: /^\/admin\/v1\/sessions$/,
    adminOnly: true,
    async handle(ctx) {
      const q = ctx.query;
      await ctx.audit.flush();
      const sessions = await listSessions(ctx.store, { since: isoParam(q, 'since'), sub: q.get('sub') ?? undefined, server: q.get('server') ?? undefined, limit: limitParam(q) });
      return { body: { sessions } };
    },
  },
  {
    method: 'GET',
    path: /^\/admin\/v1\/sessions\/([^/]{1,200})$/,
    adminOnly: true,
    async handle(ctx, [id]) {
      const messages = await ctx.store.readRecording(id);
      if (!messages.length) throw new AdminError(404, 'not_found', `no recording of session ${id}`);
      return {
        body: {
          id,
          server: messages[0].server,
          sub: messages[0].sub,
          messages: messages.map((m) => ({ ts: new Date(m.ts).toISOString(), direction: m.direction, method: m.method, decision: m.decision && JSON.parse(m.decision), truncatedFrom: m.truncatedFrom, message: m.truncatedFrom === null ? JSON.parse(m.body) : m.body })),
        },
        audit: { sessionId: id },
      };
    },
  },
];

export function adminRoutes(): { match(method: string, path: string): (Route & { params: string[] }) | undefined } {
  return {
    match(method, path) {
      let known = false;
      for (const r of routes) {
        const m = r.path.exec(path);
        if (!m) continue;
        known = true;
        if (r.method !== method) continue;
        try {
          return { ...r, params: m.slice(1).map(decodeURIComponent) };
        } catch {
          throw new AdminError(400, 'bad_request', 'malformed percent-encoding in the path');
        }
      }
      if (known) throw new AdminError(405, 'method_not_allowed', `${method} is not allowed on ${path}`);
      return undefined;
    },
  };
}

