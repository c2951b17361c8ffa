import { Backoff, type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { parseSseId, PositionStore, seen, sinceItem } from "./positions.js";
import { SseParser, type SseMessage } from "./sse.js";
import { Subscription, type SubscriptionHandlers } from "./subscription.js";
import {
  HeraldError,
  type Counts,
  type Hello,
  type Member,
  type Position,
  type Publication,
  type State,
  type StateChange,
  type Subscribed,
  type TransportName,
} from "./types.js";

type WsCtor = new (url: string) => WebSocket;

export interface ClientOptions {
  /** Herald's base URL, e.g. `https://rt.example.com` or `/realtime` (resolved against the page). */
  url: string;
  /** The connection token, asked for on every connect and before it expires. */
  getToken?: () => Promise<string | null> | string | null;
  /** `auto` (WebSocket, SSE when WebSocket cannot connect), `websocket` or `sse`. */
  transport?: "auto" | TransportName;
  /** How SSE is read: `fetch` streaming (default where available) or `eventsource`. */
  sse?: "fetch" | "eventsource";
  /** Event names an `EventSource` listens for besides those given to `Subscription.on`. */
  events?: string[];
  /** Reconnect delays (full jitter between 0 and 0.5 s … 20 s). */
  backoff?: BackoffOptions;
  /** Keep positions in `sessionStorage` under this key (or the default key with `true`). */
  persist?: boolean | string;
  /** How long a request waits for a connection and its reply, ms (10000). */
  requestTimeout?: number;
  /** WebSocket failures in a row after which `auto` falls back to SSE (2). */
  fallbackAfter?: number;
  /** While on the SSE fallback, how often WebSocket is tried again, ms (30000). */
  upgradeInterval?: number;
  /** Renew the token this long before it expires, ms (30000). */
  refreshBefore?: number;
  /** A WebSocket constructor (Node 20 has none: pass the `ws` package's). */
  WebSocket?: WsCtor;
  /** Receives a line for every step of the connection (e.g. `console.debug`). */
  log?: (line: string) => void;
}

interface Events extends Record<string, unknown[]> {
  state: [StateChange];
  connected: [Hello & { transport: TransportName }];
  error: [HeraldError];
}

interface Chan {
  handles: Set<Subscription<any>>;
  position?: Position;
  /** Publications the subscribe reply announced that have not arrived yet. */
  replay: number;
  /** The reply's position, taken once the replay has arrived. */
  tail?: Position;
  /** What this channel resumed from on the current connection. */
  sent?: Position;
  live: boolean;
}

interface Pending {
  resolve(v: any): void;
  reject(e: HeraldError): void;
  timer: ReturnType<typeof setTimeout>;
}

/** Why a connection ended, and what to do about it. */
interface Lost {
  code?: number;
  reason: string;
  /** Do not retry. */
  fatal?: boolean;
  /** The server asked for this delay before coming back, ms. */
  delay?: number;
}

const FATAL_ERRORS = ["unauthorized", "forbidden"];
/** Most channels whose positions `persist` keeps. */
const MAX_STORED = 256;
const g = globalThis as any;

/** A connection to Herald that never loses a message silently. */
export class HeraldClient {
  state: State = "closed";
  transport: TransportName | undefined;
  /** Publications dropped because they had already been delivered (after a resume). */
  duplicates = 0;
  private events = new Emitter<Events>();
  private chans = new Map<string, Chan>();
  private backoff: Backoff;
  private store: PositionStore | undefined;
  private stored: Record<string, Position>;
  private ws: WebSocket | undefined;
  private sse: AbortController | EventSource | undefined;
  private sseChannels: string[] = [];
  private ids = 0;
  private pending = new Map<number, Pending>();
  private timers: Record<"retry" | "beat" | "renew" | "upgrade", ReturnType<typeof setTimeout> | undefined> = {
    retry: undefined,
    beat: undefined,
    renew: undefined,
    upgrade: undefined,
  };
  private wsFailures = 0;
  private fallback = false;
  private connectedAt = 0;
  private lastSeen = 0;
  private pingAt = 0;
  private token: string | null = null;
  private attempt = 0;
  private reopen = false;
  private waiters: Array<() => void> = [];
  private keepalive = 0;

  /** Touches no global until `connect()`, so it can be built during server-side rendering. */
  constructor(readonly options: ClientOptions) {
    this.backoff = new Backoff(options.backoff);
    const key = options.persist === true ? `herald:${options.url}` : options.persist;
    this.store = key ? new PositionStore(g.sessionStorage, key) : undefined;
    this.stored = this.store?.load() ?? {};
  }

  private get base(): URL {
    return new URL(this.options.url.replace(/\/*$/, "/"), g.location?.href);
  }

  private listen(on: boolean): void {
    const m = on ? "addEventListener" : "removeEventListener";
    g[m]?.("online", this.wake);
    g.document?.[m]?.("visibilitychange", this.wake);
  }

  on<K extends keyof Events>(event: K, fn: (...args: Events[K]) => void): () => void {
    return this.events.on(event, fn);
  }

  /** Opens the connection (and keeps it open until `disconnect()`). */
  connect(): void {
    if (this.state !== "closed") return;
    this.listen(true);
    this.backoff.reset();
    this.open();
  }

  /** Closes the connection for good; subscriptions are kept for the next `connect()`. */
  disconnect(reason = "disconnect() called"): void {
    this.drop();
    this.listen(false);
    this.set({ state: "closed", reason });
  }

  /** Drops the connection and opens a new one at once (the dashboard's reconnect button). */
  reconnect(): void {
    if (this.state === "closed") this.listen(true);
    this.drop();
    this.backoff.reset();
    this.open();
  }

  /** Subscribes to a channel; handles on one channel share one server subscription. */
  subscribe<E extends Record<string, unknown> = Record<string, unknown>>(
    channel: string,
    handlers: SubscriptionHandlers = {},
  ): Subscription<E> {
    const sub = new Subscription<E>(channel, handlers, this);
    let chan = this.chans.get(channel);
    if (!chan) {
      chan = { handles: new Set(), replay: 0, live: false, position: this.stored[channel] };
      this.chans.set(channel, chan);
      chan.handles.add(sub);
      if (this.transport === "websocket" && this.state === "connected") this.wsSubscribe(channel, chan);
      else if (this.transport === "sse") this.restartSse();
    } else chan.handles.add(sub);
    return sub;
  }

  /** @internal */
  release(sub: Subscription<any>): void {
    const chan = this.chans.get(sub.channel);
    if (!chan?.handles.delete(sub) || chan.handles.size) return;
    this.chans.delete(sub.channel);
    if (this.transport === "websocket" && this.state === "connected") {
      this.request("unsubscribe", { channel: sub.channel }).catch(() => {});
    } else if (this.transport === "sse") this.restartSse();
  }

  /** The position this client holds for a channel (its last publication seen). */
  position(channel: string): Position | undefined {
    return this.chans.get(channel)?.position;
  }

  publish(channel: string, event: string, data: unknown): Promise<Position & { channel: string; time: number }> {
    return this.request("publish", { channel, event, data });
  }

  history(
    channel: string,
    opts: { since?: Position; limit?: number } = {},
  ): Promise<{ channel: string; position: Position; reset: string | null; publications: Publication[] }> {
    return this.request("history", { channel, ...opts });
  }

  presence(channel: string): Promise<{ channel: string; members?: Member[]; users?: Member[] } & Partial<Counts>> {
    return this.request("presence", { channel });
  }

  /** Sends one WebSocket request; waits for a connection for up to `requestTimeout`. */
  async request(op: string, fields: Record<string, unknown> = {}): Promise<any> {
    const timeout = this.options.requestTimeout ?? 10000;
    if (this.state !== "connected") await this.until(timeout);
    if (this.transport !== "websocket") {
      throw new HeraldError("unavailable_over_sse", `${op} needs the WebSocket transport; this client is on SSE`);
    }
    const id = ++this.ids;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HeraldError("timeout", `no reply to ${op} within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
      this.ws!.send(JSON.stringify({ id, op, ...fields }));
    });
  }

  private until(timeout: number): Promise<void> {
    if (this.state === "closed") {
      return Promise.reject(new HeraldError("closed", "the client is closed: call connect()"));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new HeraldError("not_connected", `not connected within ${timeout} ms`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push(done);
    });
  }

  private set(change: Omit<StateChange, "previous">): void {
    const previous = this.state;
    this.state = change.state;
    if (change.state === "connected") {
      this.transport = change.transport;
      for (const w of this.waiters.splice(0)) w();
    }
    if (previous !== change.state || change.state === "disconnected") {
      this.events.emit("state", { ...change, previous });
    }
  }

  private wake = (): void => {
    // Back online, or the tab is visible again: skip what is left of the backoff.
    if (this.state === "disconnected" && this.timers.retry && g.document?.visibilityState !== "hidden") {
      this.open();
    }
  };

  private clear(name: keyof HeraldClient["timers"]): void {
    clearTimeout(this.timers[name]);
    this.timers[name] = undefined;
  }

  /** Ends the current transport without telling anyone. */
  private drop(): void {
    this.attempt++;
    for (const name of ["retry", "beat", "renew", "upgrade"] as const) this.clear(name);
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try {
        ws.close(1000);
      } catch {
        // Already closed.
      }
    }
    this.closeSse();
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new HeraldError("disconnected", "the connection closed before the reply"));
    }
    this.pending.clear();
    for (const chan of this.chans.values()) chan.live = false;
  }

  private closeSse(): void {
    const sse = this.sse;
    this.sse = undefined;
    if (sse instanceof AbortController) sse.abort();
    else sse?.close();
  }

  /** A new connection; `quiet` (an SSE stream changing channels) keeps the state as it is. */
  private async open(quiet = false): Promise<void> {
    this.drop();
    const attempt = this.attempt;
    if (!quiet) this.set({ state: "connecting" });
    try {
      this.token = (await this.options.getToken?.()) ?? null;
    } catch (e) {
      return this.lost(attempt, { reason: `getToken failed: ${(e as Error)?.message ?? e}` });
    }
    if (attempt !== this.attempt) return;
    const mode = this.options.transport ?? "auto";
    this.options.log?.(`open ${mode === "sse" || this.fallback ? "sse" : "websocket"}`);
    if (mode === "sse" || (mode === "auto" && this.fallback)) this.openSse(attempt);
    else this.openWs(attempt);
  }

  /** The connection ended (or never opened): retry with backoff, or close for good. */
  private lost(attempt: number, why: Lost): void {
    if (attempt !== this.attempt || this.state === "closed") return;
    const was = this.transport;
    this.drop();
    if (why.fatal) {
      this.listen(false);
      this.set({ state: "closed", code: why.code, reason: why.reason, transport: was });
      return;
    }
    if (this.connectedAt && Date.now() - this.connectedAt >= this.backoff.stableAfter) this.backoff.reset();
    this.connectedAt = 0;
    const retryIn = why.delay ?? this.backoff.next();
    this.options.log?.(`lost (${why.code ?? "-"} ${why.reason}); retry in ${retryIn} ms`);
    this.set({ state: "disconnected", code: why.code, reason: why.reason, retryIn, transport: was });
    this.timers.retry = setTimeout(() => this.open(), retryIn);
  }

  private opened(attempt: number, transport: TransportName, hello: Hello): void {
    this.connectedAt = Date.now();
    this.set({ state: "connected", transport });
    this.events.emit("connected", { ...hello, transport });
    this.scheduleRenew(attempt);
  }

  /** Renews the token before it expires: `auth` over WebSocket, a new stream over SSE. */
  private scheduleRenew(attempt: number): void {
    const exp = expiry(this.token);
    if (!exp || !this.options.getToken) return;
    const wait = Math.max(1000, exp - Date.now() - (this.options.refreshBefore ?? 30000));
    this.timers.renew = setTimeout(async () => {
      if (attempt !== this.attempt) return;
      if (this.transport === "sse") return this.restartSse(true);
      try {
        const token = await this.options.getToken!();
        if (!token || attempt !== this.attempt) return;
        await this.request("auth", { token });
        this.token = token;
        this.scheduleRenew(attempt);
      } catch (e) {
        // Not renewed: the server closes with 4006 at expiry, and the reconnect asks again.
        this.events.emit("error", e instanceof HeraldError ? e : new HeraldError("renew_failed", String(e)));
      }
    }, wait);
  }

  // ---- WebSocket ----

  /** A WebSocket to `<url>/ws` (ws: or wss: after the base URL's scheme). */
  private newSocket(): WebSocket {
    const Ctor = this.options.WebSocket ?? g.WebSocket;
    const url = new URL("ws", this.base);
    url.protocol = url.protocol.replace("http", "ws");
    return new Ctor(url.href);
  }

  private openWs(attempt: number): void {
    let ws: WebSocket;
    try {
      ws = this.newSocket();
    } catch (e) {
      return this.wsFailed(attempt, String(e));
    }
    this.ws = ws;
    let hello = false;
    ws.onmessage = (m) => {
      this.lastSeen = Date.now();
      let msg: any;
      try {
        msg = JSON.parse(String(m.data));
      } catch {
        return;
      }
      if (msg.push === "connected") {
        hello = true;
        this.wsFailures = 0;
        this.wsHello(attempt, msg);
      } else this.wsMessage(msg);
    };
    ws.onclose = (e) => {
      if (!hello) return this.wsFailed(attempt, `WebSocket closed before the hello (${e.code})`);
      const code = e.code;
      const fatal = (code >= 4500 && code <= 4999) || code === 1007;
      // 4006: the token expired; the reconnect asks getToken() for a fresh one at once.
      const delay = code === 4006 ? 0 : this.delay;
      this.lost(attempt, { code, reason: e.reason || `closed (${code})`, fatal, delay });
      this.delay = undefined;
    };
  }

  /** The delay a `disconnect` push asked for. */
  private delay: number | undefined;

  private wsFailed(attempt: number, reason: string): void {
    if (attempt !== this.attempt) return;
    if ((this.options.transport ?? "auto") === "auto" && ++this.wsFailures >= (this.options.fallbackAfter ?? 2)) {
      this.fallback = true;
      return void this.open();
    }
    this.lost(attempt, { reason });
  }

  private async wsHello(attempt: number, hello: Hello): Promise<void> {
    if (this.token) {
      const id = ++this.ids;
      const reply = new Promise<any>((resolve, reject) => {
        const timer = setTimeout(() => reject(new HeraldError("timeout", "no reply to auth")), this.options.requestTimeout ?? 10000);
        this.pending.set(id, { resolve, reject, timer });
      });
      this.ws!.send(JSON.stringify({ id, op: "auth", token: this.token }));
      try {
        await reply;
      } catch (e) {
        const err = e as HeraldError;
        return this.lost(attempt, { reason: err.message, fatal: FATAL_ERRORS.includes(err.code) });
      }
    }
    if (attempt !== this.attempt) return;
    this.pingAt = 0;
    this.opened(attempt, "websocket", hello);
    this.fallback = false;
    for (const [name, chan] of this.chans) this.wsSubscribe(name, chan);
    this.heartbeat(attempt, hello.ping_interval_ms || 25000);
  }

  /** Keeps a WebSocket honest: a `ping` when it has been quiet, and a dead verdict only on a
   * ping that was really sent and got nothing back, so a throttled background tab's late
   * timers never condemn a live connection. */
  private heartbeat(attempt: number, every: number): void {
    this.timers.beat = setTimeout(() => {
      if (attempt !== this.attempt) return;
      const now = Date.now();
      if (this.pingAt && this.lastSeen < this.pingAt && now - this.pingAt >= every) {
        return this.lost(attempt, { code: 4002, reason: "no reply to ping" });
      }
      if (now - this.lastSeen >= every && this.lastSeen >= this.pingAt) {
        this.pingAt = now;
        this.request("ping").catch(() => {});
      }
      this.heartbeat(attempt, every);
    }, every / 2);
  }

  private async wsSubscribe(channel: string, chan: Chan): Promise<void> {
    const first = [...chan.handles][0];
    let token: string | null | undefined;
    try {
      token = await first?.handlers.getToken?.(channel);
    } catch (e) {
      return this.chanError(channel, new HeraldError("token", String(e)));
    }
    chan.replay = 0;
    chan.sent = chan.position;
    const fields: Record<string, unknown> = { channel };
    if (chan.position) fields.since = chan.position;
    if (token) fields.token = token;
    try {
      this.options.log?.(`subscribe ${JSON.stringify(fields.since ?? null)} ${channel}`);
      const r = await this.request("subscribe", fields);
      this.options.log?.(`subscribed ${JSON.stringify(r)}`);
      if (this.chans.get(channel) !== chan) return;
      chan.live = true;
      if (r.replayed > 0) {
        chan.replay = r.replayed;
        chan.tail = r.position;
      } else chan.position = r.position;
      this.save();
      for (const h of chan.handles) {
        h.handlers.onSubscribed?.({ channel, position: r.position, recovered: r.recovered, transport: "websocket" });
      }
    } catch (e) {
      if ((e as HeraldError).code !== "disconnected") this.chanError(channel, e as HeraldError);
    }
  }

  private chanError(channel: string, e: HeraldError): void {
    for (const h of this.chans.get(channel)?.handles ?? []) h.handlers.onError?.(e);
  }

  private wsMessage(msg: any): void {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.error) p.reject(new HeraldError(msg.error.code, msg.error.message));
      else p.resolve(msg.result);
      return;
    }
    if (msg.push === "disconnect") this.delay = msg.delay_ms;
    else this.onPush(msg);
  }

  /** A push, on either transport (SSE carries the same objects in its events' data). */
  private onPush(msg: any): void {
    switch (msg.push) {
      case "publication":
        return this.publication(msg);
      case "reset":
        return this.reset(msg.reason, msg.channels);
      case "join":
      case "leave":
      case "counts":
        return this.presencePush(msg);
    }
  }

  // ---- what both transports deliver ----

  private publication(pub: Publication): void {
    const chan = this.chans.get(pub.channel);
    if (!chan) return;
    if (seen(chan.position, pub)) {
      this.duplicates++;
      return;
    }
    chan.position = { epoch: pub.epoch, offset: pub.offset };
    const tail = chan.tail;
    if (chan.replay > 0 && --chan.replay === 0 && tail?.epoch === pub.epoch && tail.offset > pub.offset) {
      // The replay is complete: stand at the reply's position.
      chan.position = tail;
    }
    this.save();
    for (const h of chan.handles) h.deliver(pub);
  }

  private reset(reason: string, channels: Array<{ channel: string; position: Position }>): void {
    this.options.log?.(`reset ${reason} ${JSON.stringify(channels)}`);
    for (const { channel, position } of channels) {
      const chan = this.chans.get(channel);
      if (!chan) continue;
      chan.position = position;
      chan.replay = 0;
      this.save();
      for (const h of chan.handles) h.handlers.onReset?.(reason, position);
    }
  }

  private presencePush(msg: any): void {
    for (const h of this.chans.get(msg.channel)?.handles ?? []) {
      if (msg.push === "join") h.handlers.onJoin?.(msg.member);
      else if (msg.push === "leave") h.handlers.onLeave?.(msg.member);
      else h.handlers.onCounts?.(msg);
    }
  }

  private save(): void {
    if (!this.store) return;
    for (const [name, chan] of this.chans) if (chan.position) this.stored[name] = chan.position;
    // Bounded: past MAX_STORED, positions of channels no longer subscribed go, oldest first.
    let excess = Object.keys(this.stored).length - MAX_STORED;
    for (const name of Object.keys(this.stored)) {
      if (excess <= 0) break;
      if (!this.chans.has(name)) {
        delete this.stored[name];
        excess--;
      }
    }
    this.store.save(this.stored);
  }

  // ---- Server-Sent Events ----

  /** The channel set changed (or the token is renewed): a new stream, resuming every channel. */
  private restartSse(now = false): void {
    if (this.state !== "connected" || this.reopen) return;
    this.reopen = true;
    queueMicrotask(() => {
      this.reopen = false;
      if (this.transport !== "sse" || this.state !== "connected") return;
      if (!now && same(this.sseChannels, [...this.chans.keys()])) return;
      this.open(true);
    });
  }

  private sseUrl(withToken: boolean): URL {
    const url = new URL("sse", this.base);
    this.sseChannels = [...this.chans.keys()];
    for (const [name, chan] of this.chans) {
      url.searchParams.append("channel", name);
      if (chan.position) url.searchParams.append("since", sinceItem(name, chan.position));
      chan.sent = chan.position;
    }
    if (withToken && this.token) url.searchParams.set("token", this.token);
    return url;
  }

  private openSse(attempt: number): void {
    if (!this.chans.size) {
      // A stream needs a channel: wait, "connected", for the first subscribe.
      this.transport = "sse";
      this.opened(attempt, "sse", { conn_id: "", node: "", time: Date.now(), ping_interval_ms: 0 });
      return;
    }
    const es = this.options.sse === "eventsource" || typeof g.ReadableStream !== "function";
    if (es) this.openEventSource(attempt);
    else this.openFetch(attempt);
    if ((this.options.transport ?? "auto") === "auto") this.scheduleUpgrade(attempt);
  }

  /** On the fallback, tries WebSocket again now and then; switches back when it works. */
  private scheduleUpgrade(attempt: number): void {
    this.timers.upgrade = setTimeout(() => {
      if (attempt !== this.attempt) return;
      let probe: WebSocket;
      try {
        probe = this.newSocket();
      } catch {
        return this.scheduleUpgrade(attempt);
      }
      probe.onmessage = () => {
        probe.onclose = null;
        probe.close(1000);
        if (attempt !== this.attempt) return;
        this.fallback = false;
        this.wsFailures = 0;
        this.open();
      };
      probe.onclose = () => this.scheduleUpgrade(attempt);
    }, this.options.upgradeInterval ?? 30000);
  }

  private sseEvent(attempt: number, m: SseMessage, first: () => void): void {
    if (attempt !== this.attempt) return;
    this.lastSeen = Date.now();
    let msg: any;
    try {
      msg = JSON.parse(m.data);
    } catch {
      return;
    }
    switch (m.event) {
      case "herald.connected":
        first();
        return this.sseHello(attempt, msg, m.id);
      case "herald.disconnect":
        return this.lost(attempt, {
          code: msg.code,
          reason: msg.reason,
          fatal: !msg.reconnect,
          delay: msg.delay_ms,
        });
      default:
        this.onPush(msg);
    }
  }

  /** The hello: the stream's first id (already read) says where each channel starts, and
   * `recovered` which resumed channels missed nothing (a reset follows for the others). */
  private sseHello(attempt: number, hello: Hello & { recovered?: boolean[] }, id: string): void {
    this.keepalive = hello.ping_interval_ms;
    const ids = parseSseId(id) ?? [];
    this.sseChannels.forEach((name, i) => {
      const chan = this.chans.get(name);
      const at = ids[i];
      if (!chan || !at) return;
      const recovered = !!hello.recovered?.[i];
      if (!chan.position) chan.position = at;
      chan.live = true;
      for (const h of chan.handles) {
        h.handlers.onSubscribed?.({ channel: name, position: at, recovered, transport: "sse" });
      }
    });
    this.save();
    this.opened(attempt, "sse", hello);
  }

  private async openFetch(attempt: number): Promise<void> {
    const ctl = new AbortController();
    this.sse = ctl;
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await fetch(this.sseUrl(false), { headers, signal: ctl.signal, cache: "no-store" });
    } catch (e) {
      // The node itself is unreachable, not only WebSocket: try WebSocket first again.
      this.fallback = false;
      this.wsFailures = 0;
      return this.lost(attempt, { reason: `SSE request failed: ${(e as Error)?.message ?? e}` });
    }
    if (!res.ok || !res.body) {
      const body = await res.json().catch(() => ({}));
      const code = body?.error?.code ?? String(res.status);
      const reason = body?.error?.message ?? `SSE answered ${res.status}`;
      // 4xx: the request itself is refused (token, permission, channel); retrying cannot help.
      return this.lost(attempt, { reason: `${code}: ${reason}`, fatal: res.status >= 400 && res.status < 500 && res.status !== 429 });
    }
    let hello = false;
    const parser = new SseParser(
      (m) => this.sseEvent(attempt, m, () => (hello = true)),
      () => {},
    );
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const watch = (): void => {
      // The hello's interval is the server's keep-alive (sse.keepalive).
      const keepalive = this.keepalive || 15000;
      this.timers.beat = setTimeout(() => {
        if (attempt !== this.attempt) return;
        // Chunks arrive even in a throttled tab, so silence measured by the clock is real.
        if (Date.now() - this.lastSeen > 2 * keepalive + 5000) ctl.abort();
        else watch();
      }, keepalive);
    };
    this.lastSeen = Date.now();
    watch();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.lastSeen = Date.now();
        parser.feed(value);
      }
      this.lost(attempt, { reason: hello ? "the stream ended" : "the stream ended before the hello" });
    } catch (e) {
      this.lost(attempt, { reason: `the stream broke: ${(e as Error)?.message ?? e}` });
    }
  }

  private openEventSource(attempt: number): void {
    const es: EventSource = new g.EventSource(this.sseUrl(true).href);
    this.sse = es;
    const names = new Set(["message", ...(this.options.events ?? [])]);
    for (const chan of this.chans.values()) for (const h of chan.handles) for (const n of h.events()) names.add(n);
    for (const n of ["herald.connected", "herald.reset", "herald.join", "herald.leave", "herald.counts", "herald.disconnect", ...names]) {
      es.addEventListener(n, (e) => {
        const m = e as MessageEvent;
        this.sseEvent(attempt, { event: n, data: m.data, id: m.lastEventId }, () => {});
      });
    }
    // The browser would reconnect by itself with the same URL; reconnect here instead, with
    // every channel's position and a fresh token.
    es.onerror = () => this.lost(attempt, { reason: "the event stream failed" });
  }
}

function same(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A JWT's `exp` in ms, read without verifying (only to renew it in time). */
export function expiry(token: string | null): number | undefined {
  try {
    const part = token?.split(".")[1];
    if (!part) return undefined;
    const json = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
    return typeof json.exp === "number" ? json.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
