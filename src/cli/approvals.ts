// `portcullis approvals list|approve <id>|deny <id> --url … --token … [--reason …]`: the admin
// API's approvals from a terminal. The token decides what is listed and who decides: an
// approver's own identity token, or an admin token that the rule names as "admin:<id>".
import type { Command } from 'commander';
import { adminOptions, adminRequest, failed } from './admin-client.js';

interface Shown {
  id: string;
  status: string;
  requester: { sub: string };
  server: string;
  tool?: string;
  resource?: string;
  prompt?: string;
  method: string;
  args: unknown;
  rule: string;
  expiresAt: string;
  decidedBy?: string;
  reason?: string | null;
}

const line = (a: Shown) =>
  `${a.id}  ${a.status.padEnd(9)}  ${a.requester.sub} → ${a.server} ${a.tool ?? a.resource ?? a.prompt ?? a.method} ${JSON.stringify(a.args)}  rule ${a.rule}  ${a.status === 'pending' ? `expires ${a.expiresAt}` : `by ${a.decidedBy ?? '-'}${a.reason ? `: ${a.reason}` : ''}`}`;

export function register(program: Command): void {
  const approvals = program.command('approvals').description('list, approve and deny requests held for approval (through the admin API)');
  adminOptions(approvals.command('list').description('approvals you may decide (all of them with an admin token)'))
    .option('--status <status>', 'pending, approved, denied, expired or cancelled', 'pending')
    .option('--json', 'one JSON line per approval')
    .action(async (o: { url: string; token?: string; status: string; json?: boolean }) => {
      const r = await adminRequest(o, 'GET', `admin/v1/approvals?status=${encodeURIComponent(o.status)}`);
      if (r.status !== 200) throw failed(r);
      const list = r.body.approvals as Shown[];
      const out = o.json ? list.map((a) => JSON.stringify(a)) : list.map(line);
      if (out.length) process.stdout.write(`${out.join('\n')}\n`);
    });
  for (const verdict of ['approve', 'deny'] as const) {
    adminOptions(approvals.command(verdict).description(`${verdict} a held request`).argument('<id>', 'the approval id'))
      .option('--reason <text>', 'why (shown to the requester)')
      .action(async (id: string, o: { url: string; token?: string; reason?: string }) => {
        const r = await adminRequest(o, 'POST', `admin/v1/approvals/${encodeURIComponent(id)}/${verdict}`, o.reason === undefined ? {} : { reason: o.reason });
        if (r.status !== 200) throw failed(r);
        process.stdout.write(`${line(r.body.approval as Shown)}\n`);
      });
  }
}
