// A bounded asynchronous queue consumed as an async iterator. Producers never block: when the buffer is
// full the oldest item is dropped and counted, so a slow consumer loses history but never memory, and the
// most recent state of the VM is what it sees next.

import { VigilError } from '../../util/errors.js';

export class BoundedQueue<T> implements AsyncIterableIterator<T> {
  readonly capacity: number;
  #items: (T | undefined)[];
  #head = 0;
  #size = 0;
  #dropped = 0;
  #done = false;
  #error: unknown = undefined;
  #waiters: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  #onDrop: (() => void) | undefined;
  #onClose: (() => void) | undefined;

  /**
   * @param onDrop called once per dropped item (the owner keeps a total across queues)
   * @param onClose called once when the consumer stops iterating or the queue is ended
   */
  constructor(capacity: number, hooks: { onDrop?: () => void; onClose?: () => void } = {}) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 24) {
      throw new VigilError('vmm', 'usage', `queue capacity must be an integer in 1..2^24, got ${capacity}`);
    }
    this.capacity = capacity;
    this.#items = new Array<T | undefined>(capacity);
    this.#onDrop = hooks.onDrop;
    this.#onClose = hooks.onClose;
  }

  /** Items dropped because the consumer fell behind. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Items buffered and not yet consumed. */
  get size(): number {
    return this.#size;
  }

  get closed(): boolean {
    return this.#done;
  }

  /** Offer an item; returns false when the queue is closed (the item is discarded, not counted). */
  push(item: T): boolean {
    if (this.#done) return false;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve({ value: item, done: false });
      return true;
    }
    if (this.#size === this.capacity) {
      this.#items[this.#head] = undefined;
      this.#head = (this.#head + 1) % this.capacity;
      this.#size--;
      this.#dropped++;
      this.#onDrop?.();
    }
    this.#items[(this.#head + this.#size) % this.capacity] = item;
    this.#size++;
    return true;
  }

  /** No more items: the consumer drains what is buffered, then the iteration ends. */
  end(): void {
    this.#finish(undefined);
  }

  /** The source failed: the consumer drains what is buffered, then `next()` rejects with `error`. */
  fail(error: unknown): void {
    this.#finish(error ?? new VigilError('vmm', 'io', 'queue failed'));
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#size > 0) {
      const value = this.#items[this.#head] as T;
      this.#items[this.#head] = undefined;
      this.#head = (this.#head + 1) % this.capacity;
      this.#size--;
      return Promise.resolve({ value, done: false });
    }
    if (this.#done) {
      if (this.#error !== undefined) {
        const e = this.#error;
        this.#error = undefined; // report once, then behave as ended
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Called by `for await` on break: stop listening and discard the buffer. */
  return(): Promise<IteratorResult<T>> {
    this.#finish(undefined);
    this.#items.fill(undefined);
    this.#size = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #finish(error: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
    if (error !== undefined && waiters.length > 0) this.#error = undefined;
    this.#onClose?.();
  }
}
