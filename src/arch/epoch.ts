// When caches go stale. A live guest changes under us, so every cache of guest state (page-table pages,
// translations, later symbols and types) remembers the epoch value it was filled in and treats anything
// from another epoch as gone. The epoch moves on resume, on a new sweep, or when it is older than a time
// limit. A dump never changes: its epoch is frozen and caches filled from it stay valid forever.

export interface EpochOptions {
  /** Bump automatically on the first read of `value` at least this many milliseconds after the last bump. */
  maxAgeMs?: number;
  /** A frozen epoch never moves: `bump()` is a no-op. For dumps. */
  frozen?: boolean;
  /** Milliseconds clock; tests inject one. Read on every `value` only when `maxAgeMs` is set. */
  clock?: () => number;
}

export class Epoch {
  /** An epoch for memory that never changes (a dump). */
  static frozen(): Epoch {
    return new Epoch({ frozen: true });
  }

  readonly frozen: boolean;
  readonly maxAgeMs: number | undefined;
  readonly #clock: () => number;
  #value = 0;
  #since: number;

  constructor(options: EpochOptions = {}) {
    if (options.maxAgeMs !== undefined && !(options.maxAgeMs > 0)) {
      throw new RangeError(`Epoch maxAgeMs must be positive, got ${options.maxAgeMs}`);
    }
    this.frozen = options.frozen ?? false;
    this.maxAgeMs = this.frozen ? undefined : options.maxAgeMs;
    this.#clock = options.clock ?? Date.now;
    this.#since = this.maxAgeMs === undefined ? 0 : this.#clock();
  }

  /** The current epoch number; caches compare it with the one they were filled in. */
  get value(): number {
    // The clock costs ~0.1 µs a read, so only epochs with a time limit pay for it.
    if (this.maxAgeMs !== undefined && this.#clock() - this.#since >= this.maxAgeMs) this.bump();
    return this.#value;
  }

  /** Milliseconds since the last bump (0 when the epoch has no time limit). */
  get ageMs(): number {
    return this.maxAgeMs === undefined ? 0 : this.#clock() - this.#since;
  }

  /** Move to a new epoch: everything cached so far is stale. Returns the new value (unchanged if frozen). */
  bump(): number {
    if (this.frozen) return this.#value;
    this.#value++;
    if (this.maxAgeMs !== undefined) this.#since = this.#clock();
    return this.#value;
  }
}

/**
 * A bounded Map that empties itself when its epoch moves: the simplest correct cache of guest-derived
 * values (symbol lookups, decoded structures). When full, the oldest entry goes.
 */
export class EpochMap<K, V> {
  readonly epoch: Epoch;
  readonly maxSize: number;
  readonly #map = new Map<K, V>();
  #seen: number;

  constructor(epoch: Epoch, maxSize = 65536) {
    this.epoch = epoch;
    this.maxSize = Math.max(1, Math.floor(maxSize));
    this.#seen = epoch.value;
  }

  get(key: K): V | undefined {
    this.#sync();
    return this.#map.get(key);
  }

  has(key: K): boolean {
    this.#sync();
    return this.#map.has(key);
  }

  set(key: K, value: V): this {
    this.#sync();
    if (!this.#map.has(key) && this.#map.size >= this.maxSize) {
      this.#map.delete(this.#map.keys().next().value as K);
    }
    this.#map.set(key, value);
    return this;
  }

  get size(): number {
    this.#sync();
    return this.#map.size;
  }

  clear(): void {
    this.#map.clear();
  }

  #sync(): void {
    const now = this.epoch.value;
    if (now !== this.#seen) {
      this.#map.clear();
      this.#seen = now;
    }
  }
}
