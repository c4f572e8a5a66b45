// `portcullis decide --url … --identity … --server … --tool …`: asks a running gateway what it
// would decide (POST /admin/v1/decide), under the bundle in force or, with --policy, under a
// local bundle, so CI shows what a change would do. --expect turns it into a check (exit 1).
import type { Command } from 'commander';
import { PortcullisError } from '../errors.js';
import { readPolicyFiles } from '../policy/compile.js';
import { formatExplanation, type Explanation } from '../policy/explain.js';
import { adminOptions, adminRequest, failed } from './admin-client.js';
import { requestFrom, requestOptions, type RequestOpts } from './explain.js';

interface DecideOpts extends RequestOpts {
  url: string;
  token?: string;
  policy?: string;
  expect?: string;
  json?: boolean;
}

export function register(program: Command): void {
  requestOptions(adminOptions(program.command('decide').description('ask a running gateway what it would decide for a request (dry run)')))
    .option('--policy <path>', 'decide under this local policy file or folder instead of the bundle in force')
    .option('--expect <effect>', 'exit 1 unless the effect is this (allow, deny or approve)')
    .option('--json', 'print the answer as JSON')
    .action(async (o: DecideOpts) => {
      if (o.expect !== undefined && !['allow', 'deny', 'approve'].includes(o.expect)) throw new PortcullisError('PCL_USAGE', '--expect is allow, deny or approve');
      const input = requestFrom(o);
      const body = {
        identity: { sub: input.identity.sub, groups: input.identity.groups, claims: input.identity.claims },
        server: input.server,
        method: input.method,
        ...(input.tool !== undefined && { tool: input.tool }),
        ...(input.resource !== undefined && { resource: input.resource }),
        ...(input.prompt !== undefined && { prompt: input.prompt }),
        ...(input.args !== undefined && { args: input.args }),
        time: input.time.toISOString(),
        ...(o.policy !== undefined && { files: readPolicyFiles(o.policy).files }),
      };
      const r = await adminRequest(o, 'POST', 'admin/v1/decide', body);
      if (r.status !== 200) throw failed(r);
      process.stdout.write(o.json ? `${JSON.stringify(r.body, null, 2)}\n` : formatExplanation(r.body.explanation as Explanation));
      if (o.expect !== undefined && r.body.effect !== o.expect) {
        throw new Error(`expected ${o.expect}, the gateway decides ${String(r.body.effect)} by ${String(r.body.rule)}`);
      }
    });
}
