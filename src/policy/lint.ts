// Lint: everything the compiler rejects (errors), plus what loads but is probably wrong
// (warnings). A bundle with no errors always loads: lint runs the gateway's own compiler.
import { compileWithProblems, readPolicyFiles, type CompiledBundle, type CompiledRule, type CompileOptions, type Kind, type Selectable } from './compile.js';
import { globCovers, globsOverlap, hasWildcard } from './glob.js';
import type { WhoSpec } from './schema.js';

export type Level = 'error' | 'warning';

export interface Finding {
  ruleId: string;
  level: Level;
  file: string;
  line: number;
  field?: string;
  message: string;
}

export const LINT_RULES: Record<string, { level: Level; description: string }> = {
  'yaml-syntax': { level: 'error', description: 'The file is not valid YAML or JSON.' },
  schema: { level: 'error', description: 'A field is unknown, missing or of the wrong type.' },
  cel: { level: 'error', description: 'A when expression does not compile or type-check.' },
  regex: { level: 'error', description: 'A regular expression would not compile.' },
  'duplicate-name': { level: 'error', description: 'Two policies, rules or masks share a name.' },
  'server-name': { level: 'error', description: 'The server field is not a server name or glob.' },
  'no-policy': { level: 'error', description: 'The path holds no policy document.' },
  'shadowed-rule': { level: 'warning', description: 'An earlier or stronger rule without when matches every request this rule does, so it never decides.' },
  'allow-all': { level: 'warning', description: 'An allow rule for every identity on every tool, resource, prompt or method.' },
  'uri-matches-nothing': { level: 'warning', description: 'A resources pattern that cannot match a URI with a scheme and a path ("*" stays within one segment; a URI needs "scheme:").' },
  'approve-without-approvers': { level: 'warning', description: 'An approve rule names no approvers, so nobody can approve.' },
  'approvers-ignored': { level: 'warning', description: 'approvers on a rule whose effect is not approve.' },
  'methods-governed-elsewhere': { level: 'warning', description: 'methods: lists a method that tools, resources or prompts govern.' },
  'mask-matches-nothing': { level: 'warning', description: 'A mask that can never mask anything.' },
  'unknown-server': { level: 'warning', description: 'The server is not in the configuration.' },
};

export interface LintOptions extends CompileOptions {
  /** The configured server names; enables the unknown-server check. */
  servers?: string[];
  /** Shown for findings that concern no particular file. */
  path?: string;
}

/** Per kind, which patterns select every name, and what allowing them lets a caller do. */
const EVERY: Record<Selectable, { all: (p: string) => boolean; says: string }> = {
  tool: { all: (p) => /^\*+$/.test(p), says: 'call every tool' },
  // A single "*" does not cross "/", so only "**" selects every URI (and "*" is flagged below).
  resource: { all: (p) => /^\*\*+$/.test(p), says: 'read every resource' },
  prompt: { all: (p) => /^\*+$/.test(p), says: 'get every prompt' },
  method: { all: (p) => /^\*+$/.test(p), says: 'use every other method' },
  serverRequest: { all: (p) => /^\*+$/.test(p), says: 'be sent every request the server makes (sampling, elicitation, roots)' },
};

const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
const SCHEME_START = /^(?:[A-Za-z][A-Za-z0-9+.-]*)?$/;

/**
 * Why a resource URI glob cannot match any URI of the form `scheme:…/…` (what MCP servers use),
 * or undefined when it can. The literal before the first "*" must be able to start such a URI,
 * and in a glob a "/" must be able to appear: spelt out, or produced by "**" ("*" never is).
 */
export function uriPatternProblem(pattern: string): string | undefined {
  const star = pattern.indexOf('*');
  const head = star < 0 ? pattern : pattern.slice(0, star);
  const colon = head.indexOf(':');
  const schemeOk = colon >= 0 ? SCHEME.test(head.slice(0, colon)) : star >= 0 && SCHEME_START.test(head);
  if (!schemeOk) return 'cannot match a URI: it does not start with a scheme ("file:///srv/**", not "/srv/**")';
  const slashAfterScheme = colon >= 0 ? pattern.slice(colon).includes('/') : pattern.includes('/');
  // A URI spelt out without "/" (urn:…) is meant; a glob without one is the trap.
  if (star >= 0 && !slashAfterScheme && !/\*\*/.test(pattern)) return 'cannot match a URI with a path: "*" matches within one path segment, never "/"; use "**" to match across segments';
  return undefined;
}

const GOVERNED = new Set(['tools/call', 'resources/read', 'resources/subscribe', 'resources/unsubscribe', 'prompts/get', 'completion/complete']);
const RANK = { deny: 0, approve: 1, allow: 2 } as const;
const asList = (v: string | string[] | undefined) => (v === undefined ? undefined : typeof v === 'string' ? [v] : v);
const subset = (inner: readonly unknown[] | undefined, outer: readonly unknown[]) => inner !== undefined && inner.every((x) => outer.includes(x));

