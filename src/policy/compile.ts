// Compiles policy files into a bundle: validates every document (reporting every problem with
// file, line and field), compiles globs and CEL once, and indexes rules so that a decision is a
// few lookups. The same compiler serves the gateway, lint, test and explain.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { lineOf, yamlErrorAt, zodProblems } from '../config/load.js';
import { PortcullisError, type Problem } from '../errors.js';
import type { Identity } from '../auth/identity.js';
import type { Effect } from './decision.js';
import { compileCel, type CompiledCel } from './cel.js';
import { compileNameGlob, compileUriGlob, hasWildcard, type Matcher } from './glob.js';
import { BUILTIN, customDetector, SECRET_KINDS } from '../masking/detectors.js';
import { parsePath } from '../masking/jsonpath.js';
import type { MaskRules } from '../masking/mask.js';
import { policyDocument, type MaskSpec, type PolicyDocument, type RuleSpec, type WhoSpec } from './schema.js';

/** What a policy problem is about; lint reports it as the finding's rule id. */
export type ProblemCheck = 'yaml-syntax' | 'schema' | 'cel' | 'regex' | 'duplicate-name' | 'server-name' | 'no-policy';
export interface PolicyProblem extends Problem {
  check: ProblemCheck;
}

export type Kind = 'tool' | 'resource' | 'prompt';
export const KINDS: readonly Kind[] = ['tool', 'resource', 'prompt'];
/** The rule field that names each kind. */
export const SELECTOR = { tool: 'tools', resource: 'resources', prompt: 'prompts' } as const;
/** What a rule's selector can name: a tool, resource or prompt; another client method (`methods`); a server's request (`serverRequests`). */
export type Selectable = Kind | 'method' | 'serverRequest';

export interface Selector {
  patterns: string[];
  matchers: Matcher[];
}

export interface CompiledRule {
  /** "<document>/<rule>", the name decisions carry. */
  id: string;
  name: string;
  effect: Effect;
  /** Position in the bundle (documents in file order, then rules in order): ties go to the first. */
  order: number;
  document: CompiledDocument;
  spec: RuleSpec;
  file: string;
  line?: number;
  whenLine?: number;
  /** The line of a field inside the rule (e.g. ["resources", 2]), for findings. */
  lineOf: (path: PropertyKey[]) => number | undefined;
  matchesWho: (identity: Identity) => boolean;
  /** Per kind, the name globs; absent when the rule does not name that kind. */
  selectors: Partial<Record<Selectable, Selector>>;
  /** A rule naming none of tools, resources, prompts, methods, serverRequests governs every tool, resource and prompt. */
  anyKind: boolean;
  when?: CompiledCel;
  message?: string;
  approvers?: { sub?: string[]; groups?: string[] };
}

export interface CompiledMask {
  id: string;
  spec: MaskSpec;
  document: CompiledDocument;
  file: string;
  line?: number;
  /** The line of a field inside the mask, for findings. */
  lineOf: (path: PropertyKey[]) => number | undefined;
  selectors: Partial<Record<Kind, Selector>>;
  /** Whether the mask applies to this caller (`who`, less `exempt`). */
  appliesTo: (identity: Identity) => boolean;
  /** Detectors (built-in and custom, on re2js: linear time) and field paths, compiled. */
  rules: MaskRules;
}

export interface CompiledDocument {
  name: string;
  file: string;
  line?: number;
  server: string;
  matchesServer: Matcher;
  default: 'allow' | 'deny';
  rules: CompiledRule[];
  masks: CompiledMask[];
  spec: PolicyDocument;
}

/**
 * The rules that can apply to one name of one kind, deny first, then approve, then allow, each in
 * bundle order; split by group so that a decision looks only at the rules for the caller's
 * groups (plus those that name no group) instead of every team's rules for that tool.
 */
interface Partition {
  /** Rules whose `who` names no groups. */
  general: CompiledRule[];
  /** Rules whose `who` names groups, under each group they name. */
  byGroup: Map<string, CompiledRule[]>;
}

interface KindIndex {
  byName: Map<string, Partition>;
  /** For names not in byName: glob rules (checked one by one) and any-kind rules. */
  rest: Partition;
}

/** Everything needed to decide for one server: the covering documents merged into one index. */
export interface ServerView {
  documents: CompiledDocument[];
  kinds: Record<Selectable, KindIndex>;
  /** The decision when no rule matches (tools, resources, prompts): deny wins over allow. */
  fallback: { effect: 'allow' | 'deny'; rule: string };
}

