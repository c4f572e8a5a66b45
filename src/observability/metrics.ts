// Prometheus metrics, one registry per gateway so several gateways in one process (tests) do not collide.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface AuditHealth {
  healthy(): boolean;
  lastError(): Error | undefined;
  stats(): { appended: number; failed: number; lastSeq: number; pending: number; oldestPendingMs: number };
}

export interface RecorderHealth {
  stats(): { written: number; dropped: number; truncated: number };
}

/** Audit and recording health, read when Prometheus scrapes (no work on the request path). */
export function registerAuditMetrics(registry: Registry, audit?: AuditHealth, recorder?: RecorderHealth): void {
  if (audit) {
    new Gauge({ name: 'portcullis_audit_healthy', help: '1 while audit records are being written, 0 after a failed write (requests are then refused)', registers: [registry], collect() { this.set(audit.healthy() ? 1 : 0); } });
    new Gauge({ name: 'portcullis_audit_records_appended', help: 'Audit records durably appended by this process', registers: [registry], collect() { this.set(audit.stats().appended); } });
    new Gauge({ name: 'portcullis_audit_write_failures', help: 'Audit appends that failed (their requests were refused)', registers: [registry], collect() { this.set(audit.stats().failed); } });
    new Gauge({ name: 'portcullis_audit_pending', help: 'Audit appends waiting to be written', registers: [registry], collect() { this.set(audit.stats().pending); } });
    new Gauge({ name: 'portcullis_audit_oldest_pending_seconds', help: 'Age of the oldest audit append still waiting (a stalled store shows here first)', registers: [registry], collect() { this.set(audit.stats().oldestPendingMs / 1000); } });
    new Gauge({ name: 'portcullis_audit_last_seq', help: 'Sequence number of the last audit record', registers: [registry], collect() { this.set(audit.stats().lastSeq); } });
  }
  if (recorder) {
    new Gauge({ name: 'portcullis_recordings_written', help: 'Session messages written to the store', registers: [registry], collect() { this.set(recorder.stats().written); } });
    new Gauge({ name: 'portcullis_recordings_dropped', help: 'Session messages dropped after the store kept failing', registers: [registry], collect() { this.set(recorder.stats().dropped); } });
  }
}

/**
 * The request methods MCP defines (2024-11-05 to 2026-07-28), client and server side. Label values
 * come from this closed set: a client that sends a million made-up methods must not make a
 * million series (Prometheus keeps every one in memory until it restarts).
 */
export const METHOD_LABELS: ReadonlySet<string> = new Set([
  'initialize',
  'ping',
  'server/discover',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'resources/subscribe',
  'resources/unsubscribe',
  'prompts/list',
  'prompts/get',
  'completion/complete',
  'logging/setLevel',
  'tasks/get',
  'tasks/list',
  'tasks/result',
  'tasks/cancel',
  'sampling/createMessage',
  'elicitation/create',
  'roots/list',
]);

/** A method as a metric label: itself when MCP defines it, else "other". */
export function methodLabel(method: string): string {
  return METHOD_LABELS.has(method) ? method : 'other';
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({ name: 'portcullis_requests_total', help: 'Client requests by server, method (MCP methods; any other is "other") and decision effect', labelNames: ['server', 'method', 'effect'] as const, registers: [registry] }),
    latency: new Histogram({
      name: 'portcullis_request_duration_seconds',
      help: 'Time from a client request reaching the pipeline to its reply',
      labelNames: ['server'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    }),
    sessions: new Gauge({ name: 'portcullis_sessions', help: 'Open sessions', labelNames: ['server'] as const, registers: [registry] }),
    upstreamFailures: new Counter({ name: 'portcullis_upstream_failures_total', help: 'Upstreams that could not start or ended a session', labelNames: ['server'] as const, registers: [registry] }),
    refusals: new Counter({ name: 'portcullis_http_refusals_total', help: 'HTTP requests refused before reaching a session', labelNames: ['status'] as const, registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
