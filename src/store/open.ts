// Opens the store named by `store.url`: sqlite:<path> (relative to the config's folder) or
// postgres://… / postgresql://….
import { isAbsolute, resolve } from 'node:path';
import { PortcullisError } from '../errors.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './store.js';

export interface OpenStoreOptions {
  /** Refuse to create a store that does not exist yet (for verify, export, replay). */
  mustExist?: boolean;
  /** SQLite: how long a write waits for another process's lock (ms, default 5000). */
  busyTimeout?: number;
  /** PostgreSQL: most connections open at once (default 4). */
  connections?: number;
}

/** Resolves sqlite:<path> against baseDir; "sqlite::memory:" is an in-memory store (tests). */
export function sqlitePath(url: string, baseDir: string): string {
  let path = url.slice('sqlite:'.length);
  if (path.startsWith('//')) path = path.slice(2); // sqlite:///abs/path
  if (path === '') throw new PortcullisError('PCL_STORE_INVALID', `store url "${url}" names no file (use sqlite:./data/portcullis.db)`);
  if (path === ':memory:') return path;
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

export async function openStore(url: string, baseDir: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (url.startsWith('sqlite:')) return SqliteStore.open(sqlitePath(url, baseDir), options);
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const { PostgresStore } = await import('./postgres.js');
    return PostgresStore.open(url, options);
  }
  throw new PortcullisError('PCL_STORE_INVALID', `store url "${url}" is not supported: use sqlite:<path> or postgres://…`);
}
