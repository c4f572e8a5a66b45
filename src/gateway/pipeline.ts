// The data path is one onion of stages with one signature. A stage acts on the way in, calls
// next() to pass the message inward, and acts on the reply on the way out; a stage that returns
// without calling next() stops the message there (a deny, a malformed message). The ordered
// lists live in stages.ts, so a reader finds the whole path in one place.
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { Identity } from '../auth/identity.js';
import type { Decision } from '../policy/decision.js';
import type { Classified } from './classify.js';
import type { Authorized, PolicyView } from './decide.js';
import type { Session } from './session.js';

export interface Exchange {
  readonly session: Session;
  /** toUpstream: a message from the client; toClient: a message the upstream sent on its own. */
  readonly direction: 'toUpstream' | 'toClient';
  /** The parsed message, exactly as it arrived. */
  readonly raw: unknown;
  /**
   * Who this message is from (toUpstream: its own request's verified identity) or for (toClient:
   * see Session.toClient). Every stage reads this, never a session field, so two requests of one
   * session are decided and filtered each with its own identity.
   */
  readonly identity: Identity;
  readonly startedAt: number;
  /** Set by classify. */
  msg?: Classified;
  /** Set by decide (toUpstream only): the policy version and the decision this message is governed by. */
  policy?: PolicyView;
  decision?: Decision;
  decisionId?: string;
  /** Set by decide once the decision's audit record is durable; the only thing forward accepts. */
  authorized?: Authorized;
  /** What the session recording stores of this message: set by the masking stage (masked). */
  recordable?: unknown;
  /** Set by the recording stage: the masking stage calls it once `recordable` is known, so messages are recorded in order. */
  recordNow?: () => void;
  /** Releases this message's place in the session's upstream order (see Session.order). */
  releaseTurn: () => void;
  turnReady: Promise<void>;
}

/** The reply to a request (its response), or undefined for notifications and responses. */
export type Reply = JSONRPCMessage | undefined;
export type Stage = (x: Exchange, next: () => Promise<Reply>) => Promise<Reply>;

export function compose(stages: readonly Stage[]): (x: Exchange) => Promise<Reply> {
  return (x) => {
    const dispatch = (i: number): Promise<Reply> => {
      const stage = stages[i];
      if (!stage) return Promise.resolve(undefined);
      return stage(x, () => dispatch(i + 1));
    };
    return dispatch(0);
  };
}
