// The version in the package's package.json, for --version and the clientInfo the gateway names itself by.
import { readFileSync } from 'node:fs';

/** The version in the package's package.json: the nearest one up from here (src/cli, dist/cli, or a benchmark's build). */
export function packageVersion(): string {
  return (version ??= readVersion());
}

let version: string | undefined;

function readVersion(): string {
  for (let dir = new URL('./', import.meta.url); ; dir = new URL('../', dir)) {
    try {
      const p = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string };
      if (p.name === 'portcullis' && p.version) return p.version;
    } catch {
      // no package.json here: keep going up
    }
    if (new URL('../', dir).href === dir.href) return 'unknown';
  }
}
