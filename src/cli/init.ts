import type { Command } from 'commander';
import { cpSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PortcullisError } from '../errors.js';

// src/cli when run from sources, dist/src/cli when compiled: the examples sit at the package root.
const HERE = dirname(fileURLToPath(import.meta.url));
const EXAMPLES = [resolve(HERE, '../../examples/policies'), resolve(HERE, '../../../examples/policies')].find((p) => existsSync(p))!;

const STARTER = `# Portcullis configuration: see the README for every field.
listen:
  host: 127.0.0.1
  port: 8080
servers:
  files:
    transport: stdio
    command: npx
    args: ["-y", "@modelcontextprotocol/server-filesystem", "./data/files"]
  everything:
    transport: stdio
    command: npx
    args: ["-y", "@modelcontextprotocol/server-everything", "stdio"]
auth:
  anonymous: false
  apiKeys: []          # add one with: portcullis keys new --id <name>
  # oidc: { issuer: https://idp.example.com, audience: portcullis, groupsClaim: groups }
policy:
  path: ./policies
store:
  url: sqlite:./data/portcullis.db
`;

export function register(program: Command): void {
  program
    .command('init')
    .description('write a starter portcullis.yaml and a policies/ folder with example policies and tests')
    .argument('[dir]', 'where to write them', '.')
    .action((dir: string) => {
      const config = join(dir, 'portcullis.yaml');
      const policies = join(dir, 'policies');
      for (const p of [config, policies]) if (existsSync(p)) throw new PortcullisError('PCL_USAGE', `${p} already exists; init writes only new files`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(config, STARTER);
      cpSync(EXAMPLES, policies, { recursive: true });
      const written = readdirSync(policies).map((f) => join(policies, f));
      process.stdout.write(`wrote ${config}\n${written.map((f) => `wrote ${f}`).join('\n')}\nnext: portcullis lint -c ${config} && portcullis test ${policies} && portcullis serve -c ${config}\n`);
    });
}