export interface CompiledBundle {
  /** SHA-256 (hex) of the canonical content: see bundleVersion. */
  version: string;
  /** The files it was compiled from, by name. */
  files: Record<string, string>;
  documents: CompiledDocument[];
  /** Internal: resolves a server to its merged index (cached). */
  view(server: string): ServerView;
}

export interface CompileOptions {
  /** How a file name is shown in problems (e.g. the path on disk). */
  displayName?: (name: string) => string;
}

/** Schema refinements report CEL and regex problems; lint tells them apart by their prefix. */
const checkOf = (message: string): ProblemCheck =>
  message.startsWith('CEL: ') ? 'cel' : /^(invalid regular expression|pattern )/.test(message) ? 'regex' : 'schema';

const EFFECT_RANK: Record<Effect, number> = { deny: 0, approve: 1, allow: 2 };
const SERVER_PATTERN = /^[A-Za-z0-9_.*-]{1,64}$/;
const TEST_FILE = /\.test\.ya?ml$/;

export const isTestFile = (name: string) => TEST_FILE.test(name);
export const isPolicyFile = (name: string) => /\.(ya?ml|json)$/.test(name) && !isTestFile(name);

/**
 * The bundle version: SHA-256 (hex) of JSON.stringify of the [name, text] pairs of its policy
 * files, sorted by name (code unit order), with CRLF line ends turned into LF. It does not depend
 * on the order files were given in, nor on where the folder lives (names are relative).
 */
export function bundleVersion(files: Record<string, string>): string {
  const entries = Object.keys(files)
    .filter((n) => !isTestFile(n))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((n) => [n, files[n].replace(/\r\n/g, '\n')]);
  return createHash('sha256').update(JSON.stringify(entries)).digest('hex');
}

const list = (v: string | string[] | undefined): string[] | undefined => (v === undefined ? undefined : typeof v === 'string' ? [v] : v);

function compileWho(who: WhoSpec | undefined): (identity: Identity) => boolean {
  if (!who) return () => true;
  const subs = list(who.sub);
  const groups = list(who.groups);
  const sub = subs ? new Set(subs) : undefined;
  const group = groups ? new Set(groups) : undefined;
  const claims = Object.entries(who.claims ?? {}).map(([k, v]) => [k, Array.isArray(v) ? v : [v]] as const);
  return (identity) => {
    if (sub && !sub.has(identity.sub)) return false;
    if (group) {
      const g = identity.groups;
      if (!Array.isArray(g) || !g.some((x) => group.has(x))) return false;
    }
    for (const [key, wanted] of claims) {
      const c = identity.claims;
      if (!c || !Object.hasOwn(c, key)) return false;
      const actual = c[key];
      const ok = Array.isArray(actual) ? actual.some((a) => wanted.includes(a as never)) : wanted.includes(actual as never);
      if (!ok) return false;
    }
    return true;
  };
}

/** Compiles one selector field; a pattern that does not compile is a problem at its own line, never a throw. */
function selector(patterns: string[] | undefined, uri: boolean, report: (index: number, message: string) => void): Selector | undefined {
  if (!patterns) return undefined;
  const matchers = patterns.map((p, j) => {
    try {
      return uri ? compileUriGlob(p) : compileNameGlob(p);
    } catch (e) {
      report(j, `glob ${JSON.stringify(p)} does not compile: ${(e as Error).message}`);
      return () => false;
    }
  });
  return { patterns, matchers };
}

interface ParsedFile {
  name: string;
  shown: string;
  docs: { doc: Document; lines: LineCounter }[];
}

function parseFile(name: string, shown: string, text: string, problems: PolicyProblem[]): ParsedFile {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const out: ParsedFile = { name, shown, docs: [] };
  if (!Array.isArray(docs)) return out; // an empty stream: nothing in this file
  for (const doc of docs) {
    if (doc.errors.length) {
      for (const e of doc.errors) problems.push({ check: 'yaml-syntax', file: shown, ...yamlErrorAt(e, lines) });
      continue;
    }
    if (doc.contents === null) continue; // e.g. a trailing "---"
    out.docs.push({ doc, lines });
  }
  return out;
}

/**
 * Compiles policy files (name → YAML or JSON text; several YAML documents per file allowed;
 * *.test.yaml names are skipped) into a bundle. Throws PortcullisError('PCL_POLICY_INVALID')
 * listing every problem with file, line and field.
 */
export function compileBundle(files: Record<string, string>, options: CompileOptions = {}): CompiledBundle {
  const { bundle, problems } = compileWithProblems(files, options);
  if (!bundle) {
    throw new PortcullisError('PCL_POLICY_INVALID', `the policy bundle has ${problems.length} error${problems.length === 1 ? '' : 's'}; nothing was loaded`, problems);
  }
  return bundle;
}

