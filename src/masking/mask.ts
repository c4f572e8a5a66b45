// Applies a set of masks to what the client (and the recording) sees: detectors on every string,
// field paths into structured results and into JSON found in text, each with its strategy.
// Copy-on-write: the message the upstream sent is never changed in place, and an unchanged
// value comes back as the same object.
import { createHmac } from 'node:crypto';
import { resolveOverlaps, type Detector, type Span } from './detectors.js';
import { applyPath, MAX_DEPTH, PathError, type Segment } from './jsonpath.js';

export type Strategy = 'redact' | 'hash' | 'partial';

export interface DetectorRule {
  detector: Detector;
  strategy: Strategy;
}

export interface FieldRule {
  path: Segment[];
  strategy: Strategy;
  /** What the masked value is named: the path's last member name, else "field". */
  kind: string;
}

/** One mask, compiled (see compile.ts). */
export interface MaskRules {
  detectors: DetectorRule[];
  fields: FieldRule[];
  dropBlobs: boolean;
}

export class MaskingError extends Error {
  readonly code = 'PCL_MASKING_FAILED';
}

/** A masked value, by strategy. `hash` needs the deployment's key (masking.hashKey). */
export function replacement(kind: string, value: string, strategy: Strategy, hashKey: Buffer | undefined): string {
  switch (strategy) {
    case 'redact':
      return `[REDACTED:${kind}]`;
    case 'partial':
      // Four characters of a short value would give most of it away.
      return value.length >= 8 ? `[REDACTED:${kind}]${value.slice(-4)}` : `[REDACTED:${kind}]`;
    case 'hash':
      if (!hashKey) throw new MaskingError('a mask uses strategy hash but masking.hashKey is not configured');
      return `${kind}_${createHmac('sha256', hashKey).update(value).digest('hex').slice(0, 12)}`;
  }
}

/** A field's value masked within its type, so a result still fits its outputSchema. */
function maskField(v: unknown, rule: FieldRule, hashKey: Buffer | undefined, depth = 0): unknown {
  if (depth > MAX_DEPTH) throw new MaskingError('value nested too deeply to mask');
  if (typeof v === 'string') return replacement(rule.kind, v, rule.strategy, hashKey);
  if (typeof v === 'number') {
    if (rule.strategy === 'hash') return parseInt(replacement(rule.kind, String(v), 'hash', hashKey).slice(-12), 16);
    if (rule.strategy === 'partial' && Number.isInteger(v) && Math.abs(v) >= 1e7) return Math.abs(v) % 10_000;
    return 0;
  }
  if (typeof v === 'boolean') return false;
  if (Array.isArray(v)) return v.map((x) => maskField(x, rule, hashKey, depth + 1));
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) Object.defineProperty(out, k, { value: maskField(x, rule, hashKey, depth + 1), writable: true, enumerable: true, configurable: true });
    return out;
  }
  return v;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keys of the MCP envelope whose strings are protocol, not data. */
const PROTOCOL_KEYS = new Set(['type', 'mimeType', 'progressToken', 'role', 'level']);
const BINARY_TYPES = new Set(['image', 'audio']);

export class Masker {
  private readonly detectors: DetectorRule[];
  private readonly fields: FieldRule[];
  private readonly dropBlobs: boolean;

  /** Masks in bundle order: when two list the same detector, the first one's strategy holds. */
  constructor(
    masks: readonly MaskRules[],
    private readonly hashKey?: Buffer,
  ) {
    const seen = new Set<string>();
    this.detectors = [];
    for (const m of masks) {
      for (const d of m.detectors) {
        if (seen.has(d.detector.name)) continue;
        seen.add(d.detector.name);
        this.detectors.push(d);
      }
    }
    this.fields = masks.flatMap((m) => m.fields);
    this.dropBlobs = masks.some((m) => m.dropBlobs);
  }

