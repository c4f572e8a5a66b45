// Which masks apply to one result: chosen by policy (server, tools/resources/prompts, who), in
// bundle order, and compiled into one Masker that is cached per bundle and mask set.
import type { Identity } from '../auth/identity.js';
import { masksFor, type CompiledBundle, type Kind } from '../policy/compile.js';
import { Masker } from './mask.js';

/** What a result belongs to; none for what the server sends on its own (every mask of the server applies). */
export type MaskTarget = { kind: Kind; name: string } | undefined;

const cache = new WeakMap<CompiledBundle, Map<string, Masker>>();

/** The masker for this caller and target, or undefined when no mask applies. */
export function maskerFor(bundle: CompiledBundle, identity: Identity, server: string, target: MaskTarget, hashKey?: Buffer): Masker | undefined {
  const masks = masksFor(bundle, server, target).filter((m) => m.appliesTo(identity));
  if (!masks.length) return undefined;
  const key = masks.map((m) => m.id).join('\n');
  let byKey = cache.get(bundle);
  if (!byKey) cache.set(bundle, (byKey = new Map()));
  let masker = byKey.get(key);
  if (!masker) {
    masker = new Masker(
      masks.map((m) => m.rules),
      hashKey,
    );
    // The hash key is per deployment, fixed for the process: it need not be part of the key.
    if (byKey.size < 10_000) byKey.set(key, masker);
  }
  return masker;
}
