// Types for the Prometheus text-format parser the metrics tests use (the package ships none).
declare module 'parse-prometheus-text-format' {
  export interface MetricFamily {
    name: string;
    help: string;
    type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
    metrics: Array<{ value?: string; labels: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }>;
  }
  export default function parse(text: string): MetricFamily[];
}
