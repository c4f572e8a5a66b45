// Detectors find sensitive values in text and validate them (Luhn, mod-97, SSN ranges, a JWT
// header that decodes), so that a masked value is one that really is what its kind says.
//
// Matching is linear time: each detector first walks the text once, splitting it into runs of
// the characters its values are made of (a table lookup per character), and runs its RE2 pattern
// (re2js, no backtracking) only inside runs that pass a cheap trigger (an "@" for email, 13 digits
// for a card). A match must stand on word boundaries: a value inside a longer identifier is not
// that value.
import { isIPv6 } from 'node:net';
import { RE2JS } from 're2js';
import { compileRe2 } from '../policy/re2.js';

export interface Span {
  start: number;
  end: number;
  /** The kind the masked value is named by: [REDACTED:<kind>]. */
  kind: string;
}

export interface Detector {
  /** The detector's name (as policy lists it). */
  name: string;
  /** Every span this detector accepts in the text. */
  find(text: string): Span[];
}

const table = (chars: string): Uint8Array => {
  const t = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) {
    if (chars[i + 1] === '-' && i + 2 < chars.length) {
      for (let c = chars.charCodeAt(i); c <= chars.charCodeAt(i + 2); c++) t[c] = 1;
      i += 2;
    } else t[chars.charCodeAt(i)] = 1;
  }
  return t;
};
const has = (t: Uint8Array, c: number) => c < 128 && t[c] === 1;

const WORD = table('A-Za-z0-9_');

/**
 * A match is whole when the characters beside it are not part of a longer token: not a `word`
 * character, and not a joiner ("." or "-") followed by one ("1.2.3.4.5" is no IPv4 address, but
 * "at 10.0.0.1." ends a sentence).
 */
function standsAlone(text: string, start: number, end: number, word: Uint8Array, joiners: string): boolean {
  const before = text.charCodeAt(start - 1);
  if (start > 0 && has(word, before)) return false;
  if (start > 1 && joiners.includes(text[start - 1]) && has(word, text.charCodeAt(start - 2))) return false;
  if (end < text.length && has(word, text.charCodeAt(end))) return false;
  if (end + 1 < text.length && joiners.includes(text[end]) && has(word, text.charCodeAt(end + 1))) return false;
  return true;
}

interface RunDetector {
  name: string;
  kind?: string;
  /** The characters a value is made of: runs of them are candidates. */
  alphabet: string;
  /** Shortest run that can hold a value. */
  minLength: number;
  /** Literals of which a text must hold one for this detector to look at it (a native indexOf). */
  needles?: string[];
  /** A cheap test a run must pass before the pattern runs on it. */
  trigger?: (run: string) => boolean;
  pattern: string;
  validate?: (value: string) => boolean;
  word?: Uint8Array;
  joiners?: string;
}

/** A detector over runs of its alphabet (see the file comment). */
function runDetector(spec: RunDetector): Detector {
  const alphabet = table(spec.alphabet);
  const re = RE2JS.compile(spec.pattern);
  const word = spec.word ?? WORD;
  const joiners = spec.joiners ?? '.-';
  const kind = spec.kind ?? spec.name;
  return {
    name: spec.name,
    find(text) {
      const spans: Span[] = [];
      if (spec.needles && !spec.needles.some((x) => text.includes(x))) return spans;
      const n = text.length;
      let i = 0;
      while (i < n) {
        while (i < n && !has(alphabet, text.charCodeAt(i))) i++;
        const runStart = i;
        while (i < n && has(alphabet, text.charCodeAt(i))) i++;
        if (i - runStart < spec.minLength) continue;
        const run = text.slice(runStart, i);
        if (spec.trigger && !spec.trigger(run)) continue;
        const m = re.matcher(run);
        let from = 0;
        // A candidate that fails its checks is left whole: the search goes on after it.
        while (from < run.length && m.find(from)) {
          const s = m.start();
          const e = m.end();
          if (e === s) break;
          from = e;
          const start = runStart + s;
          const end = runStart + e;
          if (!standsAlone(text, start, end, word, joiners)) continue;
          if (spec.validate && !spec.validate(run.slice(s, e))) continue;
          spans.push({ start, end, kind });
        }
      }
      return spans;
    },
  };
}

const digitCount = (s: string) => {
  let d = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) d++;
  }
  return d;
};
const digitsOf = (s: string) => s.replace(/[^0-9]/g, '');

