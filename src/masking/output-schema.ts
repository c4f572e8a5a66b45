// Masking never breaks a result's outputSchema: field values are masked within their type (see
// mask.ts), and a masked string whose schema gives it a `format` is written in that format
// (`email` as an address under the reserved .invalid domain, `date` as 1970-01-01, …), keeping
// the kind and, for `hash`, the digest, so values stay joinable.
import { MAX_DEPTH } from './jsonpath.js';

type Schema = Record<string, unknown>;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const slug = (masked: string) => masked.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60) || 'redacted';

const FORMATS: Record<string, (masked: string) => string> = {
  email: (m) => `${slug(m)}@redacted.invalid`,
  'idn-email': (m) => `${slug(m)}@redacted.invalid`,
  hostname: (m) => `${slug(m)}.redacted.invalid`,
  'idn-hostname': (m) => `${slug(m)}.redacted.invalid`,
  uri: (m) => `urn:redacted:${slug(m)}`,
  iri: (m) => `urn:redacted:${slug(m)}`,
  'uri-reference': (m) => `urn:redacted:${slug(m)}`,
  'iri-reference': (m) => `urn:redacted:${slug(m)}`,
  uuid: () => '00000000-0000-0000-0000-000000000000',
  date: () => '1970-01-01',
  'date-time': () => '1970-01-01T00:00:00Z',
  time: () => '00:00:00Z',
  ipv4: () => '0.0.0.0',
  ipv6: () => '::',
};

/** `masked` with every string the masking changed, and whose schema has a known format, rewritten in that format. */
export function fitToSchema(original: unknown, masked: unknown, schema: unknown, depth = 0): unknown {
  if (masked === original || !isObj(schema) || depth > MAX_DEPTH) return masked;
  if (typeof masked === 'string') {
    const f = typeof schema.format === 'string' ? FORMATS[schema.format] : undefined;
    return f ? f(masked) : masked;
  }
  if (Array.isArray(masked) && Array.isArray(original)) {
    const items = schema.items;
    return masked.map((v, i) => fitToSchema(original[i], v, items, depth + 1));
  }
  if (isObj(masked) && isObj(original)) {
    const props = isObj(schema.properties) ? (schema.properties as Record<string, Schema>) : {};
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(masked)) {
      const sub = Object.hasOwn(props, k) ? props[k] : schema.additionalProperties;
      Object.defineProperty(out, k, { value: fitToSchema(original[k], v, sub, depth + 1), writable: true, enumerable: true, configurable: true });
    }
    return out;
  }
  return masked;
}
