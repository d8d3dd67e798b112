/**
 * event_bus.ts - a strongly typed publish/subscribe bus with wildcard listeners, one-shot
 * subscriptions, async handlers, and bounded replay for late subscribers.
 *
 * The event map is a type parameter, so `bus.emit("job:done", { id: 3 })` is checked against the
 * payload declared for "job:done" at compile time. Handlers run in subscription order; a throwing
 * handler does not stop the others, and its error is reported to an `onError` hook instead.
 *
 * Build and run:  tsc --target es2020 --module commonjs --strict event_bus.ts && node event_bus.js
 */

export type Handler<P> = (payload: P) => void | Promise<void>;

/** What a wildcard listener receives. */
export type AnyEvent<E> = { type: keyof E; payload: E[keyof E] };

export interface Subscription {
  /** Removes the handler; calling it twice is harmless. */
  unsubscribe(): void;
}

export interface BusOptions {
  /** How many past events per type are kept for `subscribe(..., { replay: true })`. */
  replayLimit?: number;
  /** Receives errors thrown (or rejected) by handlers. Defaults to console.error. */
  onError?: (error: unknown, eventType: string) => void;
}

interface Entry<P> {
  handler: Handler<P>;
  once: boolean;
  active: boolean;
}

export class EventBus<Events extends Record<string, unknown>> {
  private readonly handlers = new Map<keyof Events, Array<Entry<any>>>();
  private readonly wildcard: Array<Entry<AnyEvent<Events>>> = [];
  private readonly history = new Map<keyof Events, Array<Events[keyof Events]>>();
  private readonly replayLimit: number;
  private readonly onError: (error: unknown, eventType: string) => void;

  constructor(options: BusOptions = {}) {
    this.replayLimit = options.replayLimit ?? 0;
    this.onError = options.onError ?? ((error, type) => console.error(`handler for "${type}" failed:`, error));
  }

  subscribe<K extends keyof Events>(
    type: K,
    handler: Handler<Events[K]>,
    options: { once?: boolean; replay?: boolean } = {},
  ): Subscription {
    const entry: Entry<Events[K]> = { handler, once: options.once ?? false, active: true };
    const list = this.handlers.get(type) ?? [];
    list.push(entry);
    this.handlers.set(type, list);
    if (options.replay) {
      for (const past of this.history.get(type) ?? []) {
        if (!entry.active) break;
        this.invoke(entry, past as Events[K], String(type));
      }
    }
    return {
      unsubscribe: () => {
        entry.active = false;
        const current = this.handlers.get(type);
        if (current) this.handlers.set(type, current.filter((e) => e !== entry));
      },
    };
  }

  once<K extends keyof Events>(type: K, handler: Handler<Events[K]>): Subscription {
    return this.subscribe(type, handler, { once: true });
  }

