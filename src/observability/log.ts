// Logs: JSON lines (pino) for machines; in a terminal, one readable line per record. Under `wrap`,
// stdout carries the MCP protocol, so logs go to stderr.
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger } from 'pino';

export type LogFormat = 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];

/**
 * Lines are buffered and written in batches: at 4 KiB, and at the latest every 100 ms (and on
 * exit, pino flushes synchronously). One write per request line cost more CPU than the line.
 */
const BUFFER_BYTES = 4096;
const FLUSH_MS = 100;

/** `format` defaults to pretty when the destination is a terminal, else JSON. */
export function createLogger(level: string, toStderr = false, format?: LogFormat): Logger {
  const fd = toStderr ? 2 : 1;
  const destination = pino.destination({ fd, sync: false, minLength: BUFFER_BYTES, periodicFlush: FLUSH_MS });
  const pretty = format ? format === 'pretty' : isatty(fd);
  return pino({ level, base: { service: 'portcullis' }, timestamp: pino.stdTimeFunctions.isoTime }, pretty ? prettyStream(destination, isatty(fd)) : destination);
}

const LEVELS: Record<number, [string, string]> = {
  10: ['TRACE', '90'],
  20: ['DEBUG', '36'],
  30: ['INFO ', '32'],
  40: ['WARN ', '33'],
  50: ['ERROR', '31'],
  60: ['FATAL', '35'],
};
const OMIT = new Set(['level', 'time', 'msg', 'service', 'pid', 'hostname']);

/** `10:41:02 INFO  session started  session=… server=files sub=alice`. */
export function prettyLine(json: string, colour = false): string {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const [name, code] = LEVELS[r.level as number] ?? [String(r.level), '0'];
  const level = colour ? `\x1b[${code}m${name}\x1b[0m` : name;
  const time = typeof r.time === 'string' ? r.time.slice(11, 19) : '';
  const fields = Object.entries(r)
    .filter(([k]) => !OMIT.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return `${time} ${level} ${r.msg ?? ''}${fields.length ? `  ${fields.join(' ')}` : ''}\n`;
}

type Flushable = DestinationStream & { flush?: (cb?: (e?: Error) => void) => void };

function prettyStream(destination: Flushable, colour: boolean): Flushable {
  return {
    write: (line: string) => destination.write(prettyLine(line, colour)),
    flush: (cb) => (destination.flush ? destination.flush(cb) : cb?.()),
  };
}

export type { Logger };