/** Like compileBundle, but returns the problems (lint uses it). */
export function compileWithProblems(files: Record<string, string>, options: CompileOptions = {}): { bundle?: CompiledBundle; problems: PolicyProblem[] } {
  const show = options.displayName ?? ((n: string) => n);
  const problems: PolicyProblem[] = [];
  const names = Object.keys(files)
    .filter((n) => !isTestFile(n))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const documents: CompiledDocument[] = [];
  const docNames = new Map<string, string>();
  let order = 0;

  for (const name of names) {
    const shown = show(name);
    const parsed = parseFile(name, shown, files[name], problems);
    for (const [k, { doc, lines }] of parsed.docs.entries()) {
      const result = policyDocument.safeParse(doc.toJS());
      if (!result.success) {
        problems.push(...zodProblems(result.error, shown, doc, lines, policyDocument).map((p) => ({ ...p, check: checkOf(p.message) })));
        continue;
      }
      const spec = result.data;
      // The YAML tree only gives line numbers: this document's serves while it compiles; later
      // (lint's findings) the file's text is parsed again, so that a bundle in force does not
      // keep a tree per document (a third of a 1,000-rule bundle's heap).
      let tree: ParsedFile['docs'][number] | undefined = { doc, lines };
      const at = (path: PropertyKey[]) => {
        tree ??= parseFile(name, shown, files[name], []).docs[k];
        return lineOf(tree.doc, tree.lines, path);
      };
      const problem = (check: ProblemCheck, path: PropertyKey[], message: string) =>
        problems.push({ check, file: shown, line: at(path), field: path.map(String).join('.'), message });

      const docName = spec.metadata.name;
      const seen = docNames.get(docName);
      if (seen) problem('duplicate-name', ['metadata', 'name'], `a policy named "${docName}" is already defined in ${seen}; rule names "<policy>/<rule>" must be unique`);
      else docNames.set(docName, shown);
      if (!SERVER_PATTERN.test(spec.server)) problem('server-name', ['server'], `"${spec.server}" is not a server name or glob (letters, digits, "_", ".", "-" and "*")`);

      const document: CompiledDocument = {
        name: docName,
        file: shown,
        line: at([]),
        server: spec.server,
        matchesServer: compileNameGlob(spec.server),
        default: spec.default,
        rules: [],
        masks: [],
        spec,
      };
      const ruleNames = new Set<string>();
      spec.rules.forEach((r, i) => {
        if (ruleNames.has(r.name)) problem('duplicate-name', ['rules', i, 'name'], `rule "${r.name}" is defined twice in policy "${docName}"`);
        ruleNames.add(r.name);
        // The schema has already reported any problem of this expression (see schema.ts).
        const when = r.when !== undefined ? compileCel(r.when).compiled : undefined;
        const field = (name: string) => (j: number, message: string) => problem('schema', ['rules', i, name, j], message);
        const selectors: CompiledRule['selectors'] = {
          tool: selector(r.tools, false, field('tools')),
          resource: selector(r.resources, true, field('resources')),
          prompt: selector(r.prompts, false, field('prompts')),
          method: selector(r.methods, false, field('methods')),
          serverRequest: selector(r.serverRequests, false, field('serverRequests')),
        };
        document.rules.push({
          id: `${docName}/${r.name}`,
          name: r.name,
          effect: r.effect,
          order: order++,
          document,
          spec: r,
          file: shown,
          line: at(['rules', i]),
          whenLine: r.when !== undefined ? at(['rules', i, 'when']) : undefined,
          lineOf: (path) => at(['rules', i, ...path]),
          matchesWho: compileWho(r.who),
          selectors,
          anyKind: !r.tools && !r.resources && !r.prompts && !r.methods && !r.serverRequests,
          when,
          message: r.message,
          approvers: r.approvers ? JSON.parse(JSON.stringify({ sub: list(r.approvers.sub), groups: list(r.approvers.groups) })) : undefined,
        });
      });
      const maskNames = new Set<string>();
      spec.masks.forEach((m, i) => {
        if (maskNames.has(m.name)) problem('duplicate-name', ['masks', i, 'name'], `mask "${m.name}" is defined twice in policy "${docName}"`);
        maskNames.add(m.name);
        const matchesWho = compileWho(m.who);
        const exempt = m.exempt ? compileWho(m.exempt) : () => false;
        document.masks.push({
          id: `${docName}/${m.name}`,
          spec: m,
          document,
          file: shown,
          line: at(['masks', i]),
          lineOf: (path) => at(['masks', i, ...path]),
          selectors: {
            tool: selector(m.tools, false, (j, msg) => problem('schema', ['masks', i, 'tools', j], msg)),
            resource: selector(m.resources, true, (j, msg) => problem('schema', ['masks', i, 'resources', j], msg)),
            prompt: selector(m.prompts, false, (j, msg) => problem('schema', ['masks', i, 'prompts', j], msg)),
          },
          appliesTo: (identity) => matchesWho(identity) && !exempt(identity),
          rules: compileMaskRules(m), // patterns and paths were checked by the schema
        });
      });
      documents.push(document);
      tree = undefined;
    }
  }
  if (!documents.length && !problems.length) problems.push({ check: 'no-policy', message: 'the bundle has no policy documents (kind: Policy)' });
  if (problems.length) return { problems };
  return { bundle: makeBundle(files, documents), problems };
}