/** The Luhn checksum (credit cards, IMEIs). */
export function luhn(value: string): boolean {
  const d = digitsOf(value);
  if (!d.length) return false;
  let sum = 0;
  for (let i = 0; i < d.length; i++) {
    let x = d.charCodeAt(d.length - 1 - i) - 48;
    if (i % 2 === 1) {
      x *= 2;
      if (x > 9) x -= 9;
    }
    sum += x;
  }
  return sum % 10 === 0;
}

/** IBAN lengths by country (the SWIFT IBAN registry). */
export const IBAN_LENGTHS: Record<string, number> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28, CH: 21, CR: 22, CY: 28, CZ: 24,
  DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23, GL: 18, GR: 27,
  GT: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20,
  LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28, NL: 18, NO: 15, OM: 23, PK: 24, PL: 28,
  PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31, SD: 18, SE: 24, SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28,
  TL: 23, TN: 24, TR: 26, UA: 29, VA: 22, VG: 24, XK: 20, YE: 30,
};

/** ISO 13616 mod-97 over an IBAN (spaces ignored), with its country's length. */
export function mod97(value: string): boolean {
  const iban = value.replace(/ /g, '').toUpperCase();
  if (!/^[A-Z]{2}[0-9]{2}[A-Z0-9]+$/.test(iban)) return false;
  if (IBAN_LENGTHS[iban.slice(0, 2)] !== iban.length) return false;
  const moved = iban.slice(4) + iban.slice(0, 4);
  let rest = 0;
  for (const ch of moved) {
    const c = ch.charCodeAt(0);
    const v = c >= 65 ? String(c - 55) : ch;
    for (const digit of v) rest = (rest * 10 + (digit.charCodeAt(0) - 48)) % 97;
  }
  return rest === 1;
}

/** US SSNs: area 000, 666 and 900–999, group 00 and serial 0000 are never issued. */
export function validSsn(value: string): boolean {
  const d = digitsOf(value);
  if (d.length !== 9) return false;
  const area = Number(d.slice(0, 3));
  return area !== 0 && area !== 666 && area < 900 && d.slice(3, 5) !== '00' && d.slice(5) !== '0000';
}

/** Major card brands by prefix and length. */
function cardBrand(d: string): boolean {
  const n = d.length;
  const p2 = Number(d.slice(0, 2));
  const p3 = Number(d.slice(0, 3));
  const p4 = Number(d.slice(0, 4));
  if (d[0] === '4') return n === 13 || n === 16 || n === 19; // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n === 16; // Mastercard
  if (p2 === 34 || p2 === 37) return n === 15; // American Express
  if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649)) return n >= 16 && n <= 19; // Discover
  if (p4 >= 3528 && p4 <= 3589) return n >= 16 && n <= 19; // JCB
  if (p2 === 36 || p2 === 38 || p2 === 39 || (p3 >= 300 && p3 <= 305)) return n >= 14 && n <= 19; // Diners Club
  if (p2 === 62) return n >= 16 && n <= 19; // UnionPay
  return false;
}

function validCard(value: string): boolean {
  const seps = value.replace(/[0-9]/g, '');
  if (seps.length && !(/^ +$/.test(seps) || /^-+$/.test(seps))) return false; // one kind of separator
  const d = digitsOf(value);
  return cardBrand(d) && luhn(d);
}

function validIpv4(value: string): boolean {
  const parts = value.split('.');
  return parts.length === 4 && parts.every((p) => p.length > 0 && p.length <= 3 && (p === '0' || p[0] !== '0') && Number(p) <= 255);
}

const base64url = (s: string): string | undefined => {
  try {
    return Buffer.from(s, 'base64url').toString('utf8');
  } catch {
    return undefined;
  }
};

function validJwt(value: string): boolean {
  const parts = value.split('.');
  if (parts.length !== 3 || !parts[0] || !parts[1]) return false;
  const header = base64url(parts[0]);
  if (!header) return false;
  try {
    const h = JSON.parse(header) as unknown;
    return typeof h === 'object' && h !== null && !Array.isArray(h) && typeof (h as { alg?: unknown }).alg === 'string';
  } catch {
    return false;
  }
}

/** Phone numbers: E.164 ("+" and 8–15 digits, grouped or not), NANP and trunk-prefixed national formats. */
function validPhone(value: string): boolean {
  const d = digitCount(value);
  if (value[0] === '+') return d >= 8 && d <= 15;
  return d >= 10 && d <= 12;
}

