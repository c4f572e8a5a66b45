// `portcullis push <path> --url … --token … [--message …]`: pushes a policy folder from CI. The
// gateway compiles it with the same compiler as `portcullis lint`; errors come back with their
// file and line (shown as paths under <path>) and the command exits 1, nothing pushed.
import { join } from 'node:path';
import type { Command } from 'commander';
import { formatProblem, PortcullisError } from '../errors.js';
import { readPolicyFiles } from '../policy/compile.js';
import { adminOptions, adminRequest, failed } from './admin-client.js';

interface PushOpts {
  url: string;
  token?: string;
  message?: string;
}

interface Located {
  file: string | null;
  line: number | null;
  field: string | null;
  message: string;
  rule?: string;
}

export function register(program: Command): void {
  adminOptions(
    program
      .command('push')
      .description('push a policy file or folder to a running gateway (policy.source: store)')
      .argument('<path>', 'policy file or folder')
      .option('-m, --message <text>', 'what this change is (shown in the history)', ''),
  ).action(async (path: string, o: PushOpts) => {
    const { files } = readPolicyFiles(path);
    const r = await adminRequest(o, 'PUT', 'admin/v1/policy', { files, message: o.message ?? '' });
    const local = (p: Located) => ({ file: p.file === null ? undefined : join(path, p.file), line: p.line ?? undefined, field: p.field ?? undefined, message: p.message });
    if (r.status === 422) {
      throw new PortcullisError('PCL_POLICY_INVALID', `push refused: ${String(r.body.message)}`, (r.body.errors as Located[]).map(local));
    }
    if (r.status !== 200) throw failed(r);
    for (const w of (r.body.warnings as Located[]) ?? []) process.stderr.write(`warning: ${formatProblem(local(w))}${w.rule ? ` [${w.rule}]` : ''}\n`);
    process.stdout.write(`pushed: version ${String(r.body.version)} is in force\n`);
  });
}
