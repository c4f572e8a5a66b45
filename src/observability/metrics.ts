// Prometheus metrics, one registry per gateway so several gateways in one process (tests) do not collide.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({ name: 'portcullis_requests_total', help: 'Client requests by server, method and decision effect', labelNames: ['server', 'method', 'effect'] as const, registers: [registry] }),
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
