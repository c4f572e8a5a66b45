// The decision: lookups in the bundle's precompiled index, then the few candidate rules' `who`
// and `when`. Semantics (docs/policy.md has the long form):
//
// - The documents whose `server` matches cover the request; their rules are pooled.
// - What a rule governs: `tools` → tools/call; `resources` → resources/read, resources/subscribe,
//   resources/unsubscribe; `prompts` → prompts/get; completion/complete → `prompts` for a
//   ref/prompt, `resources` for a ref/resource (the URI template, compared literally). A URI (or
//   template) that is not canonical (uri.ts) is denied as malformed before any rule. A rule
//   naming none of tools, resources, prompts and methods governs every tool, resource and prompt.
//   Any other method is governed only by rules with `methods:` globs; a request the server sends
//   to the client (input.from "server") only by rules with `serverRequests:` globs.
// - Among the rules that apply (server, selector, `who`, and `when` true): deny beats approve
//   beats allow; ties go to the first rule in bundle order (files by name, then document order).
// - A `when` that fails at runtime denies, naming that rule and the error. Deny rules are
//   evaluated first and the first that holds (or fails) decides; otherwise every applicable
//   approve and allow rule is evaluated, so a failing one denies even when another would allow.
// - No rule matched: the covering documents' `default`s combine the same way (one deny
//   suffices); for a method outside tools/resources/prompts the answer is deny, so an unknown
//   method (or server request) passes only when a rule allows it. No covering document: deny.
import type { Identity } from '../auth/identity.js';
import { celErrorMessage, type CelContext } from './cel.js';
import { candidates, type CompiledBundle, type CompiledRule, type Kind, type Selectable, type ServerView } from './compile.js';
import type { Decision, DecisionInput } from './decision.js';
import { templateProblem, uriProblem } from './uri.js';

/** Built-in rule names a decision can carry. */
export const NO_POLICY = '(no policy covers this request)';
export const METHOD_NOT_ALLOWED = '(no rule allows this method)';
export const SERVER_REQUEST_NOT_ALLOWED = '(no rule allows this server request)';
export const MALFORMED = '(malformed request)';
export const EVALUATION_FAILED = '(policy evaluation failed)';

export type Target = { kind: Selectable; name: string } | { malformed: string };

const RESOURCE_METHODS = new Set(['resources/read', 'resources/subscribe', 'resources/unsubscribe']);

/** What a request is about, for rule selection. */
export function targetOf(input: Pick<DecisionInput, 'method' | 'from' | 'tool' | 'resource' | 'prompt'>): Target {
  const { method } = input;
  if (input.from === 'server') return { kind: 'serverRequest', name: method };
  const need = (kind: Kind, value: string | undefined): Target =>
    typeof value === 'string' ? { kind, name: value } : { malformed: `${method} without a ${kind} name` };
  if (method === 'tools/call') return need('tool', input.tool);
  if (RESOURCE_METHODS.has(method)) return canonical(need('resource', input.resource), uriProblem);
  if (method === 'prompts/get') return need('prompt', input.prompt);
  if (method === 'completion/complete') {
    if (typeof input.prompt === 'string') return { kind: 'prompt', name: input.prompt };
    if (typeof input.resource === 'string') return canonical({ kind: 'resource', name: input.resource }, templateProblem);
    return { malformed: 'completion/complete without a prompt or resource reference' };
  }
  return { kind: 'method', name: method };
}

/** Policy decides on canonical URIs only (see uri.ts); the gateway refuses others before deciding. */
function canonical(target: Target, problem: (uri: string) => string | undefined): Target {
  const why = 'name' in target ? problem(target.name) : undefined;
  return why ? { malformed: `the URI is not canonical: ${why}` } : target;
}

export function celContext(input: DecisionInput): CelContext {
  return {
    identity: input.identity,
    server: input.server,
    method: input.method,
    tool: input.tool ?? '',
    args: input.args ?? {},
    resource: input.resource ?? '',
    prompt: input.prompt ?? '',
    time: input.time,
  };
}

