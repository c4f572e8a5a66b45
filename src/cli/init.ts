import type { Command } from 'commander';
import { cpSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PortcullisError } from '../errors.js';
import { configLine, newApiKey } from './keys.js';

// src/cli when run from sources, dist/cli when built: the examples sit at the package root.
const EXAMPLES = resolve(dirname(fileURLToPath(import.meta.url)), '../../examples/policies');

/** The upstreams of the starter, pinned: `npx -y` runs exactly these releases, never a newer one unreviewed. */
const SERVERS = `servers:
  files:                      # a filesystem server confined to ./data/files (init made it)
    transport: stdio
    command: npx
    args: ["-y", "@modelcontextprotocol/server-filesystem@2026.8.31", "./data/files"]
  everything:                 # the MCP reference server
    transport: stdio
    command: npx
    args: ["-y", "@modelcontextprotocol/server-everything@2026.8.31", "stdio"]`;

function starter(auth: string): string {
  return `# Portcullis configuration: see the README for every field. Paths are relative to this file.
listen:
  host: 127.0.0.1
  port: 8080
${SERVERS}
auth:
${auth}
  # oidc: { issuer: https://idp.example.com, audience: portcullis, groupsClaim: groups }
policy:
  path: ./policies
store:
  url: sqlite:./data/portcullis.db
`;
}

interface InitOptions {
  keyId: string;
  anonymous?: boolean;
}

export function register(program: Command): void {
  program
    .command('init')
    .description('write a starter portcullis.yaml, a policies/ folder with example policies and tests, the data/ folder, and a first API key')
    .argument('[dir]', 'where to write them', '.')
    .option('--key-id <id>', 'id (and identity) of the first API key', 'developer')
    .option('--anonymous', 'no API key: every caller is "anonymous" (the gateway stays on 127.0.0.1)')
    .action((dir: string, o: InitOptions) => {
      const config = join(dir, 'portcullis.yaml');
      const policies = join(dir, 'policies');
      const files = join(dir, 'data', 'files');
      for (const p of [config, policies]) if (existsSync(p)) throw new PortcullisError('PCL_USAGE', `${p} already exists; init writes only new files`);
      const key = o.anonymous ? undefined : newApiKey(o.keyId);
      const auth = key
        ? `  anonymous: false\n  apiKeys:             # more with: portcullis keys new --id <name>\n    ${configLine(key.entry)}`
        : `  anonymous: true      # every caller is {sub: anonymous}: for a gateway on 127.0.0.1 only\n  apiKeys: []          # add one with: portcullis keys new --id <name>`;
      mkdirSync(files, { recursive: true });
      writeFileSync(config, starter(auth));
      cpSync(EXAMPLES, policies, { recursive: true });
      if (!existsSync(join(files, 'README.txt'))) writeFileSync(join(files, 'README.txt'), 'Files the "files" server may read (policy decides which tools may touch them).\n');

      const out: string[] = [`wrote ${config}`, ...readdirSync(policies).map((f) => `wrote ${join(policies, f)}`), `made ${files}${sep}`];
      const pcl = invokedAs();
      const auth_ = key ? ` --header "Authorization: Bearer ${key.key}"` : '';
      if (key) {
        out.push(
          '',
          `API key "${key.entry.id}", shown once and stored nowhere (portcullis.yaml holds only its SHA-256):`,
          `  ${key.key}`,
          'Clients send it as the header  Authorization: Bearer <key>',
        );
      } else {
        out.push('', 'WARNING: auth.anonymous is true: anyone who can reach the gateway is "anonymous". Keep listen.host on 127.0.0.1, or add keys (portcullis keys new).');
      }
      out.push(
        '',
        `next: ${pcl} lint -c ${config} && ${pcl} test ${policies} && ${pcl} serve -c ${config}`,
        `then, e.g. Claude Code: claude mcp add --transport http files http://127.0.0.1:8080/mcp/files${auth_}`,
        '',
      );
      process.stdout.write(out.join('\n'));
    });
}

/**
 * How the user reaches this command again: through npx when installed in a project's node_modules,
 * with --no-install so that npx never fetches a package of that name from the registry instead.
 */
function invokedAs(): string {
  return (process.argv[1] ?? '').split(/[\\/]/).includes('node_modules') ? 'npx --no-install portcullis' : 'portcullis';
}
