// Newline-delimited input (MCP's stdio framing, JSON Lines) split the way the MCP SDK splits it:
// at "\n" only, a "\r" just before it dropped. Not node:readline: it also ends a line at a lone
// "\r" and, since Node 24, at U+2028 and U+2029, which JSON.stringify leaves raw inside strings,
// so a valid message would arrive cut in two, and framed unlike the SDK on the other side.
import { EventEmitter } from 'node:events';
import { StringDecoder } from 'node:string_decoder';

/** Cuts decoded text into lines; what follows the last "\n" waits for the next chunk. */
class Splitter {
  #tail = '';

  push(text: string): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', start)) {
      lines.push(withoutCr(this.#tail + text.slice(start, i)));
      this.#tail = '';
      start = i + 1;
    }
    this.#tail += text.slice(start);
    return lines;
  }

  /** The last line when the input ends without a "\n" after it. */
  end(): string[] {
    const tail = this.#tail;
    this.#tail = '';
    return tail === '' ? [] : [withoutCr(tail)];
  }
}

const withoutCr = (line: string) => (line.endsWith('\r') ? line.slice(0, -1) : line);

export interface LineReader extends EventEmitter {
  /** Stops reading (the input is paused) and emits 'close'. */
  close(): void;
}

/**
 * Emits 'line' for every line of `input`, then 'close' once: when the input ends (after its
 * unterminated last line, if any) or fails, or on close(). No line is emitted after 'close'.
 */
export function readLines(input: NodeJS.ReadableStream): LineReader {
  const decoder = new StringDecoder('utf8');
  const splitter = new Splitter();
  let closed = false;
  const emit = (lines: string[]) => {
    for (const line of lines) if (!closed) reader.emit('line', line);
  };
  const onData = (chunk: Buffer | string) => emit(splitter.push(typeof chunk === 'string' ? chunk : decoder.write(chunk)));
  const onEnd = () => {
    emit(splitter.push(decoder.end()));
    emit(splitter.end());
    close();
  };
  const close = () => {
    if (closed) return;
    closed = true;
    input.off('data', onData);
    input.off('end', onEnd);
    input.pause();
    reader.emit('close');
  };
  const reader: LineReader = Object.assign(new EventEmitter(), { close });
  input.on('data', onData);
  input.once('end', onEnd);
  input.on('error', close); // a broken pipe ends the input like its end does; kept: a later error is no crash
  return reader;
}

/** The lines of a readable (a file's stream), for `for await`. */
export async function* linesOf(input: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  const splitter = new Splitter();
  for await (const chunk of input) yield* splitter.push(typeof chunk === 'string' ? chunk : decoder.write(chunk));
  yield* splitter.push(decoder.end());
  yield* splitter.end();
}
