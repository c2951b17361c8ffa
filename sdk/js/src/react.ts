/**
 * React bindings: `HeraldProvider` and hooks. StrictMode-safe (a double mount opens and
 * closes a subscription, never leaks one), SSR-safe (nothing connects while rendering on a
 * server), and one server subscription however many components use a channel.
 */
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import {
  HeraldClient,
  type Counts,
  type Member,
  type Position,
  type Publication,
  type State,
} from "./index.js";

const Ctx = createContext<HeraldClient | null>(null);

/** Shares one client with the tree below and keeps it connected while mounted. */
export function HeraldProvider(props: { client: HeraldClient; children?: ReactNode }): ReactNode {
  const { client } = props;
  useEffect(() => {
    client.connect();
    return () => client.disconnect("provider unmounted");
  }, [client]);
  return createElement(Ctx.Provider, { value: client }, props.children);
}

export function useHerald(): HeraldClient {
  const client = useContext(Ctx);
  if (!client) throw new Error("useHerald: no <HeraldProvider> above this component");
  return client;
}

/** The connection's state; `closed` while rendering on a server. */
export function useConnectionState(): State {
  const client = useHerald();
  return useSyncExternalStore(
    useCallback((fn: () => void) => client.on("state", fn), [client]),
    () => client.state,
    () => "closed",
  );
}

export interface ChannelState<T> {
  /** The newest publication received (null before the first). */
  last: Publication<T> | null;
  /** Set when publications were lost; cleared by the next publication. */
  reset: { reason: string; position: Position } | null;
  /** Whether the current connection's subscribe has been answered, and how. */
  subscribed: { recovered: boolean } | null;
  publish(event: string, data: unknown): Promise<unknown>;
}

/** Subscribes while mounted; `onEvent` sees every publication once, in order. */
export function useChannel<T = unknown>(channel: string, onEvent?: (pub: Publication<T>) => void): ChannelState<T> {
  const client = useHerald();
  const handler = useRef(onEvent);
  handler.current = onEvent;
  const [last, setLast] = useState<Publication<T> | null>(null);
  const [reset, setReset] = useState<ChannelState<T>["reset"]>(null);
  const [subscribed, setSubscribed] = useState<ChannelState<T>["subscribed"]>(null);
  useEffect(() => {
    const sub = client.subscribe(channel, {
      onPublication(pub) {
        handler.current?.(pub as Publication<T>);
        setLast(pub as Publication<T>);
        setReset(null);
      },
      onReset: (reason, position) => setReset({ reason, position }),
      onSubscribed: ({ recovered }) => setSubscribed({ recovered }),
    });
    const off = client.on("state", (c) => c.state !== "connected" && setSubscribed(null));
    return () => {
      off();
      sub.unsubscribe();
    };
  }, [client, channel]);
  const publish = useCallback(
    (event: string, data: unknown) => client.publish(channel, event, data),
    [client, channel],
  );
  return { last, reset, subscribed, publish };
}

/** Who is on a channel: the members (or users), or the totals with `presence = "counts"`. */
export function usePresence(channel: string): { members: Member[]; counts: Counts | null } {
  const client = useHerald();
  const [members, setMembers] = useState<Member[]>([]);
  const [counts, setCounts] = useState<Counts | null>(null);
  useEffect(() => {
    const key = (m: Member) => m.conn_id || m.user_id || "";
    let alive = true;
    const load = () =>
      client.presence(channel).then(
        (r) => {
          if (!alive) return;
          if (r.members || r.users) setMembers(r.members ?? r.users ?? []);
          else setCounts({ connections: r.connections ?? 0, users: r.users ?? 0, anonymous: r.anonymous ?? 0 } as Counts);
        },
        () => {},
      );
    const sub = client.subscribe(channel, {
      onSubscribed: load,
      onJoin: (m) => setMembers((all) => [...all.filter((x) => key(x) !== key(m)), m]),
      onLeave: (m) => setMembers((all) => all.filter((x) => key(x) !== key(m))),
      onCounts: (c) => setCounts({ connections: c.connections, users: c.users, anonymous: c.anonymous }),
    });
    return () => {
      alive = false;
      sub.unsubscribe();
    };
  }, [client, channel]);
  return { members, counts };
}

/** A page of history (the newest `limit`), fetched once connected and on `refetch()`. */
export function useHistory<T = unknown>(
  channel: string,
  limit = 100,
): { publications: Publication<T>[]; loading: boolean; error: Error | null; refetch(): void } {
  const client = useHerald();
  const state = useConnectionState();
  const [publications, setPublications] = useState<Publication<T>[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  const [round, setRound] = useState(0);
  useEffect(() => {
    if (state !== "connected") return;
    let alive = true;
    setLoading(true);
    client.history(channel, { limit }).then(
      (r) => alive && (setPublications(r.publications as Publication<T>[]), setError(null), setLoading(false)),
      (e) => alive && (setError(e), setLoading(false)),
    );
    return () => {
      alive = false;
    };
  }, [client, channel, limit, state, round]);
  return { publications, loading, error, refetch: () => setRound((n) => n + 1) };
}
