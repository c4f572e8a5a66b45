// The schema of portcullis.yaml (SPEC section 2). Every object is strict: an unknown key is an
// error, since a misspelt security setting silently ignored is worse than a refusal to start.
import { z } from 'zod';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "250ms", "30s", "5m", "1h", "7d" (or a bare number of milliseconds) into milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]]);
}

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (use e.g. 500ms, 30s, 5m, 1h)` });
    return z.NEVER;
  }
  return ms;
});

const positiveInt = z.number().int().positive();
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'must be the SHA-256 of the key, as 64 lowercase hex digits');
/** Server names appear in URLs (/mcp/<name>) and in policy: keep them to a safe alphabet. */
export const SERVER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const listen = z.strictObject({
  host: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(8080),
  allowedOrigins: z.array(z.string()).default([]),
  allowedHosts: z.array(z.string()).default([]),
});

const limits = z.strictObject({
  maxBodyBytes: positiveInt.default(4 * 1024 * 1024),
  maxHeaderBytes: positiveInt.default(16 * 1024),
  maxDepth: positiveInt.default(128),
  maxResultBytes: positiveInt.default(16 * 1024 * 1024),
  requestTimeout: duration.default(30_000),
  upstreamTimeout: duration.default(60_000),
  sessionIdleTimeout: duration.default(30 * 60_000),
  maxSessions: positiveInt.default(1000),
  /** Sessions one credential (identityKey) may hold at once, so one caller cannot take all of maxSessions. */
  maxSessionsPerIdentity: positiveInt.default(100),
});

/**
 * Which MCP era the upstream speaks: `auto` asks it once (server/discover, SEP-2575) and keeps the
 * answer; `2025` (initialize, sessions) or `2026` (2026-07-28, stateless) pin it.
 */
const era = z.enum(['auto', '2025', '2026']).default('auto');

const stdioServer = z
  .strictObject({
    transport: z.literal('stdio'),
    era,
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    env: z.record(z.string(), z.string()).default({}),
    cwd: z.string().optional(),
    /**
     * `none`: each session gets its own process (isolation, the default). `credential`: the
     * sessions of one credential share one process (src/upstreams/shared.ts).
     */
    share: z.enum(['none', 'credential']).default('none'),
    /** share: credential: how long a process whose last session ended is kept for the credential's next one (0: ended at once; default SHARE_IDLE_MS). */
    shareIdle: duration.optional(),
  })
  .refine((s) => s.shareIdle === undefined || s.share === 'credential', { message: 'shareIdle applies only with share: credential', path: ['shareIdle'] });

/** How long a shared stdio process is kept after its last session when shareIdle is not set. */
export const SHARE_IDLE_MS = 30_000;

/** Credentials in "user:pass@" would travel wherever a URL does (logs, errors); headers carry them instead. */
const upstreamUrl = z.url({ protocol: /^https?$/ }).refine((u) => {
  const url = new URL(u);
  return url.username === '' && url.password === '';
}, 'credentials in the URL ("user:pass@") are not accepted: put them in headers, e.g. headers: { Authorization: "Basic ${env:CRM_BASIC}" } or { Authorization: "Bearer ${env:CRM_TOKEN}" }');

const httpServer = z
  .strictObject({
    transport: z.enum(['http', 'sse']),
    era,
    url: upstreamUrl,
    headers: z.record(z.string(), z.string()).default({}),
  })
  .refine((s) => s.transport !== 'sse' || s.era !== '2026', { message: 'the legacy HTTP+SSE transport is 2024-11-05: era 2026 needs transport: http', path: ['era'] });

export const serverSchema = z.discriminatedUnion('transport', [stdioServer, httpServer]);

const apiKey = z.strictObject({
  id: z.string().min(1),
  sha256: sha256Hex,
  sub: z.string().min(1).optional(),
  groups: z.array(z.string()).default([]),
});

const auth = z.strictObject({
  oidc: z
    .strictObject({
      issuer: z.url(),
      audience: z.union([z.string(), z.array(z.string())]),
      groupsClaim: z.string().default('groups'),
      clockSkew: duration.default(30_000),
      jwksUri: z.url().optional(),
      algorithms: z.array(z.string()).optional(),
      /** Scopes advertised as scopes_supported in the protected-resource metadata. */
      scopes: z.array(z.string().min(1)).optional(),
    })
    .optional(),
  apiKeys: z.array(apiKey).default([]),
  anonymous: z.boolean().default(false),
  /** The public URL of this gateway, for protected-resource metadata behind a proxy. */
  resourceUrl: z.url().optional(),
});

const policy = z.union([
  z.strictObject({ source: z.literal('folder').default('folder'), path: z.string().min(1), watch: z.boolean().default(true) }),
  z.strictObject({ source: z.literal('store') }),
]);

const store = z.strictObject({
  url: z.string().regex(/^(sqlite:|postgres:\/\/|postgresql:\/\/)/, 'must start with sqlite: or postgres://').default('sqlite:./data/portcullis.db'),
});

/** The admin API runs when this section is present (SPEC 7), on its own listener. */
const admin = z
  .strictObject({
    listen: z
      .strictObject({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8081),
        allowedOrigins: z.array(z.string()).default([]),
        allowedHosts: z.array(z.string()).default([]),
      })
      .prefault({}),
    tokens: z.array(z.strictObject({ id: z.string().min(1), sha256: sha256Hex })).default([]),
    /** Identities (OIDC, API keys) in one of these groups are admins. */
    groups: z.array(z.string()).default([]),
  })
  .refine((a) => a.tokens.length > 0 || a.groups.length > 0, 'the admin API needs a way in: add tokens (id, sha256) or groups');

const approvals = z.strictObject({
  timeout: duration.default(5 * 60_000),
  webhooks: z
    .array(
      z.strictObject({
        url: z.url({ protocol: /^https?$/ }),
        headers: z.record(z.string(), z.string()).default({}),
        /** Signs each delivery (X-Portcullis-Signature: HMAC-SHA256); receivers verify with the same secret. */
        secret: z.string().min(16, 'use at least 16 characters').optional(),
      }),
    )
    .default([]),
});

const audit = z.strictObject({
  signingKey: z.string().optional(),
  checkpointEvery: positiveInt.default(1000),
  /** Where serve commits: on a thread of its own (thread) or on the event loop (loop); see docs/audit.md. */
  writer: z.enum(['thread', 'loop']).default('thread'),
  recordings: z
    .strictObject({
      enabled: z.boolean().default(true),
      retention: duration.default(30 * 86_400_000),
      maxMessageBytes: positiveInt.default(256 * 1024),
      /** Open sessions' recordings are sealed into the audit chain at least this often. */
      sealInterval: duration.default(30_000),
    })
    .prefault({}),
});

/** Scrapers of /metrics: with tokens listed, only `Authorization: Bearer <token>` with a listed SHA-256 reads them. */
const metrics = z.strictObject({
  tokens: z
    .array(z.strictObject({ id: z.string().min(1), sha256: sha256Hex }))
    .refine((ts) => new Set(ts.map((t) => t.sha256)).size === ts.length, 'two tokens have the same sha256: each token must be distinct')
    .default([]),
});

const masking = z.strictObject({
  /** HMAC key of the hash strategy: stable within a deployment, unlinkable across deployments. */
  hashKey: z.string().min(32, 'use at least 32 characters (e.g. ${file:./keys/masking.key} with 32 random bytes, hex)').optional(),
});

const logging = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export const configSchema = z.strictObject({
  listen: listen.prefault({}),
  limits: limits.prefault({}),
  servers: z.record(z.string().regex(SERVER_NAME, 'server names use letters, digits, "_", "." and "-"'), serverSchema).refine(
    (s) => Object.keys(s).length > 0,
    'at least one server is required',
  ),
  auth: auth.prefault({}),
  policy: policy.optional(),
  store: store.prefault({}),
  admin: admin.optional(),
  approvals: approvals.prefault({}),
  audit: audit.prefault({}),
  metrics: metrics.prefault({}),
  masking: masking.prefault({}),
  logging: logging.prefault({}),
});

export type Config = z.output<typeof configSchema>;
export type ServerConfig = z.output<typeof serverSchema>;
export type Limits = Config['limits'];
export type AuthConfig = Config['auth'];
export type AuditConfig = Config['audit'];
