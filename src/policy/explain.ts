// Why a request gets its decision: for every rule of every covering document, whether its
// server, selector, who and when held. The decision itself always comes from decide(), so an
// explanation can never disagree with what the gateway does.
import type { Identity } from '../auth/identity.js';
import { celErrorMessage } from './cel.js';
import { masksFor, type CompiledBundle, type CompiledRule, type Kind, type Selectable } from './compile.js';
import { celContext, decide, targetOf } from './decide.js';
import type { Decision, DecisionInput } from './decision.js';

export interface Check {
  ok: boolean;
  reason: string;
}

export interface RuleExplanation {
  rule: string;
  effect: CompiledRule['effect'];
  file: string;
  line?: number;
  selector: Check;
  who: Check;
  /** Absent when the rule has no `when`; `evaluated: false` when an earlier check failed. */
  when?: { evaluated: boolean; result?: boolean; error?: string };
  /** The rule applies: selector and who hold, and when is absent or true. */
  matched: boolean;
  /** This rule made the decision. */
  decisive: boolean;
}

export interface Explanation {
  decision: Decision;
  documents: { name: string; file: string; line?: number; server: string; covers: boolean; default: 'allow' | 'deny' }[];
  rules: RuleExplanation[];
  /** The masks the result of this request gets for this identity (docs/masking.md), in bundle order. */
  masks: { mask: string; file: string; line?: number; detectors: string[]; fields: string[]; strategy: string }[];
}

const q = (s: string) => JSON.stringify(s);
const listOf = (xs: readonly unknown[]) => `[${xs.map((x) => (typeof x === 'string' ? q(x) : String(x))).join(', ')}]`;
const asList = (v: string | string[] | undefined) => (v === undefined ? undefined : typeof v === 'string' ? [v] : v);

function explainWho(rule: CompiledRule, identity: Identity): Check {
  const who = rule.spec.who;
  if (!who) return { ok: true, reason: 'everyone' };
  const parts: string[] = [];
  let ok = true;
  const subs = asList(who.sub);
  if (subs) {
    const hit = subs.includes(identity.sub);
    ok &&= hit;
    parts.push(hit ? `sub ${q(identity.sub)} is listed` : `sub ${q(identity.sub)} is not one of ${listOf(subs)}`);
  }
  const groups = asList(who.groups);
  if (groups) {
    const hit = (identity.groups ?? []).find((g) => groups.includes(g));
    ok &&= hit !== undefined;
    parts.push(hit !== undefined ? `in group ${q(hit)}` : `in none of the groups ${listOf(groups)}`);
  }
  for (const [key, value] of Object.entries(who.claims ?? {})) {
    const wanted = Array.isArray(value) ? value : [value];
    const has = identity.claims && Object.hasOwn(identity.claims, key);
    const actual = has ? identity.claims[key] : undefined;
    const hit = has && (Array.isArray(actual) ? actual.some((a) => wanted.includes(a as never)) : wanted.includes(actual as never));
    ok &&= Boolean(hit);
    parts.push(!has ? `claim ${key} is absent` : hit ? `claim ${key} matches` : `claim ${key} is ${JSON.stringify(actual)}, not one of ${listOf(wanted)}`);
  }
  return { ok, reason: parts.join(', ') };
}

const FIELD = { tool: 'tools', resource: 'resources', prompt: 'prompts', method: 'methods', serverRequest: 'serverRequests' } as const;
const NOUN = { tool: 'tool', resource: 'resource', prompt: 'prompt', method: 'method', serverRequest: 'server request' } as const;

function explainSelector(rule: CompiledRule, kind: Selectable, name: string): Check {
  const s = rule.selectors[kind];
  if (s) {
    const i = s.matchers.findIndex((m) => m(name));
    return i >= 0
      ? { ok: true, reason: `${NOUN[kind]} ${q(name)} matches ${q(s.patterns[i])}` }
      : { ok: false, reason: `${NOUN[kind]} ${q(name)} matches none of ${FIELD[kind]} ${listOf(s.patterns)}` };
  }
  if (rule.anyKind) {
    return kind === 'method' || kind === 'serverRequest'
      ? { ok: false, reason: `the rule names no ${FIELD[kind]}, and ${NOUN[kind]} ${q(name)} is governed only by rules with ${FIELD[kind]}:` }
      : { ok: true, reason: 'the rule names no tools, resources, prompts, methods or serverRequests: it governs every tool, resource and prompt' };
  }
  const named = (['tool', 'resource', 'prompt', 'method', 'serverRequest'] as const).filter((k) => rule.selectors[k]).map((k) => FIELD[k]);
  return { ok: false, reason: `the rule governs only ${named.join(' and ')}, not this ${NOUN[kind]}` };
}

