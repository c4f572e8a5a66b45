// A recorded session as a timeline people can read: time offset, direction, method (or what a
// response answers), the decision when known, and a one-line summary of the message.
import type { RecordedMessage } from '../store/store.js';

const SUMMARY_CHARS = 100;

export function formatTimeline(sessionId: string, messages: RecordedMessage[]): string[] {
  if (!messages.length) return [`session ${sessionId}: no recorded messages`];
  const t0 = messages[0].ts;
  const first = messages[0];
  const lines = [
    `session ${sessionId}  server ${first.server}  sub ${first.sub ?? '-'}  started ${new Date(t0).toISOString()}  ${messages.length} messages`,
  ];
  // Responses name their request's method, found by id in the other direction.
  const methodById = new Map<string, string>();
  for (const m of messages) {
    const offset = `+${((m.ts - t0) / 1000).toFixed(3)}s`.padStart(10);
    const arrow = m.direction === 'fromClient' ? '→' : '←';
    let msg: Record<string, unknown> | undefined;
    try {
      msg = m.truncatedFrom === null ? (JSON.parse(m.body) as Record<string, unknown>) : undefined;
    } catch {
      msg = undefined;
    }
    if (m.method && m.messageId !== null) methodById.set(`${m.direction}:${m.messageId}`, m.method);
    const other = m.direction === 'fromClient' ? 'toClient' : 'fromClient';
    const answered = m.method === null && m.messageId !== null ? methodById.get(`${other}:${m.messageId}`) : undefined;
    const what = m.method ?? (answered ? `${answered} response` : m.messageId !== null ? 'response' : 'message');
    const id = m.messageId !== null ? ` #${m.messageId.replace(/^"|"$/g, '')}` : '';
    const decision = m.decision ? ` [${describeDecision(m.decision)}]` : '';
    const summary = msg ? summarize(msg) : m.truncatedFrom !== null ? `(truncated from ${m.truncatedFrom} bytes) ${clip(m.body)}` : clip(m.body);
    lines.push(`${offset}  ${arrow} ${what}${id}${decision}${summary ? `  ${summary}` : ''}`);
  }
  return lines;
}

function describeDecision(json: string): string {
  try {
    const d = JSON.parse(json) as { effect?: string; rule?: string };
    return `${d.effect ?? '?'} ${d.rule ?? ''}`.trim();
  } catch {
    return json;
  }
}

function summarize(msg: Record<string, unknown>): string {
  const params = (msg.params ?? {}) as Record<string, unknown>;
  if (typeof msg.method === 'string') {
    if (msg.method === 'tools/call') return `${String(params.name)} ${clip(JSON.stringify(params.arguments ?? {}))}`;
    if (msg.method === 'resources/read' || msg.method.startsWith('resources/')) return params.uri ? String(params.uri) : '';
    if (msg.method === 'prompts/get') return String(params.name ?? '');
    if (msg.method === 'initialize') {
      const info = params.clientInfo as { name?: string; version?: string } | undefined;
      return `${info?.name ?? ''} ${info?.version ?? ''} protocol ${String(params.protocolVersion ?? '?')}`.trim();
    }
    return Object.keys(params).length ? clip(JSON.stringify(params)) : '';
  }
  if (msg.error && typeof msg.error === 'object') {
    const e = msg.error as { code?: unknown; message?: unknown };
    return `error ${String(e.code)} ${String(e.message ?? '')}`;
  }
  const result = msg.result as Record<string, unknown> | undefined;
  if (result && typeof result === 'object') {
    if (Array.isArray(result.content)) {
      const texts = (result.content as { type?: string; text?: string }[]).map((c) => (c.type === 'text' ? (c.text ?? '') : `[${c.type}]`));
      return `${result.isError ? 'tool error: ' : ''}${clip(texts.join(' '))}`;
    }
    if (Array.isArray(result.tools)) return `${result.tools.length} tools`;
    if (Array.isArray(result.resources)) return `${result.resources.length} resources`;
    if (Array.isArray(result.prompts)) return `${result.prompts.length} prompts`;
    return clip(JSON.stringify(result));
  }
  return '';
}

function clip(text: string): string {
  const oneLine = text.replace(/\s+/g, ' ');
  return oneLine.length > SUMMARY_CHARS ? `${oneLine.slice(0, SUMMARY_CHARS - 1)}…` : oneLine;
}