  /** Resolves with the next payload of `type`, or rejects after `timeoutMs`. */
  next<K extends keyof Events>(type: K, timeoutMs = 0): Promise<Events[K]> {
    return new Promise<Events[K]>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const sub = this.once(type, (payload) => {
        if (timer !== undefined) clearTimeout(timer);
        resolve(payload);
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          sub.unsubscribe();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for "${String(type)}"`));
        }, timeoutMs);
      }
    });
  }

  /** Listens to every event; useful for logging and metrics. */
  subscribeAll(handler: Handler<AnyEvent<Events>>): Subscription {
    const entry: Entry<AnyEvent<Events>> = { handler, once: false, active: true };
    this.wildcard.push(entry);
    return {
      unsubscribe: () => {
        entry.active = false;
        const i = this.wildcard.indexOf(entry);
        if (i >= 0) this.wildcard.splice(i, 1);
      },
    };
  }

  /**
   * Delivers `payload` to every handler of `type`, then to wildcard handlers. Returns a promise
   * that settles when all async handlers have finished (errors go to onError, never rejecting).
   */
  emit<K extends keyof Events>(type: K, payload: Events[K]): Promise<void> {
    this.remember(type, payload);
    const pending: Array<Promise<void>> = [];
    // Copy first: handlers may subscribe or unsubscribe while we iterate.
    for (const entry of [...(this.handlers.get(type) ?? [])]) {
      if (!entry.active) continue;
      if (entry.once) {
        entry.active = false;
        const list = this.handlers.get(type) ?? [];
        this.handlers.set(type, list.filter((e) => e !== entry));
      }
      const p = this.invoke(entry, payload, String(type));
      if (p) pending.push(p);
    }
    for (const entry of [...this.wildcard]) {
      if (!entry.active) continue;
      const p = this.invoke<AnyEvent<Events>>(entry, { type, payload }, String(type));
      if (p) pending.push(p);
    }
    return Promise.all(pending).then(() => undefined);
  }

  listenerCount(type: keyof Events): number {
    return (this.handlers.get(type) ?? []).filter((e) => e.active).length;
  }

  private remember<K extends keyof Events>(type: K, payload: Events[K]): void {
    if (this.replayLimit <= 0) return;
    const past = this.history.get(type) ?? [];
    past.push(payload);
    if (past.length > this.replayLimit) past.splice(0, past.length - this.replayLimit);
    this.history.set(type, past);
  }

  private invoke<P>(entry: Entry<P>, payload: P, type: string): Promise<void> | undefined {
    try {
      const result: unknown = entry.handler(payload);
      if (result instanceof Promise) {
        return result.then(
          () => undefined,
          (error: unknown) => this.onError(error, type),
        );
      }
    } catch (error) {
      this.onError(error, type);
    }
    return undefined;
  }
}

// ---- demo and checks ------------------------------------------------------------------------------

// A type alias, not an interface: aliases satisfy Record<string, unknown> (implicit index signature)
// while keeping keyof JobEvents to exactly these four names.
type JobEvents = {
  'job:queued': { id: number; name: string };
  'job:progress': { id: number; fraction: number };
  'job:done': { id: number; seconds: number };
  'job:failed': { id: number; reason: string };
};

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function demo(): Promise<void> {
  const errors: string[] = [];
  const bus = new EventBus<JobEvents>({
    replayLimit: 2,
    onError: (error, type) => errors.push(`${type}: ${(error as Error).message}`),
  });

  const log: string[] = [];
  bus.subscribeAll(({ type }) => {
    log.push(String(type));
  });
  const progress: number[] = [];
  const sub = bus.subscribe('job:progress', ({ fraction }) => {
    progress.push(fraction);
  });
  bus.once('job:done', ({ id, seconds }) => {
    log.push(`done ${id} in ${seconds}s`);
  });
  bus.subscribe('job:failed', () => {
    throw new Error('pager is offline');
  });

  await bus.emit('job:queued', { id: 1, name: 'train-lora' });
  await bus.emit('job:progress', { id: 1, fraction: 0.5 });
  sub.unsubscribe();
  await bus.emit('job:progress', { id: 1, fraction: 1.0 });
  const waiter = bus.next('job:done', 1000);
  await bus.emit('job:done', { id: 1, seconds: 42 });
  await bus.emit('job:done', { id: 2, seconds: 7 });
  const first = await waiter;
  await bus.emit('job:failed', { id: 3, reason: 'out of memory' });

  check(progress.length === 1 && progress[0] === 0.5, 'unsubscribed handler must not run');
  check(log.filter((l) => l.startsWith('done')).length === 1, 'once handler runs once');
  check(first.id === 1, 'next() resolves with the first payload');
  check(errors.length === 1 && errors[0].includes('pager is offline'), 'handler errors are reported');
  check(bus.listenerCount('job:done') === 0, 'once handlers are removed');

  // Late subscriber with replay sees the last two progress events only.
  const replayed: number[] = [];
  await bus.emit('job:progress', { id: 4, fraction: 0.25 });
  bus.subscribe('job:progress', ({ fraction }) => {
    replayed.push(fraction);
  }, { replay: true });
  check(replayed.join(',') === '1,0.25', `replay gives the last two events, got ${replayed.join(',')}`);

  let timedOut = false;
  await bus.next('job:queued', 10).catch(() => {
    timedOut = true;
  });
  check(timedOut, 'next() times out');
  console.log('event_bus: all checks passed;', log.length, 'events seen by the wildcard listener');
}

demo().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