export function explain(bundle: CompiledBundle, input: DecisionInput): Explanation {
  const decision = decide(bundle, input);
  const view = bundle.view(input.server);
  const target = targetOf(input);
  const documents = bundle.documents.map((d) => ({
    name: d.name,
    file: d.file,
    line: d.line,
    server: d.server,
    covers: view.documents.includes(d),
    default: d.default,
  }));
  const rules: RuleExplanation[] = [];
  if (!('malformed' in target)) {
    const ctx = celContext(input);
    for (const d of view.documents) {
      for (const r of d.rules) {
        const selector = explainSelector(r, target.kind, target.name);
        const who = explainWho(r, input.identity);
        let when: RuleExplanation['when'];
        if (r.when) {
          if (!selector.ok || !who.ok) when = { evaluated: false };
          else {
            try {
              when = { evaluated: true, result: r.when.evaluate(ctx) };
            } catch (e) {
              when = { evaluated: true, error: celErrorMessage(e) };
            }
          }
        }
        const matched = selector.ok && who.ok && (!when || when.result === true);
        rules.push({ rule: r.id, effect: r.effect, file: r.file, line: r.line, selector, who, when, matched, decisive: r.id === decision.rule });
      }
    }
  }
  const masks =
    'malformed' in target || target.kind === 'method' || target.kind === 'serverRequest'
      ? []
      : masksFor(bundle, input.server, { kind: target.kind, name: target.name })
          .filter((m) => m.appliesTo(input.identity))
          .map((m) => ({
            mask: m.id,
            file: m.file,
            line: m.line,
            detectors: [...(m.spec.detectors ?? []).map((d) => (typeof d === 'string' ? d : `${d.name} (${d.strategy})`)), ...(m.spec.custom ?? []).map((c) => c.name)],
            fields: m.spec.fields ?? [],
            strategy: m.spec.strategy,
          }));
  return { decision, documents, rules, masks };
}

/** The explanation as text, for the CLI. */
export function formatExplanation(e: Explanation): string {
  const d = e.decision;
  const out = [`decision: ${d.effect.toUpperCase()} by ${d.rule}${d.message ? ` (${d.message})` : ''}`];
  if (d.approvers) out.push(`approvers: ${[...(d.approvers.sub ?? []).map((s) => `sub ${s}`), ...(d.approvers.groups ?? []).map((g) => `group ${g}`)].join(', ') || '(none named)'}`);
  out.push(`bundle: ${d.bundleVersion}`);
  out.push(`masks: ${e.masks.length ? '' : 'none'}`);
  for (const m of e.masks) out.push(`  ${m.mask} (${m.file}${m.line ? `:${m.line}` : ''}): ${[...m.detectors, ...m.fields].join(', ')}; ${m.strategy}`);
  for (const doc of e.documents) {
    out.push('');
    out.push(`policy ${doc.name} (${doc.file}${doc.line ? `:${doc.line}` : ''}), server ${q(doc.server)}: ${doc.covers ? `covers this request, default ${doc.default}` : 'does not cover this server'}`);
    if (!doc.covers) continue;
    for (const r of e.rules.filter((x) => x.rule.startsWith(`${doc.name}/`))) {
      const status = r.when?.error ? 'ERROR   ' : r.matched ? 'matched ' : 'no match';
      out.push(`  ${status} ${r.rule} (${r.effect}, line ${r.line ?? '?'})${r.decisive ? '   <- decided' : ''}`);
      out.push(`      ${r.selector.ok ? '+' : '-'} ${r.selector.reason}`);
      out.push(`      ${r.who.ok ? '+' : '-'} who: ${r.who.reason}`);
      if (r.when) {
        const w = r.when;
        out.push(`      ${w.error ? '!' : w.result ? '+' : w.evaluated ? '-' : ' '} when: ${!w.evaluated ? 'not evaluated' : w.error ? `error: ${w.error}` : String(w.result)}`);
      }
    }
  }
  return out.join('\n') + '\n';
}
