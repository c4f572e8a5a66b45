// Upstream secrets in the log: whatever a key looks like, a logged URL hides it and text that
// quotes it (an error, a response body) loses it, raw or URL-encoded.
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { redactedUrl, scrubber } from './redact.js';

const secret = fc.string({ unit: 'grapheme-ascii', minLength: 6, maxLength: 40 }).filter((s) => s.trim() === s && /[A-Za-z0-9]{3}/.test(s));
const param = fc.stringMatching(/^[a-z_]{1,12}$/);

describe('upstream URLs in the log', () => {
  test('redactedUrl hides every query value and the fragment, keeps where the upstream is', () => {
    fc.assert(
      fc.property(secret, param, secret, (key, name, other) => {
        const url = `https://mcp.example.com/v1/mcp?${name}=${encodeURIComponent(key)}&x=${encodeURIComponent(other)}#${encodeURIComponent(other)}`;
        fc.pre(![name, 'https://mcp.example.com/v1/mcp?x=[REDACTED]'].some((fixed) => [key, other].some((s) => fixed.includes(s) || fixed.includes(encodeURIComponent(s)))));
        const shown = redactedUrl(url);
        assert.ok(shown.startsWith('https://mcp.example.com/v1/mcp?'), shown);
        for (const s of [key, other, encodeURIComponent(key), encodeURIComponent(other)]) assert.ok(!shown.includes(s), `${s} in ${shown}`);
        assert.match(shown, new RegExp(`[?&]${name}=\\[REDACTED\\]`));
      }),
      { numRuns: 500 },
    );
  });

  test('scrubber removes query and header values from any text, raw or encoded, however they are spelt in the URL', () => {
    fc.assert(
      fc.property(secret, secret, fc.boolean(), fc.string({ maxLength: 30 }), fc.string({ maxLength: 30 }), (key, token, rawInUrl, before, after) => {
        const inUrl = rawInUrl ? key.replace(/[&#=%\s]/g, '') : encodeURIComponent(key);
        fc.pre(inUrl.length >= 6 && !before.includes('%') && !after.includes('%'));
        const server = { transport: 'http' as const, era: 'auto' as const, url: `https://mcp.example.com/mcp?api_key=${inUrl}`, headers: { Authorization: `Bearer ${token}` } };
        const scrub = scrubber(server);
        const value = new URL(server.url).searchParams.get('api_key')!;
        for (const quoted of [value, encodeURIComponent(value), inUrl, token, `Bearer ${token}`, server.url]) {
          const out = scrub(`${before}${quoted}${after}`);
          assert.ok(!out.includes(value) || before.includes(value) || after.includes(value), `${quoted} survived: ${out}`);
          assert.ok(out.includes('[REDACTED]'), out);
        }
      }),
      { numRuns: 500 },
    );
  });

  test('short values ("1", "json") are left alone: they are no secrets and erasing them garbles the log', () => {
    const scrub = scrubber({ transport: 'http', era: 'auto', url: 'https://mcp.example.com/mcp?v=1&format=json&api_key=sk_live_abcdef', headers: {} });
    assert.equal(scrub('v1 returned json for sk_live_abcdef'), 'v1 returned json for [REDACTED]');
  });
});
