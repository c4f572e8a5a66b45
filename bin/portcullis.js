#!/usr/bin/env node
// The installed command runs the compiled JavaScript in dist/ (built by `npm run build`, and by
// `npm pack` before packing). In a clone, `npm start` and the tests run the TypeScript sources.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('portcullis: dist/ is missing: run `npm run build` in this checkout first\n');
  process.exit(1);
}
await import(main.href);
