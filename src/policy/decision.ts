// What the policy engine is asked and what it answers. The gateway's decide stage builds a
// DecisionInput from each classified client message; the answer is recorded and enforced.
import type { Identity } from '../auth/identity.js';

export type Effect = 'allow' | 'deny' | 'approve';

export interface DecisionInput {
  identity: Identity;
  server: string;
  /** The JSON-RPC method, e.g. "tools/call". */
  method: string;
  /** Who sent the request: the client (the default), or the upstream server asking the client (sampling, elicitation, roots). */
  from?: 'client' | 'server';
  tool?: string;
  /** tools/call or prompts/get arguments, or a server request's params (always an object when present). */
  args?: Record<string, unknown>;
  /** resources/read, resources/subscribe, resources/unsubscribe: the URI. */
  resource?: string;
  prompt?: string;
  time: Date;
}

export interface Decision {
  effect: Effect;
  /** The rule that decided, "<document>/<rule>", or "<document>/default", or a built-in name. */
  rule: string;
  /** The rule's message, or why (e.g. a CEL error) for a deny. */
  message?: string;
  bundleVersion: string;
  /** For approve: who may approve. */
  approvers?: { sub?: string[]; groups?: string[] };
}
