import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BUILTIN, customDetector, IBAN_LENGTHS, luhn, SECRET_KINDS } from './detectors.js';
import { Masker, type Strategy } from './mask.js';

const masker = (names: string[], strategy: Strategy = 'redact', hashKey?: Buffer) =>
  new Masker([{ detectors: names.map((n) => ({ detector: BUILTIN[n], strategy })), fields: [], dropBlobs: false }], hashKey);
const ALL = Object.keys(BUILTIN);
const RUNS = { numRuns: 300 };

const digits = (n: number) => fc.array(fc.integer({ min: 0, max: 9 }), { minLength: n, maxLength: n }).map((a) => a.join(''));
const alnum = (n: number, chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789') =>
  fc.array(fc.constantFrom(...chars), { minLength: n, maxLength: n }).map((a) => a.join(''));

/** Completes a number with its Luhn check digit. */
function withLuhn(body: string): string {
  for (let c = 0; c <= 9; c++) if (luhn(body + c)) return body + c;
  throw new Error('unreachable');
}
const BRANDS: Array<[string, number]> = [['4', 16], ['4', 13], ['51', 16], ['55', 16], ['2221', 16], ['34', 15], ['37', 15], ['6011', 16], ['65', 19], ['3530', 16], ['36', 14], ['62', 17]];
const card = fc.tuple(fc.constantFrom(...BRANDS), fc.integer({ min: 0, max: 2 })).chain(([[prefix, len], sep]) =>
  digits(len - prefix.length - 1).map((d) => {
    const n = withLuhn(prefix + d);
    return sep === 0 ? n : n.replace(/(\d{4})(?=\d)/g, sep === 1 ? '$1 ' : '$1-');
  }),
);

function ibanOf(country: string, bban: string): string {
  const num = (bban + country + '00').replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  let r = 0;
  for (const ch of num) r = (r * 10 + Number(ch)) % 97;
  return `${country}${String(98 - r).padStart(2, '0')}${bban}`;
}
const iban = fc.constantFrom(...Object.keys(IBAN_LENGTHS)).chain((c) => alnum(IBAN_LENGTHS[c] - 4, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789').map((b) => ibanOf(c, b)));

const ssn = fc
  .tuple(fc.integer({ min: 1, max: 899 }).filter((a) => a !== 666), fc.integer({ min: 1, max: 99 }), fc.integer({ min: 1, max: 9999 }))
  .map(([a, g, s]) => `${String(a).padStart(3, '0')}-${String(g).padStart(2, '0')}-${String(s).padStart(4, '0')}`);
const badSsn = fc.oneof(
  fc.tuple(fc.constantFrom('000', '666', '900', '987', '999'), digits(2).filter((g) => g !== '00'), digits(4).filter((s) => s !== '0000')).map(([a, g, s]) => `${a}-${g}-${s}`),
  ssn.map((s) => `${s.slice(0, 4)}00${s.slice(6)}`),
  ssn.map((s) => `${s.slice(0, 7)}0000`),
);

const b64u = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = fc
  .tuple(fc.constantFrom('HS256', 'RS256', 'ES256', 'none'), fc.string({ maxLength: 20 }), alnum(43, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'))
  .map(([alg, sub, sig]) => `${b64u({ alg, typ: 'JWT' })}.${b64u({ sub, iat: 1700000000 })}.${alg === 'none' ? '' : sig}`);

const tokens: Record<string, fc.Arbitrary<string>> = {
  github_token: fc.oneof(
    fc.tuple(fc.constantFrom('ghp', 'gho', 'ghu', 'ghs', 'ghr'), alnum(36)).map(([p, r]) => `${p}_${r}`),
    fc.tuple(alnum(22), alnum(59)).map(([a, b]) => `github_pat_${a}_${b}`),
  ),
  aws_access_key: fc.tuple(fc.constantFrom('AKIA', 'ASIA'), alnum(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')).map(([p, r]) => p + r),
  slack_token: fc.tuple(fc.constantFrom('xoxb', 'xoxp', 'xoxa'), digits(12), digits(12), alnum(24)).map(([p, a, b, c]) => `${p}-${a}-${b}-${c}`),
  jwt,
};

const email = fc
  .tuple(alnum(1), fc.array(fc.constantFrom(...'abcxyz019._+-'), { maxLength: 12 }), alnum(1), alnum(5, 'abcdefghij0123'), fc.constantFrom('com', 'org', 'co.uk', 'example', 'io'))
  .filter(([, mid]) => !mid.join('').includes('..'))
  .map(([a, mid, z, d, tld]) => `${a}${mid.join('')}${z}@${d}.${tld}`);

/** The value in a sentence is masked whole, and nothing else changes. */
function assertMasked(names: string[], value: string, kind: string) {
  const text = `before ${value} after`;
  assert.equal(masker(names).plain(text), `before [REDACTED:${kind}] after`, `${value} should be masked as ${kind}`);
}
function assertNotMasked(names: string[], value: string) {
  const text = `before ${value} after`;
  assert.equal(masker(names).plain(text), text, `${value} should not be masked`);
}

describe('detectors validate, not just match', () => {
  it('credit cards: Luhn-valid numbers of the major brands are masked, in any spacing', () => {
    fc.assert(fc.property(card, (c) => assertMasked(['credit_card'], c, 'credit_card')), RUNS);
  });
  it('credit cards: a wrong check digit, an unknown brand or mixed separators are not', () => {
    fc.assert(
      fc.property(card, fc.integer({ min: 1, max: 9 }), (c, delta) => {
        const last = Number(c.at(-1));
        assertNotMasked(['credit_card'], c.slice(0, -1) + ((last + delta) % 10));
      }),
      RUNS,
    );
    assertNotMasked(['credit_card'], withLuhn('900000000000000')); // no brand starts with 9
    assertNotMasked(['credit_card'], '4111 1111-1111 1111');
    assertNotMasked(['credit_card'], `1${withLuhn('411111111111111')}2`); // inside a longer number
  });
  it('IBANs: mod-97-valid numbers at their country length are masked, compact or in groups of four', () => {
    fc.assert(
      fc.property(iban, fc.boolean(), (i, grouped) => assertMasked(['iban'], grouped ? i.replace(/(.{4})(?=.)/g, '$1 ') : i, 'iban')),
      RUNS,
    );
  });
  it('IBANs: one changed character, or the wrong length for the country, is not', () => {
    fc.assert(
      fc.property(iban, fc.nat(), (i, at) => {
        const pos = 4 + (at % (i.length - 4));
        const ch = i[pos];
        const other = /[0-9]/.test(ch) ? String((Number(ch) + 1) % 10) : ch === 'Z' ? 'A' : String.fromCharCode(ch.charCodeAt(0) + 1);
        assertNotMasked(['iban'], i.slice(0, pos) + other + i.slice(pos + 1));
      }),
      RUNS,
    );
    assertNotMasked(['iban'], ibanOf('DE', '37040044053201300'));
  });
  it('US SSNs: valid numbers are masked; areas 000, 666 and 9xx, group 00 and serial 0000 are not', () => {
    fc.assert(fc.property(ssn, (s) => assertMasked(['us_ssn'], s, 'us_ssn')), RUNS);
    fc.assert(fc.property(badSsn, (s) => assertNotMasked(['us_ssn'], s)), RUNS);
    assertNotMasked(['us_ssn'], '1123-45-6789');
  });
  it('IPv4: every address, private ranges included; not octets over 255 nor longer dotted numbers', () => {
    fc.assert(fc.property(fc.ipV4(), (ip) => assertMasked(['ipv4'], ip, 'ipv4')), RUNS);
    for (const ip of ['10.0.0.1', '192.168.1.1', '127.0.0.1', '172.16.0.1']) assertMasked(['ipv4'], ip, 'ipv4');
    for (const bad of ['256.1.1.1', '1.2.3.4.5', '01.2.3.4', 'v1.2.3.4']) assertNotMasked(['ipv4'], bad);
    assert.equal(masker(['ipv4']).plain('at 10.0.0.1.'), 'at [REDACTED:ipv4].');
  });
  it('IPv6: every address form; not times or C++ scopes', () => {
    fc.assert(fc.property(fc.ipV6().filter((ip) => /[0-9a-f]/i.test(ip)), (ip) => assertMasked(['ipv6'], ip, 'ipv6')), RUNS);
    for (const bad of ['12:30:45', 'std::vector', 'a:b']) assertNotMasked(['ipv6'], bad);
  });
  it('emails are masked; an address with ".." is not', () => {
    fc.assert(fc.property(email, (e) => assertMasked(['email'], e, 'email')), RUNS);
    assertNotMasked(['email'], 'bob..smith@example.com');
    assertNotMasked(['email'], 'user@localhost');
  });
  it('phones: E.164 and common national formats; not dates, versions or short numbers', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 99 }), digits(9), (cc, rest) => assertMasked(['phone'], `+${cc}${rest.replace(/^0/, '1')}`, 'phone')),
      RUNS,
    );
    for (const p of ['+1 415 555 2671', '+44 20 7946 0958', '(555) 123-4567', '555-123-4567', '020 7946 0958', '01 23 45 67 89', '+49 30 1234567']) assertMasked(['phone'], p, 'phone');
    for (const bad of ['2024-01-15', '1.2.3', '12345', '+123', '10:30']) assertNotMasked(['phone'], bad);
  });
  for (const [kind, gen] of Object.entries(tokens)) {
    it(`${kind}: generated tokens are masked (also through "secrets"), not inside longer identifiers`, () => {
      fc.assert(
        fc.property(gen, (t) => {
          assertMasked([kind], t, kind);
          assertMasked([...SECRET_KINDS], t, kind);
          assertNotMasked([kind], `x${t}`);
          if (kind !== 'jwt') assertNotMasked([kind], `${t}_x`);
        }),
        { numRuns: 100 },
      );
    });
  }
  it('jwt: a header that does not decode to JSON with alg is no JWT', () => {
    assertNotMasked(['jwt'], `${b64u({ typ: 'JWT' })}.${b64u({ sub: 1 })}.abc`);
    assertNotMasked(['jwt'], 'eyJnot-json.eyJzdWIiOjF9.abc');
  });
  it('aws: a secret key near an access key is masked as aws_secret_key; a 40-hex git SHA never is', () => {
    const key = 'AKIAIOSFODNN7EXAMPLE';
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    assert.equal(masker(['aws_access_key']).plain(`id=${key}\nkey=${secret}`), 'id=[REDACTED:aws_access_key]\nkey=[REDACTED:aws_secret_key]');
    assert.equal(masker(['aws_access_key']).plain(`aws_secret_access_key = ${secret}`), 'aws_secret_access_key = [REDACTED:aws_secret_key]');
    assertNotMasked(['aws_access_key'], secret); // alone, a 40-character string is nothing in particular
    fc.assert(
      fc.property(fc.string(), (s) => {
        const sha = createHash('sha1').update(s).digest('hex');
        assertNotMasked(ALL, `${key} commit ${sha}`.replace(key, 'commit'));
        assert.equal(masker(ALL).plain(`${key} ${sha}`), `[REDACTED:aws_access_key] ${sha}`);
      }),
      { numRuns: 100 },
    );
  });
  it('private keys: the whole PEM block, also when cut off; not public keys or certificates', () => {
    const pem = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----';
    assertMasked(['private_key'], pem, 'private_key');
    assertMasked(['private_key'], pem.replace(/OPENSSH /g, ''), 'private_key');
    assert.equal(masker(['private_key']).plain('k: -----BEGIN RSA PRIVATE KEY-----\nMIIEow=='), 'k: [REDACTED:private_key]');
    assertNotMasked(['private_key'], '-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----');
  });
  it('custom detectors: RE2 pattern, optional validator, word boundaries', () => {
    const m = new Masker([{ detectors: [{ detector: customDetector('employee_id', 'EMP-[0-9]{6}'), strategy: 'redact' }, { detector: customDetector('card_no', '[0-9]{16}', 'luhn'), strategy: 'redact' }], fields: [], dropBlobs: false }]);
    assert.equal(m.plain('by EMP-123456 and XEMP-123456'), 'by [REDACTED:employee_id] and XEMP-123456');
    assert.equal(m.plain('4111111111111111 4111111111111112'), '[REDACTED:card_no] 4111111111111112');
  });
});

describe('strategies', () => {
  const key = Buffer.from('k'.repeat(32));
  it('hash: <kind>_<12 hex of HMAC-SHA256>, stable for a key, different across keys', () => {
    const a = masker(['email'], 'hash', key).plain('bob@example.com');
    assert.match(a, /^email_[0-9a-f]{12}$/);
    assert.equal(masker(['email'], 'hash', key).plain('bob@example.com'), a);
    assert.notEqual(masker(['email'], 'hash', Buffer.from('j'.repeat(32))).plain('bob@example.com'), a);
    assert.throws(() => masker(['email'], 'hash').plain('bob@example.com'), /hashKey/);
  });
  it('partial keeps the last four characters of values of eight or more', () => {
    assert.equal(masker(['credit_card'], 'partial').plain('4111 1111 1111 1111'), '[REDACTED:credit_card]1111');
    assert.equal(masker(['email'], 'partial').plain('a@b.io'), '[REDACTED:email]');
  });
});

describe('JSON inside text', () => {
  const secrets = fc.oneof(tokens.github_token, tokens.aws_access_key, email, card);
  const doc = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small' }, secrets, fc.string(), fc.integer(), fc.boolean(), fc.constant(null), tie('array'), tie('object')),
    array: fc.array(tie('value'), { maxLength: 4 }),
    object: fc.dictionary(fc.string({ maxLength: 8 }), tie('value'), { maxKeys: 4 }),
  })).object;
  it('stays valid JSON, holds no clear secret, and keeps its shape', () => {
    fc.assert(
      fc.property(doc, fc.boolean(), (d, pretty) => {
        const text = JSON.stringify(d, null, pretty ? 2 : undefined);
        const out = masker(['email', 'credit_card', ...SECRET_KINDS]).text(text, true);
        const parsed = JSON.parse(out);
        assert.deepEqual(Object.keys(parsed), Object.keys(d));
        assert.doesNotMatch(out, /ghp_[A-Za-z0-9]{36}|AKIA[A-Z0-9]{16}/);
      }),
      RUNS,
    );
  });
});

describe('cost', () => {
  it('a 10 KB text with every detector takes milliseconds, not seconds (linear on hostile input too)', () => {
    const m = masker(ALL);
    for (const hostile of ['a'.repeat(100_000) + '@', '1 '.repeat(50_000), 'eyJ'.repeat(30_000), ':'.repeat(100_000), 'AKIA'.repeat(25_000)]) {
      const t0 = performance.now();
      m.plain(hostile);
      assert.ok(performance.now() - t0 < 3000, `${hostile.slice(0, 8)}… took ${performance.now() - t0} ms`);
    }
  });
});
