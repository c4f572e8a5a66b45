// The fetch the SDK's SSE client transport (legacy `sse` upstreams) uses to reach upstreams:
// node:http(s) with keep-alive agents under the same Request/Response interface. Measured here against the global fetch
// (undici), it costs about 400 µs less CPU per call, and it removes its abort listener when a
// request ends: undici's leaves one on the transport's long-lived AbortSignal for every request,
// which a gateway session would carry for its whole life.
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';

const agents: Record<string, HttpAgent> = { 'http:': new HttpAgent({ keepAlive: true }), 'https:': new HttpsAgent({ keepAlive: true }) };
/** Statuses whose responses carry no body (a Response refuses one). */
const NO_BODY = new Set([204, 205, 304]);

export function upstreamFetch(input: string | URL, init: RequestInit = {}): Promise<Response> {
  const url = new URL(String(input));
  const agent = agents[url.protocol];
  if (!agent) return Promise.reject(new TypeError(`unsupported protocol ${url.protocol}`));
  const signal = init.signal ?? undefined;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const body = init.body ?? undefined;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    return Promise.reject(new TypeError('upstreamFetch sends string or byte bodies only'));
  }
  // The SDK passes a Headers object: read it as it is rather than copying it into another one.
  const headers: Record<string, string> = {};
  const given = init.headers instanceof Headers ? init.headers : new Headers(init.headers);
  for (const [name, value] of given) headers[name] = value;
  const method = init.method ?? 'GET';

  return new Promise<Response>((resolve, reject) => {
    const onAbort = () => req.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    const done = () => signal?.removeEventListener('abort', onAbort);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { method, headers, agent }, (res) => {
      const responseHeaders = new Headers();
      for (let i = 0; i < res.rawHeaders.length; i += 2) responseHeaders.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
      const status = res.statusCode ?? 502;
      const bodyless = NO_BODY.has(status) || method === 'HEAD';
      res.once('close', done);
      res.on('error', () => undefined); // surfaces through the body stream
      if (bodyless) res.resume();
      resolve(new Response(bodyless ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), { status, statusText: res.statusMessage, headers: responseHeaders }));
    });
    req.on('error', (e) => {
      done();
      reject(e);
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    req.end(body);
  });
}
