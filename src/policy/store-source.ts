// The bundle in force when policy comes from the store (`policy.source: store`): whatever was
// last pushed through the admin API, by this replica or another. A push is compiled by the same
// compiler as `portcullis lint` before it is stored, so an entry in the history always compiles;
// the swap is one assignment, so a request is decided under exactly one version. Until the first
// push the bundle in force is EMPTY_BUNDLE, which covers no request: everything is denied.
import type { Logger } from 'pino';
import { PortcullisError } from '../errors.js';
import type { PolicyEntry, PolicyStore } from '../store/store.js';
import { compileBundle, emptyBundle, type CompiledBundle } from './compile.js';
import { lintFiles, type Finding } from './lint.js';

/** What is in force before anything was pushed: no document, so every request is denied. */
/** The version of EMPTY_BUNDLE, for /readyz. */
export const NO_POLICY_PUSHED = 'none';
export const EMPTY_BUNDLE: CompiledBundle = emptyBundle(NO_POLICY_PUSHED);

export interface PushResult {
  entry: PolicyEntry;
  /** Lint warnings of the pushed bundle (errors refuse the push). */
  warnings: Finding[];
}

export class StorePolicySource {
  #bundle: CompiledBundle = EMPTY_BUNDLE;
  #entry?: PolicyEntry;
  #stopWatching?: () => Promise<void>;
  #refreshing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly store: PolicyStore,
    private readonly log: Logger,
    private readonly onReload: (bundle: CompiledBundle, previous: CompiledBundle) => void,
    /** What the gateway's config needs of a bundle (a hash key for hash masks); throws PortcullisError. */
    private readonly check: (bundle: CompiledBundle) => void,
  ) {}

  /** Loads the entry in force and follows the store: a push on any replica is in force here too. */
  static async open(store: PolicyStore, log: Logger, onReload: (bundle: CompiledBundle, previous: CompiledBundle) => void = () => {}, check: (bundle: CompiledBundle) => void = () => {}): Promise<StorePolicySource> {
    const source = new StorePolicySource(store, log, onReload, check);
    await source.refresh();
    source.#stopWatching = await store.watchPolicy(() => void source.refresh());
    return source;
  }

  current(): CompiledBundle {
    return this.#bundle;
  }

  /** The history entry in force; undefined before the first push. */
  entry(): PolicyEntry | undefined {
    return this.#entry;
  }

  /**
   * Validates, stores and puts a bundle in force. Throws PCL_POLICY_INVALID with every error
   * (file, line, field) when lint finds errors; nothing is stored then.
   */
  async push(files: Record<string, string>, message: string, by: string, servers?: string[]): Promise<PushResult> {
    const findings = lintFiles(files, { servers });
    const errors = findings.filter((f) => f.level === 'error');
    if (errors.length) {
      throw new PortcullisError(
        'PCL_POLICY_INVALID',
        `the bundle has ${errors.length} error${errors.length === 1 ? '' : 's'}; nothing was pushed`,
        errors.map((f) => ({ file: f.file, line: f.line, field: f.field, message: f.message })),
      );
    }
    const bundle = compileBundle(files);
    this.check(bundle);
    const entry = await this.store.appendPolicy({ version: bundle.version, files, message, by, action: 'push' });
    await this.refresh();
    return { entry, warnings: findings.filter((f) => f.level === 'warning') };
  }

  /** Puts an earlier version back in force, as a new entry of the history. Undefined when the store has no such version. */
  async rollback(version: string, message: string, by: string): Promise<PolicyEntry | undefined> {
    const earlier = await this.store.policyByVersion(version);
    if (!earlier) return undefined;
    const entry = await this.store.appendPolicy({ version: earlier.version, files: earlier.files, message, by, action: 'rollback' });
    await this.refresh();
    return entry;
  }

  /** Re-reads the entry in force (serialised: refreshes never overtake one another). */
  refresh(): Promise<void> {
    this.#refreshing = this.#refreshing.then(() => this.#load()).catch((e) => this.log.error({ err: (e as Error).message }, 'could not read the policy in force from the store; the current version stays'));
    return this.#refreshing;
  }

  async #load(): Promise<void> {
    const entry = await this.store.policyInForce();
    if (!entry || entry.id === this.#entry?.id) return;
    // Entries are compiled before they are stored, so this only fails on a store edited by hand
    // or written by a newer Portcullis: keep what is in force and say so.
    let bundle: CompiledBundle;
    try {
      bundle = compileBundle(entry.files);
      this.check(bundle);
    } catch (e) {
      this.log.error({ err: (e as Error).message, version: entry.version, id: entry.id }, 'the policy in force in the store does not compile here; the current version stays');
      return;
    }
    const previous = this.#bundle;
    this.#entry = entry;
    this.#bundle = bundle;
    if (bundle.version !== previous.version) this.onReload(bundle, previous);
  }

  async close(): Promise<void> {
    await this.#stopWatching?.();
  }
}
