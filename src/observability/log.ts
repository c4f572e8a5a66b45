// Structured JSON logs (pino). Under `wrap`, stdout carries the MCP protocol, so logs go to stderr.
import { pino, type Logger } from 'pino';

export function createLogger(level: string, toStderr = false): Logger {
  return pino({ level, base: { service: 'portcullis' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: toStderr ? 2 : 1, sync: false }));
}

export type { Logger };
