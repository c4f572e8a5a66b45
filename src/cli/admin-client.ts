// The CLI's side of the admin API (push, decide, approvals): one authenticated JSON request, and
// the admin API's {error, message} turned into one clear line.
import type { Command } from 'commander';
import { PortcullisError } from '../errors.js';

export interface AdminTarget {
  url: string;
  token?: string;
}

/** --url and --token (or $PORTCULLIS_ADMIN_TOKEN, which keeps the token out of the process list and CI logs). */
export function adminOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--url <url>', 'the admin API base URL, e.g. http://127.0.0.1:8081')
    .option('--token <token>', 'admin token or identity token (default: $PORTCULLIS_ADMIN_TOKEN)');
}

export interface AdminResponse {
  status: number;
  body: Record<string, unknown>;
}

export async function adminRequest(target: AdminTarget, method: string, path: string, body?: unknown): Promise<AdminResponse> {
  const token = target.token ?? process.env.PORTCULLIS_ADMIN_TOKEN;
  if (!token) throw new PortcullisError('PCL_USAGE', 'give --token or set PORTCULLIS_ADMIN_TOKEN');
  let base: URL;
  try {
    base = new URL(target.url);
  } catch {
    throw new PortcullisError('PCL_USAGE', `--url "${target.url}" is not a URL`);
  }
  const url = new URL(path, base.href.endsWith('/') ? base.href : `${base.href}/`);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`cannot reach the admin API at ${base.origin}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
  }
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`the admin API answered ${res.status} with a body that is not JSON`);
  }
  return { status: res.status, body: parsed };
}

/** Throws the admin API's error as one line (exit 1). */
export function failed(r: AdminResponse): Error {
  return new Error(`${r.status} ${String(r.body.error ?? '')}: ${String(r.body.message ?? '')}`);
}
