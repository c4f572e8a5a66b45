// Server-Sent Events read straight from a socket's chunks (the WHATWG event stream
// interpretation): lines end in CRLF, LF or CR, `data:` lines accumulate into one event, `id:`
// and `retry:` are remembered for reconnecting, comments and unknown fields are ignored. No web
// streams and no copy of a line beyond the one slice that ends it.
import { StringDecoder } from 'node:string_decoder';

export class SseTooLarge extends Error {
  override name = 'SseTooLarge';
}

export class SseParser {
  /** The id of the last event dispatched (the Last-Event-ID to resume after); undefined before any, or after an empty `id:`. */
  lastEventId: string | undefined;
  /** The reconnection delay the server last asked for, in ms. */
  retryMs: number | undefined;
  private readonly decoder = new StringDecoder('utf8');
  /** The start of a line that has not ended yet, in pieces (a long line arrives in many chunks). */
  private partial: string[] = [];
  private partialLength = 0;
  private data: string[] = [];
  private dataLength = 0;
  private eventType = '';
  private idBuffer: string | undefined;
  /** The previous chunk ended in CR: an LF opening this one belongs to the same line end. */
  private afterCR = false;
  private started = false;

  /**
   * `onEvent` gets each event with data, `type` being "message" unless an `event:` line said
   * otherwise. An event (or a line) over `maxEventChars` makes push() throw SseTooLarge: the
   * stream cannot be resynchronised and must be dropped.
   */
  constructor(
    private readonly onEvent: (data: string, type: string) => void,
    private readonly maxEventChars: number,
  ) {}

  push(chunk: Buffer): void {
    let s = this.decoder.write(chunk);
    if (!this.started && s.length > 0) {
      this.started = true;
      if (s.charCodeAt(0) === 0xfeff) s = s.slice(1); // a byte order mark opening the stream is no content
    }
    this.feed(s);
  }

  /** The stream ended: an event not closed by a blank line is dropped (as the standard says). */
  end(): void {
    this.decoder.end();
    this.partial = [];
    this.partialLength = 0;
    this.data = [];
    this.dataLength = 0;
  }

  private feed(s: string): void {
    if (s.length === 0) return; // the decoder holds an incomplete character
    let start = 0;
    if (this.afterCR) {
      this.afterCR = false;
      if (s.charCodeAt(0) === 10) start = 1;
    }
    const n = s.length;
    let lf = s.indexOf('\n', start);
    let cr = s.indexOf('\r', start);
    while (lf !== -1 || cr !== -1) {
      const end = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
      let line = s.slice(start, end);
      if (this.partialLength > 0) {
        this.partial.push(line);
        line = this.partial.join('');
        this.partial = [];
        this.partialLength = 0;
      }
      this.line(line);
      start = end + 1;
      if (end === cr) {
        if (start === n) this.afterCR = true;
        else if (s.charCodeAt(start) === 10) start++;
      }
      if (lf !== -1 && lf < start) lf = s.indexOf('\n', start);
      if (cr !== -1 && cr < start) cr = s.indexOf('\r', start);
    }
    if (start < n) {
      this.partialLength += n - start;
      if (this.partialLength + this.dataLength > this.maxEventChars) throw new SseTooLarge(`an event stream line over ${this.maxEventChars} characters`);
      this.partial.push(start === 0 ? s : s.slice(start));
    }
  }

  private line(line: string): void {
    if (line.length === 0) return this.dispatch();
    if (line.charCodeAt(0) === 58) return; // ":" opens a comment (keep-alives)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(line.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1);
    switch (field) {
      case 'data':
        this.dataLength += value.length + 1;
        if (this.dataLength > this.maxEventChars) throw new SseTooLarge(`an event over ${this.maxEventChars} characters`);
        this.data.push(value);
        break;
      case 'event':
        this.eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.idBuffer = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retryMs = Number(value);
        break;
    }
  }

  private dispatch(): void {
    this.lastEventId = this.idBuffer || undefined;
    const { data, eventType } = this;
    this.data = [];
    this.dataLength = 0;
    this.eventType = '';
    if (data.length === 0) return;
    const text = data.length === 1 ? data[0] : data.join('\n');
    // An empty data field primes a stream with its id: nothing to deliver.
    if (text !== '') this.onEvent(text, eventType || 'message');
  }
}
