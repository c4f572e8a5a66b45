import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import { linesOf, readLines } from './lines.js';

/** Feeds chunks to readLines; resolves with the lines emitted before 'close'. */
async function read(chunks: (Buffer | string)[]): Promise<string[]> {
  const input = new PassThrough();
  const reader = readLines(input);
  const lines: string[] = [];
  reader.on('line', (l: string) => lines.push(l));
  const closed = once(reader, 'close');
  for (const c of chunks) input.write(c);
  input.end();
  await closed;
  return lines;
}

const collect = async (chunks: (Buffer | string)[]) => {
  const lines: string[] = [];
  for await (const l of linesOf(Readable.from(chunks))) lines.push(l);
  return lines;
};

test('a line ends at "\\n" only: U+2028, U+2029 and a lone "\\r" are text; "\\r\\n" is an end', async () => {
  const input = 'a\u2028b\u2029c\rd\r\ne\n{"s":"\u2028"}\n';
  const want = ['a\u2028b\u2029c\rd', 'e', '{"s":"\u2028"}'];
  assert.deepEqual(await read([input]), want);
  assert.deepEqual(await collect([input]), want);
  // what JSON.stringify writes for a string holding them is one line
  const message = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping', params: { s: '\u2028\u2029' } });
  assert.deepEqual(await read([`${message}\n`]), [message]);
});

test('the last line counts without a "\\n"; empty lines are lines; nothing is emitted for a trailing "\\n"', async () => {
  assert.deepEqual(await read(['x\n\ny']), ['x', '', 'y']);
  assert.deepEqual(await read(['x\n']), ['x']);
  assert.deepEqual(await read([]), []);
  assert.deepEqual(await collect(['x\n\ny']), ['x', '', 'y']);
});

test('property: any lines, joined by "\\n" or "\\r\\n" and cut into chunks anywhere (inside a character too), come back as they were', async () => {
  const line = fc.string({ unit: fc.constantFrom('a', '{', '"', ' ', '\r', '\u2028', '\u2029', 'é', '😀', '\u0085') }).filter((l) => !l.endsWith('\r'));
  await fc.assert(
    fc.asyncProperty(fc.array(line, { minLength: 1, maxLength: 8 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 6 }), async (lines, crlf, cuts) => {
      const bytes = Buffer.from(lines.join(crlf ? '\r\n' : '\n') + '\n');
      const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      const chunks = [0, ...at].map((from, i) => bytes.subarray(from, [...at, bytes.length][i]));
      assert.deepEqual(await read(chunks), lines);
      assert.deepEqual(await collect(chunks), lines);
    }),
  );
});

test('close(): no line after it, "close" once, the input paused', async () => {
  const input = new PassThrough();
  const reader = readLines(input);
  const lines: string[] = [];
  let closes = 0;
  reader.on('close', () => closes++);
  reader.on('line', (l: string) => {
    lines.push(l);
    if (l === 'stop') reader.close();
  });
  input.write('a\nstop\nafter\n');
  input.write('more\n');
  input.end('tail');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(lines, ['a', 'stop']);
  assert.equal(closes, 1);
  assert.equal(input.isPaused(), true);
});

test('an input error ends the reader like its end', async () => {
  const input = new PassThrough();
  const reader = readLines(input);
  const closed = once(reader, 'close');
  input.destroy(new Error('EPIPE'));
  await closed;
});
