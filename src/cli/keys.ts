// `portcullis keys new`: mints an API key. The key is printed once and stored nowhere; the config
// gets only its SHA-256, so neither the config file nor its git history can leak it.
import type { Command } from 'commander';
import { generateApiKey, hashApiKey } from '../auth/api-keys.js';
import { PortcullisError } from '../errors.js';

export interface NewKey {
  key: string;
  entry: { id: string; sha256: string; sub?: string; groups: string[] };
}

export function newApiKey(id: string, groups: string[] = [], sub?: string): NewKey {
  if (!id.trim()) throw new PortcullisError('PCL_USAGE', '--id must not be empty');
  const key = generateApiKey();
  return { key, entry: { id, sha256: hashApiKey(key), ...(sub ? { sub } : {}), groups } };
}

/** One YAML flow mapping; JSON strings are valid YAML scalars, so any id or group is quoted safely. */
export function configLine(entry: NewKey['entry']): string {
  const parts = [`id: ${JSON.stringify(entry.id)}`, `sha256: "${entry.sha256}"`];
  if (entry.sub) parts.push(`sub: ${JSON.stringify(entry.sub)}`);
  parts.push(`groups: [${entry.groups.map((g) => JSON.stringify(g)).join(', ')}]`);
  return `- { ${parts.join(', ')} }`;
}

export function register(program: Command): void {
  const keys = program.command('keys').description('manage API keys for service accounts');
  keys
    .command('new')
    .description('print a fresh random API key and the auth.apiKeys entry holding its SHA-256')
    .requiredOption('--id <name>', 'key id (also the identity sub unless --sub is given)')
    .option('--groups <a,b>', 'comma-separated groups for policy', '')
    .option('--sub <sub>', 'identity sub (default: the id)')
    .option('--json', 'print {key, entry} as JSON')
    .action((o: { id: string; groups: string; sub?: string; json?: boolean }) => {
      const groups = o.groups.split(',').map((g) => g.trim()).filter(Boolean);
      const made = newApiKey(o.id, groups, o.sub);
      if (o.json) {
        process.stdout.write(`${JSON.stringify(made)}\n`);
        return;
      }
      process.stdout.write(
        `# API key for ${o.id}: shown once, stored nowhere. Give it to the client as Authorization: Bearer <key>\n` +
          `${made.key}\n` +
          `# Add under auth.apiKeys in portcullis.yaml:\n` +
          `${configLine(made.entry)}\n`,
      );
    });
}