/** Whether every identity that `r` admits is admitted by `e`. */
function whoCovers(e: CompiledRule, r: CompiledRule): boolean {
  return whoSpecCovers(e.spec.who, r.spec.who);
}

/** Whether every identity `rw` admits is admitted by `ew` (absent: everyone). */
function whoSpecCovers(ew: WhoSpec | undefined, rw: WhoSpec | undefined): boolean {
  if (!ew) return true;
  if (!rw) return false;
  if (ew.sub !== undefined && !subset(asList(rw.sub), asList(ew.sub)!)) return false;
  if (ew.groups !== undefined && !subset(asList(rw.groups), asList(ew.groups)!)) return false;
  for (const [k, v] of Object.entries(ew.claims ?? {})) {
    const rv = rw.claims?.[k];
    if (rv === undefined || !subset(Array.isArray(rv) ? rv : [rv], Array.isArray(v) ? v : [v])) return false;
  }
  return true;
}

/** Whether `e` selects every name `r` selects. */
function selectorCovers(e: CompiledRule, r: CompiledRule): boolean {
  if (r.anyKind) return e.anyKind;
  for (const kind of ['tool', 'resource', 'prompt', 'method', 'serverRequest'] as const) {
    const rs = r.selectors[kind];
    if (!rs) continue;
    if (e.anyKind && kind !== 'method' && kind !== 'serverRequest') continue;
    const es = e.selectors[kind];
    if (!es || !rs.patterns.every((p) => es.patterns.some((o) => globCovers(o, p, kind === 'resource')))) return false;
  }
  return true;
}

function semanticFindings(bundle: CompiledBundle, options: LintOptions): Finding[] {
  const findings: Finding[] = [];
  const add = (ruleId: string, file: string, line: number | undefined, message: string, field?: string) =>
    findings.push({ ruleId, level: LINT_RULES[ruleId].level, file, line: line ?? 1, field, message });
  const rules = bundle.documents.flatMap((d) => d.rules);

  for (const r of rules) {
    const where = `rules.${r.document.rules.indexOf(r)}`;
    const at = (msg: string, id: string) => add(id, r.file, r.line, `${r.id}: ${msg}`, where);
    if (r.effect === 'allow' && !r.spec.who) {
      const every = r.anyKind ? ['call every tool', 'read every resource', 'get every prompt'] : (Object.keys(EVERY) as Selectable[]).filter((k) => r.selectors[k]?.patterns.some(EVERY[k].all)).map((k) => EVERY[k].says);
      if (every.length) at(`allows every identity to ${every.join(', ')}${r.when ? ' (only limited by its when)' : ''}; name them or add who`, 'allow-all');
    }
    r.selectors.resource?.patterns.forEach((p, j) => {
      const why = uriPatternProblem(p);
      if (why) add('uri-matches-nothing', r.file, r.lineOf(['resources', j]) ?? r.line, `${r.id}: ${JSON.stringify(p)} ${why}`, `${where}.resources.${j}`);
    });
    if (r.effect === 'approve' && !r.approvers?.sub?.length && !r.approvers?.groups?.length) at('approve rule without approvers: nobody could approve, so every request would wait and expire', 'approve-without-approvers');
    if (r.effect !== 'approve' && r.spec.approvers) at(`approvers are ignored on an ${r.effect} rule`, 'approvers-ignored');
    for (const m of r.spec.methods ?? []) if (GOVERNED.has(m)) at(`methods: does not govern ${m}; use tools, resources or prompts`, 'methods-governed-elsewhere');

    // The strongest shadowing rule is named: "deny beats allow" says more than "comes first".
    const [shadow] = rules.filter(
      (e) =>
        e !== r &&
        !e.when &&
        (RANK[e.effect] < RANK[r.effect] || (e.effect === r.effect && e.order < r.order)) &&
        (e.document.server === r.document.server || globCovers(e.document.server, r.document.server, false)) &&
        whoCovers(e, r) &&
        selectorCovers(e, r),
    ).sort((a, b) => RANK[a.effect] - RANK[b.effect] || a.order - b.order);
    if (shadow) {
      const why = shadow.effect === r.effect ? 'comes first' : `${shadow.effect} beats ${r.effect}`;
      at(`never decides: ${shadow.id} (${shadow.file}:${shadow.line}) has no when, matches every request this rule matches, and ${why}`, 'shadowed-rule');
    }
  }

  for (const d of bundle.documents) {
    d.masks.forEach((m, i) => {
      const field = `masks.${i}`;
      m.selectors.resource?.patterns.forEach((p, j) => {
        const why = uriPatternProblem(p);
        if (why) add('uri-matches-nothing', m.file, m.lineOf(['resources', j]) ?? m.line, `${m.id}: ${JSON.stringify(p)} ${why}`, `${field}.resources.${j}`);
      });
      const at = (msg: string) => add('mask-matches-nothing', m.file, m.line, `${m.id}: ${msg}`, field);
      if (!m.spec.detectors && !m.spec.custom && !m.spec.fields && m.spec.blobs !== 'drop') return at('no detectors, custom detectors or fields: it masks nothing');
      if (m.spec.exempt && whoSpecCovers(m.spec.exempt, m.spec.who)) return at('exempt covers every identity its who admits, so it applies to nobody');
      // A mask on tools (resources, prompts) that no allow or approve rule of a covering policy can reach.
      const related = bundle.documents.filter((o) => globsOverlap(o.server, d.server, false));
      if (related.some((o) => o.default === 'allow')) return;
      const usable = related.flatMap((o) => o.rules).filter((r) => r.effect !== 'deny');
      if (usable.some((r) => r.anyKind)) return;
      const selectsAny = m.selectors.tool || m.selectors.resource || m.selectors.prompt;
      if (!selectsAny && !usable.some((r) => r.selectors.tool || r.selectors.resource || r.selectors.prompt)) {
        return at(`no allow or approve rule for server "${d.server}" lets any tool, resource or prompt through, so it never applies`);
      }
      for (const kind of ['tool', 'resource', 'prompt'] as Kind[]) {
        const s = m.selectors[kind];
        if (!s) continue;
        const reachable = s.patterns.some((p) => usable.some((r) => r.selectors[kind]?.patterns.some((q) => globsOverlap(p, q, kind === 'resource'))));
        if (!reachable) at(`no allow or approve rule for server "${d.server}" reaches its ${kind}s ${JSON.stringify(s.patterns)}, so it never applies`);
      }
    });
  }

  if (options.servers) {
    const servers = options.servers;
    for (const d of bundle.documents) {
      const known = hasWildcard(d.server) ? servers.some((s) => d.matchesServer(s)) : servers.includes(d.server);
      if (!known) {
        add('unknown-server', d.file, d.line, `policy ${d.name}: server "${d.server}" ${hasWildcard(d.server) ? 'matches no' : 'is not a'} configured server (${servers.join(', ') || 'none'})`, 'server');
      }
    }
  }
  return findings;
}

