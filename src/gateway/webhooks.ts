// Approval webhooks: a JSON POST per approval event (requested, approved, denied, expired,
// cancelled) to each configured URL, with a Slack-compatible `text`. Signed when the webhook has
// a secret: `X-Portcullis-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the
// timestamp in `X-Portcullis-Timestamp`, so a receiver can check origin and freshness. Retried
// with backoff; never awaited by the request it is about, so a failing receiver delays nothing.
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { ApprovalRecord } from '../store/store.js';

export interface Webhook {
  url: string;
  headers: Record<string, string>;
  secret?: string;
}

/** Attempts per event, and the wait before each retry (ms). */
const BACKOFF_MS = [1_000, 5_000, 25_000];
const TIMEOUT_MS = 10_000;

export function webhookPayload(event: string, a: ApprovalRecord, adminUrl?: string): Record<string, unknown> {
  const what = a.tool !== undefined ? `call ${a.tool}` : a.resource !== undefined ? `read ${a.resource}` : a.prompt !== undefined ? `get prompt ${a.prompt}` : a.method;
  const text =
    event === 'approval.requested'
      ? `${a.requester.sub} asks to ${what} on ${a.server} (rule ${a.rule}). Approve or deny before ${a.expiresAt}: portcullis approvals approve ${a.id}${adminUrl ? ` --url ${adminUrl}` : ''}`
      : `Approval ${a.id} (${a.requester.sub}: ${what} on ${a.server}) is ${a.status}${a.decidedBy ? ` by ${a.decidedBy}` : ''}${a.reason ? `: ${a.reason}` : ''}`;
  return {
    event,
    text,
    approval: { id: a.id, status: a.status, requester: { sub: a.requester.sub, groups: a.requester.groups }, server: a.server, method: a.method, tool: a.tool, resource: a.resource, prompt: a.prompt, args: a.args, rule: a.rule, createdAt: a.createdAt, expiresAt: a.expiresAt, decidedAt: a.decidedAt, decidedBy: a.decidedBy, reason: a.reason },
    ...(adminUrl && { links: { approve: `${adminUrl}/admin/v1/approvals/${a.id}/approve`, deny: `${adminUrl}/admin/v1/approvals/${a.id}/deny` } }),
  };
}

/** The signature header value for a body sent at `timestamp` (seconds): what receivers recompute. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export function notifyWebhooks(hooks: Webhook[], event: string, approval: ApprovalRecord, adminUrl: string | undefined, log: Logger): void {
  if (!hooks.length) return;
  const body = JSON.stringify(webhookPayload(event, approval, adminUrl));
  for (const hook of hooks) void deliver(hook, body, log, event, approval.id);
}

async function deliver(hook: Webhook, body: string, log: Logger, event: string, id: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const timestamp = String(Math.floor(Date.now() / 1000));
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'portcullis', ...hook.headers, 'x-portcullis-event': event, 'x-portcullis-timestamp': timestamp };
    if (hook.secret) headers['x-portcullis-signature'] = webhookSignature(hook.secret, timestamp, body);
    let problem: string;
    try {
      const res = await fetch(hook.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(TIMEOUT_MS) });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) return;
      problem = `HTTP ${res.status}`;
    } catch (e) {
      problem = (e as Error).message;
    }
    const wait = BACKOFF_MS[attempt];
    if (wait === undefined) return void log.error({ webhook: new URL(hook.url).origin, event, approvalId: id, err: problem }, 'approval webhook failed; giving up');
    log.warn({ webhook: new URL(hook.url).origin, event, approvalId: id, err: problem, retryInMs: wait }, 'approval webhook failed; retrying');
    await new Promise((r) => setTimeout(r, wait).unref());
  }
}
