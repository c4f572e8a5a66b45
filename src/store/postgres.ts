// PostgreSQL store: not implemented yet (a later issue). The Store interface is shaped for it:
// appendAudit runs its seal callback inside a transaction holding an advisory lock, so every
// replica extends one chain.
import { PortcullisError } from '../errors.js';
import type { Store } from './store.js';
import type { OpenStoreOptions } from './open.js';

export const PostgresStore = {
  async open(url: string, _options: OpenStoreOptions = {}): Promise<Store> {
    const safe = url.replace(/\/\/[^@/]*@/, '//');
    throw new PortcullisError('PCL_STORE_INVALID', `PostgreSQL stores are not supported yet (${safe}); use sqlite:<path>`);
  },
};
