// RFC 8785 JSON Canonicalization Scheme (JCS): one byte sequence per JSON value, so a hash of
// it is stable across processes, languages and key orders.
//
// The rules, and how they map onto ECMAScript (RFC 8785 was written so they do):
// - literals null, true, false as usual;
// - numbers as ECMAScript Number.prototype.toString (the shortest round-trip form; -0 is "0");
//   NaN and ±Infinity are not JSON and are refused;
// - strings with JSON.stringify's escaping (\b \t \n \f \r \" \\, other controls as \u00xx,
//   everything else literal UTF-8); lone surrogates are not valid Unicode and are refused;
// - object members sorted by their names compared as arrays of UTF-16 code units (which is
//   what the default Array.prototype.sort does), no whitespace anywhere;
// - arrays keep their order.
// Like JSON.stringify, a toJSON() method is honoured (Dates become ISO strings), object members
// whose value is undefined, a function or a symbol are left out, and such values inside arrays
// become null. BigInt is refused: it has no JSON form that round-trips.

// With the u flag a valid surrogate pair is one code point, so only a lone surrogate is in Cs.
const LONE_SURROGATE = /\p{Cs}/u;

export function canonicalize(value: unknown): string {
  let out: string | undefined;
  try {
    out = serialize(value);
  } catch (e) {
    if (e instanceof Unrepresentable) throw new TypeError(`canonicalize: ${locate(value, '$') ?? '$'} ${e.message}`);
    throw e;
  }
  if (out === undefined) throw new TypeError('canonicalize: the value has no JSON form (undefined, function or symbol)');
  return out;
}

class Unrepresentable extends Error {}

// Hot path (every audit record): no path bookkeeping here; locate() finds the culprit after.
function serialize(value: unknown): string | undefined {
  if (typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  switch (typeof value) {
    case 'string':
      if (LONE_SURROGATE.test(value)) throw new Unrepresentable(problemOf(value)!);
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new Unrepresentable(problemOf(value)!);
      return JSON.stringify(value); // ECMAScript number serialisation is JCS's (and -0 → "0")
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new Unrepresentable(problemOf(value)!);
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += `${i ? ',' : ''}${serialize(value[i]) ?? 'null'}`;
    return `${out}]`;
  }
  const obj = value as Record<string, unknown>;
  let out = '{';
  let first = true;
  const keys = Object.keys(obj);
  // Sorting allocates even when there is nothing to move: records built in canonical order skip it.
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1] > keys[i]) {
      keys.sort();
      break;
    }
  }
  for (const key of keys) {
    const v = serialize(obj[key]);
    if (v === undefined) continue;
    if (LONE_SURROGATE.test(key)) throw new Unrepresentable('has a member name with a lone surrogate (not valid Unicode)');
    out += `${first ? '' : ','}${JSON.stringify(key)}:${v}`;
    first = false;
  }
  return `${out}}`;
}

function problemOf(value: unknown): string | undefined {
  if (typeof value === 'string' && LONE_SURROGATE.test(value)) return 'contains a lone surrogate (not valid Unicode)';
  if (typeof value === 'number' && !Number.isFinite(value)) return `is ${value}, which JSON cannot represent`;
  if (typeof value === 'bigint') return 'is a BigInt; convert it to a number or a string first';
  return undefined;
}

/** The JSONPath-like location of the first value JSON cannot carry (only to explain an error). */
function locate(value: unknown, path: string): string | undefined {
  if (typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  if (problemOf(value)) return path;
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [k, v] of Object.entries(value)) {
    if (LONE_SURROGATE.test(k)) return path;
    const found = locate(v, Array.isArray(value) ? `${path}[${k}]` : `${path}.${k}`);
    if (found) return found;
  }
  return undefined;
}