/** A bundle of no documents: it covers no request, so decide() denies everything. */
export function emptyBundle(version: string): CompiledBundle {
  return Object.freeze({ ...makeBundle({}, []), version });
}

function makeBundle(files: Record<string, string>, documents: CompiledDocument[]): CompiledBundle {
  const views = new Map<string, ServerView>();
  const bundle: CompiledBundle = {
    version: bundleVersion(files),
    files: { ...files },
    documents,
    view(server) {
      let v = views.get(server);
      if (v) return v;
      v = buildView(documents.filter((d) => d.matchesServer(server)));
      // Server names come from the gateway's config, so this stays small; the bound is a backstop.
      if (views.size < 10_000) views.set(server, v);
      return v;
    },
  };
  return Object.freeze(bundle);
}

const byPrecedence = (a: CompiledRule, b: CompiledRule) => EFFECT_RANK[a.effect] - EFFECT_RANK[b.effect] || a.order - b.order;

function partition(rules: CompiledRule[]): Partition {
  const sorted = [...rules].sort(byPrecedence);
  const byGroup = new Map<string, CompiledRule[]>();
  const general: CompiledRule[] = [];
  for (const r of sorted) {
    const groups = r.spec.who?.groups;
    if (groups === undefined) general.push(r);
    else for (const g of new Set(typeof groups === 'string' ? [groups] : groups)) (byGroup.get(g) ?? byGroup.set(g, []).get(g)!).push(r);
  }
  return { general, byGroup };
}

/** Any-kind rules govern tools, resources and prompts; methods and server requests only by name. */
const namedOnly = (kind: Selectable): kind is 'method' | 'serverRequest' => kind === 'method' || kind === 'serverRequest';

function buildKindIndex(rules: CompiledRule[], kind: Selectable): KindIndex {
  const named = rules.filter((r) => r.selectors[kind]);
  const general = namedOnly(kind) ? [] : rules.filter((r) => r.anyKind);
  const globRules = named.filter((r) => r.selectors[kind]!.patterns.some(hasWildcard));
  const names = new Set<string>();
  for (const r of named) for (const p of r.selectors[kind]!.patterns) if (!hasWildcard(p)) names.add(p);
  const byName = new Map<string, Partition>();
  for (const n of names) byName.set(n, partition([...named.filter((r) => r.selectors[kind]!.matchers.some((m) => m(n))), ...general]));
  return { byName, rest: partition([...globRules, ...general]) };
}

function buildView(documents: CompiledDocument[]): ServerView {
  const rules = documents.flatMap((d) => d.rules).sort((a, b) => a.order - b.order);
  const denying = documents.find((d) => d.default === 'deny');
  return {
    documents,
    kinds: {
      tool: buildKindIndex(rules, 'tool'),
      resource: buildKindIndex(rules, 'resource'),
      prompt: buildKindIndex(rules, 'prompt'),
      method: buildKindIndex(rules, 'method'),
      serverRequest: buildKindIndex(rules, 'serverRequest'),
    },
    fallback: denying
      ? { effect: 'deny', rule: `${denying.name}/default` }
      : { effect: 'allow', rule: `${documents[0]?.name}/default` },
  };
}

const EMPTY: CompiledRule[] = [];

/**
 * The rules of a view that may apply to `name` of `kind` for this identity's groups, in
 * precedence order: the selector holds; `who` is still to be checked (sub and claims, and
 * groups for rules that name no group are not filtered here).
 */
