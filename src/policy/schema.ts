// The schema of a policy document and of a policy test file (SPEC section 3). Every object is
// strict: a misspelt key in a security policy must be a load error, never a silently ignored
// rule. The JSON Schema in schema/policy.schema.json is generated from here (see
// policyJsonSchema and the test that checks the committed file is up to date).
import { z } from 'zod';
import { parsePath } from '../masking/jsonpath.js';
import { compileCel } from './cel.js';
import { compileRe2, type Pattern } from './re2.js';

/** Document and rule names appear in decisions as "<document>/<rule>": no "/" inside. */
const name = z
  .string()
  .min(1, 'must not be empty')
  .refine((s) => !s.includes('/'), 'must not contain "/" (decisions name rules as "<document>/<rule>")');

const nonEmptyList = <T extends z.ZodType>(item: T) => z.array(item).min(1, 'list at least one entry, or leave the field out');
const oneOrMany = z.union([z.string().min(1), nonEmptyList(z.string().min(1))]);
const claimValue = z.union([z.string(), z.number(), z.boolean()]);

export const who = z
  .strictObject({
    sub: oneOrMany.optional().describe('the caller\'s subject must be one of these (exact)'),
    groups: oneOrMany.optional().describe('the caller must be in at least one of these groups (exact)'),
    claims: z
      .record(z.string(), z.union([claimValue, nonEmptyList(claimValue)]))
      .optional()
      .describe('every listed claim must equal the value (or one of the values); array claims need one element in common'),
  })
  .describe('who the rule is for; absent means everyone. All given fields must hold.');

const globList = (what: string) => nonEmptyList(z.string().min(1)).describe(what);

export const BUILTIN_DETECTORS = [
  'email', 'phone', 'credit_card', 'iban', 'us_ssn', 'ipv4', 'ipv6', 'jwt',
  'private_key', 'aws_access_key', 'github_token', 'slack_token', 'secrets',
] as const;

export const rule = z.strictObject({
  name,
  description: z.string().optional(),
  effect: z.enum(['allow', 'deny', 'approve']),
  who: who.optional(),
  tools: globList('tool name globs ("*" matches any run of characters); the rule governs tools/call').optional(),
  resources: globList('resource URI globs ("*" within one path segment, "**" across segments); governs resources/read, subscribe, unsubscribe').optional(),
  prompts: globList('prompt name globs; governs prompts/get').optional(),
  methods: globList('JSON-RPC method globs, for client requests other than tools/call, resources/* and prompts/get').optional(),
  serverRequests: globList('method globs of requests the server sends to the client (sampling/createMessage, elicitation/create, roots/list, tasks/*): the rule governs whether the gateway passes them on').optional(),
  when: z
    .string()
    .min(1)
    .superRefine((source, ctx) => {
      // Compiled here so that CEL errors are reported together with every other schema error.
      for (const p of compileCel(source).problems) {
        const regex = p.message.startsWith('invalid regular expression');
        ctx.addIssue({ code: 'custom', message: `${regex ? '' : 'CEL: '}${p.message}${p.column ? ` (column ${p.column})` : ''}` });
      }
    })
    .optional()
    .describe('CEL expression that must evaluate to true'),
  message: z.string().optional().describe('shown to the caller when this rule denies'),
  approvers: z
    .strictObject({ sub: oneOrMany.optional(), groups: oneOrMany.optional() })
    .optional()
    .describe('for effect approve: who may approve'),
});

const strategy = z.enum(['redact', 'hash', 'partial']).describe('redact: [REDACTED:<kind>]; hash: <kind>_<12 hex of HMAC-SHA256> (masking.hashKey); partial: keeps the last 4 characters');

/** A linear-time (RE2) pattern that compiles and does not match the empty string. */
const re2Pattern = z
  .string()
  .min(1)
  .superRefine((pattern, ctx) => {
    let re: Pattern;
    try {
      re = compileRe2(pattern);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return;
    }
    if (re.test('')) ctx.addIssue({ code: 'custom', message: 'pattern matches the empty string, so it would mask nothing useful' });
  });

