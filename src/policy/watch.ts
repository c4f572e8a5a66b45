// The bundle in force for a policy path: compiled at start, recompiled when the files change,
// swapped atomically. A request is decided under exactly one version because callers take
// current() once per request and keep that object; a bundle that fails to compile never replaces
// the one in force, and every problem is reported to onInvalid (the gateway logs it).
import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { PortcullisError } from '../errors.js';
import { isTestFile, loadBundle, type CompiledBundle } from './compile.js';

export interface PolicySourceOptions {
  /** Watch the path and reload on change (default true). */
  watch?: boolean;
  /** Quiet time after the last change before reloading: editors write in several steps (default 150 ms). */
  debounceMs?: number;
  /** A new version is in force. */
  onReload?: (bundle: CompiledBundle, previous: CompiledBundle) => void;
  /** Checks against the deployment (e.g. masking.hashKey present when a mask hashes); throws PortcullisError to refuse the bundle. */
  check?: (bundle: CompiledBundle) => void;
  /** A change did not compile: the previous bundle stays in force. */
  onInvalid?: (error: PortcullisError) => void;
  /** The files compile again after a rejected change, to the version already in force (the edit was undone). */
  onRecovered?: (bundle: CompiledBundle) => void;
}

export class PolicySource {
  #bundle: CompiledBundle;
  #watcher?: FSWatcher;
  #timer?: NodeJS.Timeout;
  #closed = false;
  /** The last change was rejected: the next good compile is news even if its version is unchanged. */
  #rejected = false;
  readonly path: string;

  /** Loads the bundle; throws PortcullisError('PCL_POLICY_INVALID') when it does not compile. */
  constructor(path: string, private readonly options: PolicySourceOptions = {}) {
    this.path = resolve(path);
    this.#bundle = loadBundle(this.path);
    options.check?.(this.#bundle);
    if (options.watch !== false) this.#watch();
  }

  /** The bundle in force. Take it once per request and decide everything with that object. */
  current(): CompiledBundle {
    return this.#bundle;
  }

  /**
   * Recompiles now. Returns the bundle in force afterwards, or the error when the files did not
   * compile (then the previous bundle stays in force and onInvalid is called).
   */
  reload(): CompiledBundle | PortcullisError {
    if (this.#closed) return this.#bundle;
    let next: CompiledBundle;
    try {
      next = loadBundle(this.path);
      this.options.check?.(next);
    } catch (e) {
      const error = e instanceof PortcullisError ? e : new PortcullisError('PCL_POLICY_INVALID', (e as Error).message);
      this.#rejected = true;
      this.options.onInvalid?.(error);
      return error;
    }
    const recovered = this.#rejected;
    this.#rejected = false;
    if (next.version === this.#bundle.version) {
      if (recovered) this.options.onRecovered?.(this.#bundle);
      return this.#bundle;
    }
    const previous = this.#bundle;
    this.#bundle = next;
    this.options.onReload?.(next, previous);
    return next;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#watcher?.close();
  }

  #watch(): void {
    const isDir = statSync(this.path).isDirectory();
    // A single file is watched through its folder: editors often replace the file (rename),
    // which ends a watch on the file itself.
    const target = isDir ? this.path : dirname(this.path);
    const name = basename(this.path);
    this.#watcher = watch(target, { recursive: isDir, persistent: false }, (_event, file) => {
      if (!isDir && file !== null && file !== name) return;
      // Reloading is a no-op when the version is unchanged, so only obvious noise is skipped.
      const leaf = file === null ? '' : basename(String(file));
      if (isDir && (isTestFile(leaf) || leaf.startsWith('.') || leaf.endsWith('~'))) return;
      this.#schedule();
    });
    this.#watcher.on('error', (e) => this.options.onInvalid?.(new PortcullisError('PCL_POLICY_INVALID', `watching ${this.path} failed: ${e.message}`)));
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.reload(), this.options.debounceMs ?? 150);
    this.#timer.unref?.();
  }
}