export function candidates(view: ServerView, kind: Selectable, name: string, identity: Identity): CompiledRule[] {
  const index = view.kinds[kind];
  const hit = index.byName.get(name);
  const part = hit ?? index.rest;
  let out = part.general;
  let merged = false;
  const groups = identity.groups;
  if (part.byGroup.size && Array.isArray(groups)) {
    for (const g of groups) {
      const more = part.byGroup.get(g);
      if (!more) continue;
      if (!out.length) out = more;
      else {
        out = merged ? (out.push(...more), out) : [...out, ...more];
        merged = true;
      }
    }
  }
  if (merged) {
    // A rule naming several of the caller's groups appears once per group: keep one.
    out = [...new Set(out)].sort(byPrecedence);
  }
  if (!hit && out.length) out = out.filter((r) => r.anyKind || r.selectors[kind]!.matchers.some((m) => m(name)));
  return out.length ? out : EMPTY;
}

/** Whether a rule's tools/resources/prompts/methods/serverRequests select this name (ignoring server, who, when). */
export function selects(rule: CompiledRule, kind: Selectable, name: string): boolean {
  const s = rule.selectors[kind];
  if (s) return s.matchers.some((m) => m(name));
  return !namedOnly(kind) && rule.anyKind;
}

/**
 * The masks that apply to a result (for the masking stage): every covering document's masks that
 * select it, in bundle order. Without a target (server notifications, which belong to no one
 * tool), every mask of the server.
 */
export function masksFor(bundle: CompiledBundle, server: string, target?: { kind: Kind; name: string }): CompiledMask[] {
  return bundle
    .view(server)
    .documents.flatMap((d) => d.masks)
    .filter((m) => {
      if (!target) return true;
      const any = !m.selectors.tool && !m.selectors.resource && !m.selectors.prompt;
      const s = m.selectors[target.kind];
      return any || (s !== undefined && s.matchers.some((x) => x(target.name)));
    });
}

/** Whether any mask of the bundle hashes (then masking.hashKey is required). */
export function usesHash(bundle: CompiledBundle): boolean {
  return bundle.documents.some((d) => d.masks.some((m) => [...m.rules.detectors, ...m.rules.fields].some((r) => r.strategy === 'hash')));
}

function compileMaskRules(m: MaskSpec): MaskRules {
  const detectors: MaskRules['detectors'] = [];
  for (const entry of m.detectors ?? []) {
    const name = typeof entry === 'string' ? entry : entry.name;
    const strategy = typeof entry === 'string' ? m.strategy : entry.strategy;
    const names = name === 'secrets' ? SECRET_KINDS : [name];
    for (const n of names) detectors.push({ detector: BUILTIN[n], strategy });
  }
  for (const c of m.custom ?? []) detectors.push({ detector: customDetector(c.name, c.pattern, c.validator), strategy: c.strategy ?? m.strategy });
  const fields = (m.fields ?? []).map((f) => {
    const path = parsePath(f);
    const last = [...path].reverse().find((s) => s.t === 'member' || s.t === 'deep') as { name: string } | undefined;
    const kind = last && /^[A-Za-z0-9_]+$/.test(last.name) ? last.name.toLowerCase() : 'field';
    return { path, strategy: m.strategy, kind };
  });
  return { detectors, fields, dropBlobs: m.blobs === 'drop' };
}

const SKIP_DIRS = new Set(['node_modules']);

/** Reads the policy files of a path: one file, or every *.yaml, *.yml and *.json under a folder (not *.test.yaml). Names are relative to the folder, with "/". */
export function readPolicyFiles(path: string): { files: Record<string, string>; displayName: (name: string) => string } {
  let stat;
  try {
    stat = statSync(path);
  } catch (e) {
    throw new PortcullisError('PCL_POLICY_INVALID', `cannot read policy path ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const files: Record<string, string> = {};
  if (stat.isFile()) {
    files[basename(path)] = readFileSync(path, 'utf8');
    return { files, displayName: () => path };
  }
  const walk = (dir: string, prefix: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (entry.name.startsWith('.')) continue;
      const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name)) walk(join(dir, entry.name), rel);
      } else if (entry.isFile() && isPolicyFile(entry.name)) files[rel] = readFileSync(join(dir, entry.name), 'utf8');
    }
  };
  walk(path, '');
  if (!Object.keys(files).length) throw new PortcullisError('PCL_POLICY_INVALID', `no policy files (*.yaml, *.yml, *.json) in ${path}`);
  return { files, displayName: (name) => join(path, name) };
}

/** Loads and compiles a policy file or folder. Throws PortcullisError('PCL_POLICY_INVALID') with every problem. */
export function loadBundle(path: string): CompiledBundle {
  const { files, displayName } = readPolicyFiles(path);
  return compileBundle(files, { displayName });
}

export type { RuleSpec, MaskSpec };
