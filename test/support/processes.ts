// Processes by what they carry, not by who their parent is: a stdio upstream launched through
// npx or `sh -c` is a tree (npx → npm → sh → node), so tests mark its environment and find every
// process of the tree, with its process group, in /proc (Linux).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite.js';
import type { ServersInput } from '../e2e/harness.js';
import { EVERYTHING, ROOT } from '../e2e/harness.js';

export interface ProcInfo {
  pid: number;
  /** Process group. */
  pgid: number;
  command: string;
}

function stat(pid: string): { state: string; pgid: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, , pgid] = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state, pgid: Number(pgid) };
  } catch {
    return undefined; // gone meanwhile
  }
}

function live(filter: (pid: string) => boolean): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || !filter(pid)) continue;
    const st = stat(pid);
    if (!st || st.state === 'Z') continue; // a zombie has ended; only its parent's reaping is left
    let command = '';
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {
      continue;
    }
    out.push({ pid: Number(pid), pgid: st.pgid, command });
  }
  return out;
}

/** Running processes whose environment has PCL_PROC_MARK=<mark>. */
export function marked(mark: string): ProcInfo[] {
  const needle = `\0PCL_PROC_MARK=${mark}\0`;
  return live((pid) => {
    try {
      return `\0${readFileSync(`/proc/${pid}/environ`, 'latin1')}`.includes(needle);
    } catch {
      return false;
    }
  });
}

/** Running processes of a process group (what `ps -o pid= -g <pgid>` lists). */
export function groupMembers(pgid: number): ProcInfo[] {
  return live((pid) => stat(pid)?.pgid === pgid);
}

/** This process's own group. */
export const OWN_PGID = stat(String(process.pid))!.pgid;

/** The ways a config launches server-everything over stdio, each marked: directly, through npx (no network: the installed bin), and through a shell that forks it. */
export function launchers(mark: string): ServersInput {
  const env = { PCL_PROC_MARK: mark, npm_config_update_notifier: 'false', npm_config_offline: 'true' };
  return {
    direct: { transport: 'stdio', command: process.execPath, args: [EVERYTHING, 'stdio'], env },
    npx: { transport: 'stdio', command: 'npx', args: ['--no-install', 'mcp-server-everything', 'stdio'], env, cwd: ROOT },
    shell: { transport: 'stdio', command: 'sh', args: ['-c', `"${process.execPath}" "${EVERYTHING}" stdio; echo "server-everything ended" >&2`], env },
  };
}

/** The audit log in a config folder's store: its head, its last checkpoint, and its records' types. */
export async function auditState(configDir: string): Promise<{ headSeq: number; lastCheckpointSeq: number; types: string[] }> {
  const store = SqliteStore.open(join(configDir, 'data/portcullis.db'), { mustExist: true });
  try {
    const head = await store.auditHead();
    const checkpoints = await store.listCheckpoints();
    const types: string[] = [];
    for await (const r of store.readAudit()) types.push(r.type);
    return { headSeq: head?.seq ?? 0, lastCheckpointSeq: Math.max(0, ...checkpoints.map((c) => c.seq)), types };
  } finally {
    await store.close();
  }
}