/** Lints policy files (name → text). */
export function lintFiles(files: Record<string, string>, options: LintOptions = {}): Finding[] {
  const { bundle, problems } = compileWithProblems(files, options);
  const findings: Finding[] = problems.map((p) => ({
    ruleId: p.check,
    level: LINT_RULES[p.check].level,
    file: p.file ?? options.path ?? '.',
    line: p.line ?? 1,
    field: p.field,
    message: p.message,
  }));
  if (bundle) findings.push(...semanticFindings(bundle, options));
  return findings.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line));
}

/** Lints a policy file or folder. Throws PortcullisError when the path cannot be read. */
export function lintPath(path: string, options: Omit<LintOptions, 'displayName' | 'path'> = {}): Finding[] {
  const { files, displayName } = readPolicyFiles(path);
  return lintFiles(files, { ...options, displayName, path });
}

export function formatText(findings: Finding[]): string {
  const errors = findings.filter((f) => f.level === 'error').length;
  const lines = findings.map((f) => `${f.file}:${f.line}: ${f.level} [${f.ruleId}] ${f.field ? `${f.field}: ` : ''}${f.message}`);
  lines.push(`${errors} error${errors === 1 ? '' : 's'}, ${findings.length - errors} warning${findings.length - errors === 1 ? '' : 's'}`);
  return lines.join('\n') + '\n';
}

export function formatJson(findings: Finding[]): string {
  const errors = findings.filter((f) => f.level === 'error').length;
  return JSON.stringify({ findings, errors, warnings: findings.length - errors }, null, 2) + '\n';
}

/** SARIF 2.1.0, for code scanning in CI. */
export function formatSarif(findings: Finding[], version = '0.1.0'): string {
  const ids = Object.keys(LINT_RULES);
  const sarif = {
    $schema: 'https://json.schemastore.org/sarif-2.1.0.json',
    version: '2.1.0',
    runs: [
      {
        tool: {
          driver: {
            name: 'portcullis',
            version,
            informationUri: 'https://github.com/portcullis/portcullis/blob/main/docs/policy.md',
            rules: ids.map((id) => ({
              id,
              name: id.replace(/(^|-)([a-z])/g, (_m, _d, c: string) => c.toUpperCase()),
              shortDescription: { text: LINT_RULES[id].description },
              defaultConfiguration: { level: LINT_RULES[id].level },
              helpUri: 'https://github.com/portcullis/portcullis/blob/main/docs/policy.md#lint',
            })),
          },
        },
        results: findings.map((f) => ({
          ruleId: f.ruleId,
          ruleIndex: ids.indexOf(f.ruleId),
          level: f.level,
          message: { text: f.field ? `${f.field}: ${f.message}` : f.message },
          locations: [
            {
              physicalLocation: {
                artifactLocation: { uri: f.file.split('\\').join('/') },
                region: { startLine: Math.max(1, f.line) },
              },
            },
          ],
        })),
      },
    ],
  };
  return JSON.stringify(sarif, null, 2) + '\n';
}