const PEM_BEGIN = '-----BEGIN ';
const PEM_LABEL = RE2JS.compile('^-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----');
const PEM_BODY = table('A-Za-z0-9+/= \t\r\n:,-');

/** PEM private key blocks (PKCS#1, PKCS#8, EC, OpenSSH, encrypted), BEGIN line to END line. */
const privateKey: Detector = {
  name: 'private_key',
  find(text) {
    const spans: Span[] = [];
    let from = 0;
    for (;;) {
      const start = text.indexOf(PEM_BEGIN, from);
      if (start < 0) break;
      const head = text.slice(start, start + 80);
      const m = PEM_LABEL.matcher(head);
      if (!m.lookingAt()) {
        from = start + PEM_BEGIN.length;
        continue;
      }
      const kind = head.slice(PEM_BEGIN.length, m.end() - 5);
      const endLine = `-----END ${kind}-----`;
      const close = text.indexOf(endLine, start + m.end());
      // A block cut off before its END line is still a key: mask to the end of its body.
      let end = close >= 0 ? close + endLine.length : start + m.end();
      if (close < 0) while (end < text.length && has(PEM_BODY, text.charCodeAt(end))) end++;
      spans.push({ start, end, kind: 'private_key' });
      from = end;
    }
    return spans;
  },
};

const AWS_SECRET = table('A-Za-z0-9/+');
const awsKey = runDetector({
  name: 'aws_access_key',
  alphabet: 'A-Z0-9',
  minLength: 20,
  needles: ['AKIA', 'ASIA', 'ABIA', 'ACCA', 'A3T'],
  pattern: '(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}',
  joiners: '',
});
const SECRET_LABEL = /secret/i;

/** AWS access key ids, and a 40-character secret access key near one (or labelled as a secret). */
const aws: Detector = {
  name: 'aws_access_key',
  find(text) {
    const keys = awsKey.find(text);
    const spans = [...keys];
    if (!keys.length && !SECRET_LABEL.test(text)) return spans;
    const n = text.length;
    let i = 0;
    while (i < n) {
      while (i < n && !has(AWS_SECRET, text.charCodeAt(i))) i++;
      const s = i;
      while (i < n && has(AWS_SECRET, text.charCodeAt(i))) i++;
      if (i - s !== 40) continue;
      const v = text.slice(s, i);
      // A 40-hex git SHA, or anything without both cases, is not an AWS secret.
      if (/^[0-9a-fA-F]+$/.test(v) || !/[a-z]/.test(v) || !/[A-Z]/.test(v)) continue;
      const near = keys.some((k) => Math.abs(k.start - s) < 300) || SECRET_LABEL.test(text.slice(Math.max(0, s - 40), s));
      if (near && standsAlone(text, s, i, WORD, '')) spans.push({ start: s, end: i, kind: 'aws_secret_key' });
    }
    return spans;
  },
};