const deny = (bundle: CompiledBundle, rule: string, message?: string): Decision =>
  message === undefined ? { effect: 'deny', rule, bundleVersion: bundle.version } : { effect: 'deny', rule, message, bundleVersion: bundle.version };

/** The message of a deny caused by a `when` that could not be evaluated. */
export const whenFailed = (rule: CompiledRule, e: unknown) => `the condition of ${rule.id} could not be evaluated: ${celErrorMessage(e)}`;

/** Decides one request. Never throws: anything unexpected is a deny (fail closed). */
export function decide(bundle: CompiledBundle, input: DecisionInput): Decision {
  try {
    return decideUnsafe(bundle, input);
  } catch (e) {
    return deny(bundle, EVALUATION_FAILED, (e as Error)?.message ?? String(e));
  }
}

function decideUnsafe(bundle: CompiledBundle, input: DecisionInput): Decision {
  const target = targetOf(input);
  if ('malformed' in target) return deny(bundle, MALFORMED, target.malformed);
  const view = bundle.view(input.server);
  if (!view.documents.length) return deny(bundle, NO_POLICY, `no policy document covers server "${input.server}"`);
  const identity = input.identity;
  const rules = candidates(view, target.kind, target.name, identity);
  let ctx: CelContext | undefined;
  let approve: CompiledRule | undefined;
  let allow: CompiledRule | undefined;
  for (const r of rules) {
    if (!r.matchesWho(identity)) continue;
    if (r.when) {
      let holds: boolean;
      try {
        holds = r.when.evaluate((ctx ??= celContext(input)));
      } catch (e) {
        return deny(bundle, r.id, whenFailed(r, e));
      }
      if (!holds) continue;
    }
    if (r.effect === 'deny') return deny(bundle, r.id, r.message);
    if (r.effect === 'approve') approve ??= r;
    else allow ??= r;
  }
  const decided = approve ?? allow;
  if (decided) {
    const d: Decision = { effect: decided.effect, rule: decided.id, bundleVersion: bundle.version };
    if (decided.message !== undefined) d.message = decided.message;
    if (decided.effect === 'approve') d.approvers = decided.approvers ?? {};
    return d;
  }
  return fallback(bundle, view, target.kind, target.name);
}

export function fallback(bundle: CompiledBundle, view: ServerView, kind: Selectable, name: string): Decision {
  if (kind === 'method') return deny(bundle, METHOD_NOT_ALLOWED, `no rule allows method "${name}"`);
  if (kind === 'serverRequest') return deny(bundle, SERVER_REQUEST_NOT_ALLOWED, `no rule allows the server to send "${name}" to the client (serverRequests)`);
  return view.fallback.effect === 'deny' ? deny(bundle, view.fallback.rule) : { effect: 'allow', rule: view.fallback.rule, bundleVersion: bundle.version };
}

/**
 * For tools/list, resources/list, resources/templates/list and prompts/list: whether to show
 * an item. True when some allow or approve rule could let this identity use it (`when` is
 * ignored: arguments are unknown at list time) or the covering default allows it, unless a deny
 * rule without `when` applies to it or it is a URI that is not canonical. Costs the same lookups
 * as a decision, without CEL.
 */
export function visible(bundle: CompiledBundle, identity: Identity, server: string, kind: Kind, name: string): boolean {
  const view = bundle.view(server);
  if (!view.documents.length) return false;
  // A URI (or template) that no request could name canonically cannot be used.
  if (kind === 'resource' && templateProblem(name)) return false;
  let usable = false;
  for (const r of candidates(view, kind, name, identity)) {
    if (!r.matchesWho(identity)) continue;
    if (r.effect === 'deny') {
      if (!r.when) return false;
    } else usable = true;
  }
  return usable || view.fallback.effect === 'allow';
}
