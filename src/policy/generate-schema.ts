// Writes schema/policy.schema.json and schema/policy-test.schema.json from the zod schemas, for
// editors (e.g. `# yaml-language-server: $schema=…`). Run: npx tsx src/policy/generate-schema.ts
import { mkdirSync, writeFileSync } from 'node:fs';
import { policyJsonSchema, policyTestJsonSchema } from './schema.js';

const dir = new URL('../../schema/', import.meta.url);
mkdirSync(dir, { recursive: true });
writeFileSync(new URL('policy.schema.json', dir), JSON.stringify(policyJsonSchema(), null, 2) + '\n');
writeFileSync(new URL('policy-test.schema.json', dir), JSON.stringify(policyTestJsonSchema(), null, 2) + '\n');
process.stdout.write('wrote schema/policy.schema.json and schema/policy-test.schema.json\n');