export const mask = z.strictObject({
  name,
  description: z.string().optional(),
  who: who.optional().describe('whose results this mask applies to; absent means everyone'),
  exempt: who.optional().describe('identities this mask does not apply to (e.g. auditors)'),
  tools: globList('tool name globs whose results are masked').optional(),
  resources: globList('resource URI globs whose contents are masked').optional(),
  prompts: globList('prompt name globs whose messages are masked').optional(),
  detectors: nonEmptyList(
    z.union([z.enum(BUILTIN_DETECTORS), z.strictObject({ name: z.enum(BUILTIN_DETECTORS), strategy })]),
  )
    .optional()
    .describe('built-in detectors; an entry {name, strategy} overrides the mask\'s strategy for that detector'),
  custom: nonEmptyList(
    z.strictObject({
      name: z.string().regex(/^[a-z][a-z0-9_]*$/, 'use lowercase letters, digits and "_" (it appears as [REDACTED:<name>])'),
      pattern: re2Pattern.describe('RE2 regular expression (linear time: no backreferences or lookaround)'),
      validator: z.enum(['luhn', 'mod97', 'us_ssn']).optional().describe('a match is masked only when it passes this check'),
      strategy: strategy.optional(),
    }),
  ).optional(),
  fields: nonEmptyList(
    z
      .string()
      .regex(/^\$/, 'a JSONPath starts with "$"')
      .superRefine((path, ctx) => {
        try {
          parsePath(path);
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: `JSONPath: ${(e as Error).message}` });
        }
      }),
  )
    .optional()
    .describe('JSONPath ($, .name, [\'name\'], [*], .*, [n], ..name) into structuredContent, JSON text content and JSON resource contents'),
  strategy: strategy.default('redact'),
  blobs: z.enum(['keep', 'drop']).default('keep').describe('drop: binary resource contents are replaced by [REDACTED:blob]'),
});

export const policyDocument = z.strictObject({
  apiVersion: z.literal('portcullis/v1'),
  kind: z.literal('Policy'),
  metadata: z.strictObject({
    name,
    description: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
  }),
  server: z.string().min(1).describe('a server name, a glob ("*" matches any run of characters) or "*"'),
  default: z.enum(['allow', 'deny']).default('deny'),
  rules: z.array(rule).default([]),
  masks: z.array(mask).default([]),
});

export type PolicyDocument = z.output<typeof policyDocument>;
export type RuleSpec = z.output<typeof rule>;
export type MaskSpec = z.output<typeof mask>;
export type WhoSpec = z.output<typeof who>;

const testCase = z
  .strictObject({
    name: z.string().min(1),
    identity: z
      .strictObject({
        sub: z.string().default('test-user'),
        groups: z.array(z.string()).default([]),
        claims: z.record(z.string(), z.unknown()).default({}),
      })
      .prefault({}),
    server: z.string().min(1),
    method: z.string().min(1).optional(),
    tool: z.string().optional(),
    resource: z.string().optional(),
    prompt: z.string().optional(),
    serverRequest: z.string().min(1).optional().describe('a request the upstream server sends to the client, e.g. sampling/createMessage (args: its params)'),
    args: z.record(z.string(), z.unknown()).optional(),
    time: z.iso.datetime({ offset: true }).optional().describe('the request time (ISO 8601); now when absent'),
    expect: z.enum(['allow', 'deny', 'approve']).optional(),
    rule: z.string().min(1).optional().describe('the rule expected to decide: "<document>/<rule>" or just "<rule>"'),
    result: z.unknown().optional().describe('what the upstream returns (a tools/call, resources/read or prompts/get result)'),
    expectResult: z.unknown().optional().describe('what the client must see after masking'),
  })
  .superRefine((t, ctx) => {
    const targets = [t.tool, t.resource, t.prompt, t.serverRequest].filter((x) => x !== undefined).length;
    if (targets > 1) ctx.addIssue({ code: 'custom', message: 'give at most one of tool, resource, prompt and serverRequest' });
    if (targets === 0 && t.method === undefined) ctx.addIssue({ code: 'custom', message: 'give a tool, a resource, a prompt, a method or a serverRequest' });
    if (t.serverRequest !== undefined && t.method !== undefined) ctx.addIssue({ code: 'custom', path: ['method'], message: 'a serverRequest is its own method: leave method out' });
    if (t.expect === undefined && t.expectResult === undefined) ctx.addIssue({ code: 'custom', path: ['expect'], message: 'expect (allow | deny | approve) is required' });
    if ((t.result === undefined) !== (t.expectResult === undefined)) ctx.addIssue({ code: 'custom', path: [t.result === undefined ? 'result' : 'expectResult'], message: 'result and expectResult go together' });
    if (t.result !== undefined && t.tool === undefined && t.resource === undefined && t.prompt === undefined) ctx.addIssue({ code: 'custom', path: ['result'], message: 'a result test needs a tool, a resource or a prompt' });
  });

export const policyTestFile = z.strictObject({ tests: z.array(testCase).min(1, 'a test file needs at least one test') });
export type PolicyTestCase = z.output<typeof testCase>;

/** The JSON Schema (draft 2020-12) of a policy document, for editors. */
export function policyJsonSchema(): Record<string, unknown> {
  return {
    $id: 'https://portcullis.dev/schema/policy.schema.json',
    title: 'Portcullis policy document',
    ...z.toJSONSchema(policyDocument, { io: 'input' }),
  };
}

/** The JSON Schema of a policy test file (*.test.yaml). */
export function policyTestJsonSchema(): Record<string, unknown> {
  return {
    $id: 'https://portcullis.dev/schema/policy-test.schema.json',
    title: 'Portcullis policy tests',
    ...z.toJSONSchema(policyTestFile, { io: 'input', unrepresentable: 'any' }),
  };
}
