import type { Counts, Member, Position, Publication, ResetReason, Subscribed } from "./types.js";
import type { HeraldError } from "./types.js";

/** Callbacks of one subscription; every one is optional. */
export interface SubscriptionHandlers<T = unknown> {
  /** Every publication of the channel, whatever its event name, once each, in order. */
  onPublication?(pub: Publication<T>): void;
  /** Publications were lost (beyond retention, or the channel's epoch changed): refetch. */
  onReset?(reason: ResetReason, position: Position): void;
  /** Subscribed (again, after a reconnect); `recovered` says nothing was missed. */
  onSubscribed?(info: Subscribed): void;
  onJoin?(member: Member): void;
  onLeave?(member: Member): void;
  onCounts?(counts: Counts): void;
  /** The server refused the subscription (no permission, channel full...). */
  onError?(error: HeraldError): void;
  /** A subscription token for this channel, asked for on every subscribe (WebSocket only). */
  getToken?(channel: string): Promise<string | null> | string | null;
}

/** What the client does for a handle. */
export interface SubscriptionOwner {
  release(sub: Subscription<any>): void;
  publish(channel: string, event: string, data: unknown): Promise<unknown>;
}

/**
 * One handle on a channel. Handles on the same channel share one server subscription
 * (reference counted): the last `unsubscribe()` ends it.
 */
export class Subscription<Events extends Record<string, unknown> = Record<string, unknown>> {
  private byEvent = new Map<string, Set<(data: any, pub: Publication) => void>>();
  active = true;

  constructor(
    readonly channel: string,
    readonly handlers: SubscriptionHandlers,
    private owner: SubscriptionOwner,
  ) {}

  /** Listens for one event name; returns the function that stops listening. */
  on<K extends keyof Events & string>(
    event: K,
    fn: (data: Events[K], pub: Publication<Events[K]>) => void,
  ): () => void {
    let set = this.byEvent.get(event);
    if (!set) this.byEvent.set(event, (set = new Set()));
    set.add(fn as (data: any, pub: Publication) => void);
    return () => set.delete(fn as (data: any, pub: Publication) => void);
  }

  /** Event names listened for with `on` (an `EventSource` only delivers named events). */
  events(): IterableIterator<string> {
    return this.byEvent.keys();
  }

  /** Publishes to this channel (WebSocket only; the namespace must allow client publishes). */
  publish<K extends keyof Events & string>(event: K, data: Events[K]): Promise<unknown> {
    return this.owner.publish(this.channel, event, data);
  }

  unsubscribe(): void {
    if (!this.active) return;
    this.active = false;
    this.owner.release(this);
  }

  /** @internal */
  deliver(pub: Publication): void {
    this.handlers.onPublication?.(pub as Publication<any>);
    for (const fn of this.byEvent.get(pub.event) ?? []) fn(pub.data, pub);
  }
}