  /** Detectors on plain text. */
  plain(text: string): string {
    if (!this.detectors.length || !text) return text;
    const spans: Array<Span & { strategy: Strategy }> = [];
    for (const d of this.detectors) for (const s of d.detector.find(text)) spans.push({ ...s, strategy: d.strategy });
    if (!spans.length) return text;
    let out = '';
    let at = 0;
    for (const s of resolveOverlaps(spans)) {
      out += text.slice(at, s.start) + replacement(s.kind, text.slice(s.start, s.end), s.strategy, this.hashKey);
      at = s.end;
    }
    return out + text.slice(at);
  }

  /**
   * Text that may hold JSON: JSON stays valid JSON (its strings are masked, and field paths apply
   * when `withFields`); anything else gets the detectors as plain text.
   */
  text(text: string, withFields: boolean): string {
    const first = text.trimStart()[0];
    if (first === '{' || first === '[') {
      let parsed: unknown;
      let ok = true;
      try {
        parsed = JSON.parse(text);
      } catch {
        ok = false;
      }
      if (ok) {
        const masked = this.data(withFields ? this.applyFields(parsed) : parsed);
        if (masked === parsed) return text;
        return JSON.stringify(masked, null, /\n\s/.test(text) ? 2 : undefined);
      }
    }
    return this.plain(text);
  }

  /** Field paths, each value replaced within its type. */
  applyFields(root: unknown): unknown {
    let out = root;
    for (const f of this.fields) {
      try {
        out = applyPath(out, f.path, (v) => maskField(v, f, this.hashKey));
      } catch (e) {
        if (e instanceof PathError) throw new MaskingError(e.message);
        throw e;
      }
    }
    return out;
  }

  /** User data (structured content, arguments, log data): detectors on every string at any depth. */
  data(v: unknown, depth = 0): unknown {
    if (depth > MAX_DEPTH) throw new MaskingError('value nested too deeply to mask');
    if (typeof v === 'string') return this.text(v, false);
    if (typeof v !== 'object' || v === null) return v;
    return mapChildren(v, (x) => this.data(x, depth + 1));
  }

  /**
   * An MCP result or notification params (tool results, resource contents, prompt messages,
   * log messages): text content gets the JSON-aware treatment with field paths,
   * structuredContent the field paths and detectors, base64 image/audio data and blobs are left
   * alone (a blob is replaced by a text marker when a mask drops blobs), protocol keys unchanged.
   */
  envelope(v: unknown, depth = 0): unknown {
    if (depth > MAX_DEPTH) throw new MaskingError('value nested too deeply to mask');
    if (typeof v === 'string') return this.text(v, false);
    if (Array.isArray(v)) return mapChildren(v, (x) => this.envelope(x, depth + 1));
    if (!isObj(v)) return v;
    if (this.dropBlobs && typeof v.blob === 'string') {
      const { blob: _blob, ...rest } = v;
      return { ...(this.envelope(rest, depth) as object), text: '[REDACTED:blob]' };
    }
    const binary = typeof v.type === 'string' && BINARY_TYPES.has(v.type);
    return mapChildren(v, (x, k) => {
      if (PROTOCOL_KEYS.has(k as string) || k === 'blob' || (binary && k === 'data')) return x;
      if (k === 'structuredContent') return this.data(this.applyFields(x), depth + 1);
      if (k === 'text' && typeof x === 'string') return this.text(x, true);
      return this.envelope(x, depth + 1);
    });
  }
}

/** Maps an object's or array's children, copying only when one changed. */
function mapChildren(v: object, f: (child: unknown, key: string | number) => unknown): unknown {
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const c = f(v[i], i);
      if (c !== v[i]) (out ??= [...v])[i] = c;
    }
    return out ?? v;
  }
  let out: Record<string, unknown> | undefined;
  const src = v as Record<string, unknown>;
  for (const k of Object.keys(src)) {
    const c = f(src[k], k);
    if (c !== src[k]) Object.defineProperty((out ??= { ...src }), k, { value: c, writable: true, enumerable: true, configurable: true });
  }
  return out ?? v;
}
