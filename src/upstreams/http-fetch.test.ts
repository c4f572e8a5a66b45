import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { upstreamFetch } from './http-fetch.js';

describe('upstreamFetch', () => {
  let server: Server;
  let base: string;
  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (req.url === '/accepted') return void res.writeHead(202).end();
        if (req.url === '/never') return; // holds the request open
        if (req.url === '/stream') {
          res.writeHead(200, { 'content-type': 'text/event-stream', 'mcp-session-id': 'abc' });
          res.write('data: one\n\n');
          return void setTimeout(() => res.end('data: two\n\n'), 20);
        }
        res.writeHead(201, { 'content-type': 'application/json', 'x-seen-auth': req.headers.authorization ?? '' });
        res.end(JSON.stringify({ method: req.method, body }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('sends the method, headers and body, and answers like fetch', async () => {
    const res = await upstreamFetch(`${base}/echo`, { method: 'POST', headers: new Headers({ authorization: 'Bearer upstream' }), body: '{"a":1}' });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('x-seen-auth'), 'Bearer upstream');
    assert.deepEqual(await res.json(), { method: 'POST', body: '{"a":1}' });
  });

  it('streams a body as it arrives, and answers a bodyless 202', async () => {
    const res = await upstreamFetch(`${base}/stream`);
    assert.equal(res.headers.get('mcp-session-id'), 'abc');
    assert.equal(await res.text(), 'data: one\n\ndata: two\n\n');
    const accepted = await upstreamFetch(`${base}/accepted`, { method: 'POST', body: '{}' });
    assert.equal(accepted.status, 202);
    assert.equal(await accepted.text(), '');
  });

  it('leaves no listener on a long-lived signal after each request (no leak across a session)', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 50; i++) await (await upstreamFetch(`${base}/echo`, { method: 'POST', body: String(i), signal: controller.signal })).text();
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
  });

  it('an abort ends a request in flight with an error; an aborted signal sends nothing', async () => {
    const controller = new AbortController();
    const pending = upstreamFetch(`${base}/never`, { method: 'POST', body: '{}', signal: controller.signal });
    setTimeout(() => controller.abort(new Error('session closed')), 20);
    await assert.rejects(pending, /session closed/);
    await assert.rejects(upstreamFetch(`${base}/echo`, { signal: AbortSignal.abort(new Error('already')) }), /already/);
  });

  it('refuses what it cannot send', async () => {
    await assert.rejects(upstreamFetch('ftp://127.0.0.1/x'), /unsupported protocol/);
    await assert.rejects(upstreamFetch(`${base}/echo`, { method: 'POST', body: new Blob(['x']) }), /string or byte bodies/);
    await assert.rejects(upstreamFetch('http://127.0.0.1:1/x'), /ECONNREFUSED/);
  });
});
