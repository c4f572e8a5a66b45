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
  const out = serialize(value, '$');
  if (out === undefined) throw new TypeError('canonicalize: the value has no JSON form (undefined, function or symbol)');
  return out;
}

function serialize(value: unknown, path: string): string | undefined {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  switch (typeof value) {
    case 'string':
      if (LONE_SURROGATE.test(value)) throw new TypeError(`canonicalize: ${path} contains a lone surrogate (not valid Unicode)`);
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalize: ${path} is ${value}, which JSON cannot represent`);
      return JSON.stringify(value); // ECMAScript number serialisation is JCS's (and -0 → "0")
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new TypeError(`canonicalize: ${path} is a BigInt; convert it to a number or a string first`);
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) {
    return `[${value.map((v, i) => serialize(v, `${path}[${i}]`) ?? 'null').join(',')}]`;
  }
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const key of Object.keys(obj).sort()) {
    if (LONE_SURROGATE.test(key)) throw new TypeError(`canonicalize: a member name in ${path} contains a lone surrogate`);
    const v = serialize(obj[key], `${path}.${key}`);
    if (v !== undefined) parts.push(`${JSON.stringify(key)}:${v}`);
  }
  return `{${parts.join(',')}}`;
}