export const BUILTIN: Record<string, Detector> = {
  email: runDetector({
    name: 'email',
    alphabet: "A-Za-z0-9._%+'@-",
    minLength: 6,
    needles: ['@'],
    trigger: (r) => r.includes('@'),
    pattern: "[A-Za-z0-9](?:[A-Za-z0-9._%+'-]{0,62}[A-Za-z0-9_%+-])?@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\.[A-Za-z]{2,24}",
    validate: (v) => !v.includes('..') && v.length <= 254,
  }),
  phone: runDetector({
    name: 'phone',
    alphabet: '0-9 ().+-',
    minLength: 8,
    trigger: (r) => digitCount(r) >= 8,
    pattern: [
      '\\+[1-9][0-9]{0,2}(?:[ .-]?\\(?[0-9]{1,5}\\)?){1,6}',
      '(?:1[ .-])?\\(?[2-9][0-9]{2}\\)?[ .-]?[0-9]{3}[ .-][0-9]{4}',
      '0[1-9](?:[ .-]?[0-9]{2}){4}',
      '0[1-9][0-9]{0,3}[ .-]?[0-9]{3,4}[ .-][0-9]{3,4}',
      '0[1-9][0-9]{1,3} [0-9]{6,8}',
    ].join('|'),
    validate: validPhone,
    word: table('A-Za-z0-9_+'),
  }),
  credit_card: runDetector({
    name: 'credit_card',
    alphabet: '0-9 -',
    minLength: 13,
    trigger: (r) => digitCount(r) >= 13,
    pattern: '[0-9](?:[ -]?[0-9]){12,18}',
    validate: validCard,
  }),
  iban: runDetector({
    name: 'iban',
    alphabet: 'A-Z0-9 ',
    minLength: 15,
    pattern: '[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)',
    validate: mod97,
  }),
  us_ssn: runDetector({
    name: 'us_ssn',
    alphabet: '0-9 -',
    minLength: 11,
    pattern: '[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}',
    validate: validSsn,
  }),
  ipv4: runDetector({
    name: 'ipv4',
    alphabet: '0-9.',
    minLength: 7,
    needles: ['.'],
    pattern: '[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}',
    validate: validIpv4,
    joiners: '.',
  }),
  ipv6: runDetector({
    name: 'ipv6',
    alphabet: '0-9A-Fa-f:.',
    minLength: 3,
    needles: [':'],
    trigger: (r) => r.indexOf(':') !== r.lastIndexOf(':'),
    pattern: '(?:[0-9A-Fa-f]{0,4}:){2,8}(?:[0-9]{1,3}(?:\\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})',
    validate: (v) => /[0-9A-Fa-f]/.test(v) && isIPv6(v),
    word: table('A-Za-z0-9_:'),
    joiners: '.',
  }),
  jwt: runDetector({
    name: 'jwt',
    alphabet: 'A-Za-z0-9_.-',
    minLength: 20,
    needles: ['eyJ'],
    trigger: (r) => r.includes('eyJ'),
    pattern: 'eyJ[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*',
    validate: validJwt,
    word: table('A-Za-z0-9_.-'),
  }),
  private_key: privateKey,
  aws_access_key: aws,
  github_token: runDetector({
    name: 'github_token',
    alphabet: 'A-Za-z0-9_',
    minLength: 40,
    needles: ['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_'],
    pattern: 'gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}',
  }),
  slack_token: runDetector({
    name: 'slack_token',
    alphabet: 'A-Za-z0-9.-',
    minLength: 15,
    needles: ['xox', 'xapp-'],
    pattern: 'xox[abposre]-[0-9]{6,}-[A-Za-z0-9-]{8,}|xox[abposre]-[A-Za-z0-9]{10,}(?:-[A-Za-z0-9]+)*|xapp-[0-9]-[A-Z0-9]{8,}-[0-9]+-[a-f0-9]{32,}',
  }),
};

/** What `secrets` stands for. */
export const SECRET_KINDS = ['private_key', 'aws_access_key', 'github_token', 'slack_token', 'jwt'] as const;

export const VALIDATORS = { luhn, mod97, us_ssn: validSsn } as const;
export type ValidatorName = keyof typeof VALIDATORS;

/** A policy's own detector: an RE2 pattern (linear time), optionally validated; the match is its value. */
export function customDetector(name: string, pattern: string, validator?: ValidatorName): Detector {
  const re = compileRe2(pattern);
  const validate = validator ? VALIDATORS[validator] : undefined;
  return {
    name,
    find(text) {
      const spans: Span[] = [];
      const m = re.matcher(text);
      let from = 0;
      while (from <= text.length && m.find(from)) {
        const s = m.start();
        const e = m.end();
        from = e > s ? e : e + 1;
        if (e === s) continue;
        // A match that begins or ends with a word character must not continue a longer word.
        const wordStart = has(WORD, text.charCodeAt(s));
        const wordEnd = has(WORD, text.charCodeAt(e - 1));
        if ((wordStart && s > 0 && has(WORD, text.charCodeAt(s - 1))) || (wordEnd && e < text.length && has(WORD, text.charCodeAt(e)))) continue;
        if (validate && !validate(text.slice(s, e))) continue;
        spans.push({ start: s, end: e, kind: name });
      }
      return spans;
    },
  };
}

/** Every accepted span of every detector, overlaps resolved (see resolveOverlaps). */
export function scan(text: string, detectors: readonly Detector[]): Span[] {
  const all: Span[] = [];
  for (const d of detectors) for (const s of d.find(text)) all.push(s);
  return resolveOverlaps(all);
}

/** A value is masked whole: of overlapping spans the earliest wins, then the longest. */
export function resolveOverlaps<S extends Span>(all: S[]): S[] {
  if (all.length < 2) return all;
  all.sort((a, b) => a.start - b.start || b.end - a.end);
  const out: S[] = [];
  let last = -1;
  for (const s of all) {
    if (s.start < last) continue;
    out.push(s);
    last = s.end;
  }
  return out;
}
