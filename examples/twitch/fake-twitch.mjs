// A local stand-in for Twitch, written from Twitch's EventSub WebSocket and Helix references, so
// the overlays run with no account and no network: the EventSub socket (welcome, keepalives,
// notifications, session_reconnect), the Helix calls Herald's connector makes (creating
// subscriptions, streams, followers, subscriptions) and OAuth (validate, refresh with a rotated
// refresh token). A control API under /control fires events as a stream would.
//
// One HTTP port serves it all: EventSub at ws://HOST/ws, Helix below /helix, OAuth below
// /oauth2, the control API below /control. Node's standard library has no WebSocket server, so
// the few parts of RFC 6455 a receive-only socket needs are here: the handshake, text frames
// out, control frames in.
import { createHash, randomInt, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";

/** The event types Herald's connector subscribes to, with the versions Twitch offers. */
const VERSIONS = {
  "channel.follow": "2",
  "channel.subscribe": "1",
  "channel.subscription.gift": "1",
  "channel.cheer": "1",
  "channel.raid": "1",
  "stream.online": "1",
  "stream.offline": "1",
};
/** Names for viewers the control API invents when none is given. */
const VIEWERS = ["PixelPanda", "NightOwl_42", "CozyCactus", "MintyMoose", "LuckyLlama", "SirBeeps", "GlitchGoose", "TacoTitan"];
/** Twitch closes a socket that created no subscription within this time after the welcome (4003). */
const SUBSCRIBE_WINDOW_MS = 10_000;
/** After session_reconnect the old socket is closed this long later if the client did not (4004). */
const RECONNECT_GRACE_MS = 30_000;

/** RFC 3339 with nanoseconds, as Twitch writes its timestamps. */
function timestamp() {
  return new Date().toISOString().replace("Z", `${String(randomInt(1_000_000)).padStart(6, "0")}Z`);
}

const pick = (list) => list[randomInt(list.length)];
const userId = () => String(randomInt(10_000_000, 99_999_999));

/**
 * Starts the fake on `port` (0: any free port) of 127.0.0.1. `account` names the broadcaster and
 * the credentials it accepts: clientId, clientSecret, broadcasterId, broadcasterLogin,
 * accessToken, refreshToken. `stats` sets what Helix reports at first.
 */
export async function startFakeTwitch({ port = 0, account, stats = {} }) {
  const state = {
    access: account.accessToken,
    refresh: account.refreshToken,
    refreshes: 0,
    unauthorized: 0,
    live: false,
    viewers: 0,
    followers: 0,
    subs: 0,
    ...stats,
    /** id → { id, subscriptions: Map(type → subscription), sockets: [Sock] } */
    sessions: new Map(),
    sessionCount: 0,
    creates: 0,
    /** Every notification sent, by message id, to deliver again on request. */
    sent: new Map(),
    log: [],
  };
  const broadcaster = {
    broadcaster_user_id: account.broadcasterId,
    broadcaster_user_login: account.broadcasterLogin.toLowerCase(),
    broadcaster_user_name: account.broadcasterLogin,
  };

  // ---- EventSub over WebSocket ----

  function envelope(type, payload, extra = {}) {
    return { metadata: { message_id: randomUUID(), message_type: type, message_timestamp: timestamp(), ...extra }, payload };
  }

  function sessionObject(session, status, keepalive, reconnectUrl = null) {
    return { id: session.id, status, keepalive_timeout_seconds: keepalive, reconnect_url: reconnectUrl, connected_at: session.connectedAt };
  }

  function accept(req, socket, head) {
    const url = new URL(req.url, "http://x");
    const key = req.headers["sec-websocket-key"];
    if (url.pathname !== "/ws" || (req.headers.upgrade ?? "").toLowerCase() !== "websocket" || !key) {
      socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
      return;
    }
    let session;
    const reconnectId = url.searchParams.get("reconnect_id");
    if (reconnectId) {
      session = state.sessions.get(reconnectId);
      if (!session) {
        socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n");
        return;
      }
    } else {
      // Out-of-range values are clamped, as Twitch does; none asked for: 10 s.
      const asked = Number.parseInt(url.searchParams.get("keepalive_timeout_seconds") ?? "10", 10);
      const keepalive = Number.isFinite(asked) ? Math.min(600, Math.max(10, asked)) : 10;
      const id = `fake_${++state.sessionCount}_${randomUUID().slice(0, 8)}`;
      session = { id, keepalive, subscriptions: new Map(), sockets: [], connectedAt: timestamp() };
      state.sessions.set(id, session);
    }
    const keepalive = session.keepalive;
    const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
    );
    socket.setNoDelay(true);
    const sock = new Sock(socket, session, keepalive);
    session.sockets.push(sock);
    if (head?.length) sock.read(head);
    sock.send(envelope("session_welcome", { session: sessionObject(session, "connected", keepalive) }));
    if (!reconnectId) {
      sock.unused = setTimeout(() => {
        if (session.subscriptions.size === 0) sock.close(4003, "connection unused");
      }, SUBSCRIBE_WINDOW_MS);
    }
  }

  /** One client socket: receive-only, so anything but pong and close from the client is an error. */
  class Sock {
    constructor(socket, session, keepalive) {
      this.socket = socket;
      this.session = session;
      this.keepalive = keepalive;
      this.open = true;
      this.buf = Buffer.alloc(0);
      this.timers = [];
      this.armKeepalive();
      socket.on("data", (d) => this.read(d));
      socket.on("close", () => this.gone());
      socket.on("error", () => this.gone());
    }

    /** Twitch sends a keepalive when it sent nothing else for a while within the timeout. */
    armKeepalive() {
      clearTimeout(this.idle);
      this.idle = setTimeout(() => this.send(envelope("session_keepalive", {})), (this.keepalive * 1000 * 3) / 4);
    }

    send(message) {
      if (!this.open) return;
      this.frame(0x1, Buffer.from(JSON.stringify(message)));
      this.armKeepalive();
    }

    frame(opcode, payload) {
      const n = payload.length;
      const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
      if (n >= 126 && n < 65536) {
        head[0] = 0x80 | opcode;
        head[1] = 126;
        head.writeUInt16BE(n, 2);
      } else if (n >= 65536) {
        head[0] = 0x80 | opcode;
        head[1] = 127;
        head.writeBigUInt64BE(BigInt(n), 2);
      }
      this.socket.write(Buffer.concat([head, payload]));
    }

    close(code, reason) {
      if (!this.open) return;
      const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
      payload.writeUInt16BE(code, 0);
      payload.write(reason, 2);
      this.frame(0x8, payload);
      this.gone();
    }

    /** Client frames (always masked): pong is fine, close is answered, anything else is 4001. */
    read(data) {
      this.buf = Buffer.concat([this.buf, data]);
      while (this.buf.length >= 2) {
        const opcode = this.buf[0] & 0x0f;
        let len = this.buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (this.buf.length < 4) return;
          len = this.buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (this.buf.length < 10) return;
          len = Number(this.buf.readBigUInt64BE(2));
          at = 10;
        }
        const masked = (this.buf[1] & 0x80) !== 0;
        const end = at + (masked ? 4 : 0) + len;
        if (this.buf.length < end) return;
        const payload = Buffer.from(this.buf.subarray(end - len, end));
        if (masked) for (let i = 0; i < len; i++) payload[i] ^= this.buf[at + (i % 4)];
        this.buf = this.buf.subarray(end);
        if (opcode === 0x8) {
          // The client closes (after a hand-off, or when it stops): answer and end.
          if (this.open) this.frame(0x8, payload.subarray(0, 2));
          this.gone();
          return;
        }
        if (opcode === 0x9) this.frame(0xa, payload);
        else if (opcode !== 0xa) return this.close(4001, "client sent inbound traffic");
      }
    }

    gone() {
      if (this.dead) return;
      this.dead = true;
      this.open = false;
      clearTimeout(this.idle);
      clearTimeout(this.unused);
      clearTimeout(this.grace);
      const sockets = this.session.sockets;
      sockets.splice(sockets.indexOf(this), 1);
      // A session whose last socket closed is over: its subscriptions are disabled with it.
      if (sockets.length === 0) state.sessions.delete(this.session.id);
      // Whatever was written (a close frame) goes out first; a peer that never closes is cut.
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    }
  }

  /** Sends a notification to every session subscribed to `type`, on its newest socket. */
  function notify(type, event, messageId = randomUUID()) {
    const version = VERSIONS[type];
    let delivered = 0;
    for (const session of state.sessions.values()) {
      const sub = session.subscriptions.get(type);
      const sock = session.sockets.at(-1);
      if (!sub || !sock?.open) continue;
      const message = envelope("notification", { subscription: sub, event }, { subscription_type: type, subscription_version: version });
      message.metadata.message_id = messageId;
      sock.send(message);
      delivered++;
    }
    state.sent.set(messageId, { type, event });
    state.log.push({ message_id: messageId, type, delivered, at: Date.now() });
    if (state.log.length > 200) state.log.shift();
    return { message_id: messageId, type, event, delivered };
  }

  /** session_reconnect on every session: its sockets should move to a new URL that continues it. */
  function askReconnect(base) {
    const moved = [];
    for (const session of state.sessions.values()) {
      const sock = session.sockets.at(-1);
      if (!sock?.open) continue;
      const url = `${base}?reconnect_id=${session.id}`;
      sock.send(envelope("session_reconnect", { session: sessionObject(session, "reconnecting", null, url) }));
      sock.grace = setTimeout(() => sock.close(4004, "reconnect grace time expired"), RECONNECT_GRACE_MS);
      moved.push(session.id);
    }
    return moved;
  }

  // ---- Helix and OAuth ----

  function authorized(req) {
    if (req.headers.authorization === `Bearer ${state.access}` && req.headers["client-id"] === account.clientId) return true;
    state.unauthorized++;
    return false;
  }

  const unauthorized = [401, { error: "Unauthorized", status: 401, message: "Invalid OAuth token" }];

  function createSubscription(body) {
    const { type, version, condition = {}, transport = {} } = body ?? {};
    if (!VERSIONS[type]) return [400, { error: "Bad Request", status: 400, message: `unknown subscription type ${type}` }];
    if (version !== VERSIONS[type]) return [400, { error: "Bad Request", status: 400, message: `${type} has no version ${version}` }];
    const expected =
      type === "channel.follow"
        ? { broadcaster_user_id: account.broadcasterId, moderator_user_id: account.broadcasterId }
        : type === "channel.raid"
          ? { to_broadcaster_user_id: account.broadcasterId }
          : { broadcaster_user_id: account.broadcasterId };
    const keys = Object.keys(condition).sort();
    if (keys.join() !== Object.keys(expected).sort().join() || keys.some((k) => condition[k] !== expected[k])) {
      return [400, { error: "Bad Request", status: 400, message: `the condition ${JSON.stringify(condition)} is not this account's` }];
    }
    const session = transport.method === "websocket" && state.sessions.get(transport.session_id);
    if (!session) return [400, { error: "Bad Request", status: 400, message: "the websocket transport names no connected session" }];
    if (session.subscriptions.has(type)) return [409, { error: "Conflict", status: 409, message: "subscription already exists" }];
    const sub = {
      id: randomUUID(),
      status: "enabled",
      type,
      version,
      condition,
      created_at: timestamp(),
      transport: { method: "websocket", session_id: session.id, connected_at: session.connectedAt },
      cost: 0,
    };
    session.subscriptions.set(type, sub);
    for (const s of session.sockets) clearTimeout(s.unused);
    state.creates++;
    const total = [...state.sessions.values()].reduce((n, s) => n + s.subscriptions.size, 0);
    return [202, { data: [sub], total, total_cost: 0, max_total_cost: 10 }];
  }

  function token(form) {
    const ok =
      form.get("grant_type") === "refresh_token" &&
      form.get("refresh_token") === state.refresh &&
      form.get("client_id") === account.clientId &&
      form.get("client_secret") === account.clientSecret;
    if (!ok) return [400, { status: 400, message: "Invalid refresh token" }];
    state.refreshes++;
    // Refresh tokens rotate: the old pair stops working.
    state.access = `fake-access-${state.refreshes}-${randomUUID().slice(0, 8)}`;
    state.refresh = `fake-refresh-${state.refreshes}-${randomUUID().slice(0, 8)}`;
    return [200, { access_token: state.access, refresh_token: state.refresh, expires_in: 14_400, scope: [], token_type: "bearer" }];
  }

  // ---- the control API: what happens on the stream ----

  const person = (name) => {
    const display = String(name || pick(VIEWERS)).slice(0, 25);
    return { user_id: userId(), user_login: display.toLowerCase(), user_name: display };
  };
  const int = (v, min, max, fallback) => {
    const n = Number(v);
    return Number.isInteger(n) && n >= min && n <= max ? n : fallback;
  };
  const TIERS = ["1000", "2000", "3000"];

  const control = {
    follow(b) {
      state.followers++;
      return notify("channel.follow", { ...person(b.user), ...broadcaster, followed_at: timestamp() });
    },
    subscribe(b) {
      state.subs++;
      const tier = TIERS.includes(String(b.tier)) ? String(b.tier) : "1000";
      return notify("channel.subscribe", { ...person(b.user), ...broadcaster, tier, is_gift: false });
    },
    gift(b) {
      const total = int(b.total, 1, 100, 5);
      const tier = TIERS.includes(String(b.tier)) ? String(b.tier) : "1000";
      const anonymous = b.anonymous === true;
      const gifter = anonymous ? { user_id: null, user_login: null, user_name: null } : person(b.user);
      state.cumulative = (state.cumulative ?? 0) + total;
      const gift = notify("channel.subscription.gift", {
        ...gifter,
        ...broadcaster,
        total,
        tier,
        cumulative_total: anonymous ? null : state.cumulative,
        is_anonymous: anonymous,
      });
      // As on Twitch, each recipient's subscription follows as its own channel.subscribe.
      for (let i = 0; i < total; i++) {
        state.subs++;
        notify("channel.subscribe", { ...person(), ...broadcaster, tier, is_gift: true });
      }
      return gift;
    },
    cheer(b) {
      const anonymous = b.anonymous === true;
      const who = anonymous ? { user_id: null, user_login: null, user_name: null } : person(b.user);
      const bits = int(b.bits, 1, 1_000_000, 100);
      const message = typeof b.message === "string" ? b.message.slice(0, 500) : `Cheer${bits} great stream!`;
      return notify("channel.cheer", { is_anonymous: anonymous, ...who, ...broadcaster, message, bits });
    },
    raid(b) {
      const from = person(b.user);
      const viewers = int(b.viewers, 0, 1_000_000, 25);
      if (state.live) state.viewers += viewers;
      return notify("channel.raid", {
        from_broadcaster_user_id: from.user_id,
        from_broadcaster_user_login: from.user_login,
        from_broadcaster_user_name: from.user_name,
        to_broadcaster_user_id: broadcaster.broadcaster_user_id,
        to_broadcaster_user_login: broadcaster.broadcaster_user_login,
        to_broadcaster_user_name: broadcaster.broadcaster_user_name,
        viewers,
      });
    },
    online() {
      state.live = true;
      state.streamId = String(randomInt(10_000_000, 99_999_999));
      state.startedAt = new Date().toISOString();
      return notify("stream.online", { id: state.streamId, ...broadcaster, type: "live", started_at: state.startedAt });
    },
    offline() {
      state.live = false;
      state.viewers = 0;
      return notify("stream.offline", { ...broadcaster });
    },
    /** What Helix reports from now on (the connector reads it at its next poll). */
    stats(b) {
      if (typeof b.live === "boolean") state.live = b.live;
      state.viewers = int(b.viewers, 0, 10_000_000, state.viewers);
      state.followers = int(b.followers, 0, 100_000_000, state.followers);
      state.subs = int(b.subs, 0, 10_000_000, state.subs);
      return snapshot();
    },
    /** Delivers a notification again with its message id, as Twitch may (at least once). */
    redeliver(b) {
      const id = b.message_id ?? state.log.at(-1)?.message_id;
      const sent = id && state.sent.get(id);
      if (!sent) return [404, { error: "no notification with that message id was sent" }];
      return notify(sent.type, sent.event, id);
    },
    reconnect() {
      return { sessions: askReconnect(`ws://127.0.0.1:${port}/ws`) };
    },
    /** The access token stops working, as when it expired early: Helix answers 401 until a refresh. */
    "expire-token"() {
      state.access = `expired-${randomUUID()}`;
      return snapshot();
    },
  };

  function snapshot() {
    return {
      live: state.live,
      viewers: state.viewers,
      followers: state.followers,
      subs: state.subs,
      sessions: [...state.sessions.values()].map((s) => ({
        id: s.id,
        sockets: s.sockets.length,
        subscriptions: [...s.subscriptions.keys()],
      })),
      subscriptions_created: state.creates,
      token_refreshes: state.refreshes,
      unauthorized: state.unauthorized,
      sent: state.log,
    };
  }

  // ---- HTTP ----

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    let body = "";
    for await (const chunk of req) body += chunk;
    const reply = ([status, json]) => {
      const headers = { "content-type": "application/json" };
      if (url.pathname.startsWith("/control/")) {
        // The control panel is a page of another origin (the app's).
        headers["access-control-allow-origin"] = "*";
        headers["access-control-allow-headers"] = "content-type";
        headers["access-control-allow-methods"] = "GET, POST";
      }
      res.writeHead(status, headers).end(status === 204 ? undefined : JSON.stringify(json));
    };
    const json = () => {
      try {
        return body ? JSON.parse(body) : {};
      } catch {
        return null;
      }
    };
    const path = url.pathname;
    if (req.method === "OPTIONS" && path.startsWith("/control/")) return reply([204]);
    if (req.method === "GET" && path === "/oauth2/validate") {
      if (req.headers.authorization !== `OAuth ${state.access}`) return reply([401, { status: 401, message: "invalid access token" }]);
      return reply([
        200,
        { client_id: account.clientId, login: broadcaster.broadcaster_user_login, user_id: account.broadcasterId, expires_in: 14_400, scopes: ["bits:read", "channel:read:subscriptions", "moderator:read:followers"] },
      ]);
    }
    if (req.method === "POST" && path === "/oauth2/token") return reply(token(new URLSearchParams(body)));
    if (path.startsWith("/helix/")) {
      if (!authorized(req)) return reply(unauthorized);
      const broadcasterOk = (name) => url.searchParams.get(name) === account.broadcasterId;
      if (req.method === "POST" && path === "/helix/eventsub/subscriptions") {
        const b = json();
        return reply(b ? createSubscription(b) : [400, { status: 400, message: "the body is not JSON" }]);
      }
      if (req.method === "GET" && path === "/helix/eventsub/subscriptions") {
        const data = [...state.sessions.values()].flatMap((s) => [...s.subscriptions.values()]);
        return reply([200, { data, total: data.length, total_cost: 0, max_total_cost: 10, pagination: {} }]);
      }
      if (req.method === "GET" && path === "/helix/streams") {
        if (!broadcasterOk("user_id") && url.searchParams.get("user_login") !== broadcaster.broadcaster_user_login) {
          return reply([200, { data: [], pagination: {} }]);
        }
        const data = state.live
          ? [
              {
                id: state.streamId ?? "1",
                user_id: account.broadcasterId,
                user_login: broadcaster.broadcaster_user_login,
                user_name: broadcaster.broadcaster_user_name,
                game_id: "509658",
                game_name: "Just Chatting",
                type: "live",
                title: "Testing my overlays",
                tags: ["English"],
                viewer_count: state.viewers,
                started_at: state.startedAt ?? new Date().toISOString(),
                language: "en",
                thumbnail_url: "",
                tag_ids: [],
                is_mature: false,
              },
            ]
          : [];
        return reply([200, { data, pagination: {} }]);
      }
      if (req.method === "GET" && path === "/helix/channels/followers") {
        if (!broadcasterOk("broadcaster_id")) return reply([400, { status: 400, message: "broadcaster_id is required" }]);
        return reply([200, { total: state.followers, data: [], pagination: {} }]);
      }
      if (req.method === "GET" && path === "/helix/subscriptions") {
        if (!broadcasterOk("broadcaster_id")) return reply([400, { status: 400, message: "broadcaster_id is required" }]);
        return reply([200, { total: state.subs, points: state.subs, data: [], pagination: {} }]);
      }
      return reply([404, { status: 404, message: "not in this fake" }]);
    }
    if (req.method === "GET" && path === "/control/state") return reply([200, snapshot()]);
    const action = req.method === "POST" && path.startsWith("/control/") && control[path.slice("/control/".length)];
    if (action) {
      const b = json();
      if (!b || typeof b !== "object" || Array.isArray(b)) return reply([400, { error: "the body must be a JSON object" }]);
      const out = action(b);
      return reply(Array.isArray(out) ? out : [200, out]);
    }
    reply([404, { error: "not found" }]);
  });
  server.on("upgrade", accept);
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", ok);
  });
  port = server.address().port;
  const http = `http://127.0.0.1:${port}`;
  return {
    url: http,
    eventsub: `ws://127.0.0.1:${port}/ws`,
    helix: `${http}/helix`,
    oauth: `${http}/oauth2`,
    state: snapshot,
    close() {
      for (const s of state.sessions.values()) for (const sock of [...s.sockets]) sock.gone();
      server.close();
    },
  };
}

// `node fake-twitch.mjs [PORT]`: the fake alone, with the example's demo account.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const fake = await startFakeTwitch({
    port: Number(process.argv[2] ?? 0),
    account: {
      clientId: "herald-demo-client",
      clientSecret: "herald-demo-secret",
      broadcasterId: "424242",
      broadcasterLogin: "herald_demo",
      accessToken: "demo-access-token",
      refreshToken: "demo-refresh-token",
    },
  });
  console.log(`twitch ready: ${fake.url} (EventSub ${fake.eventsub}, Helix ${fake.helix}, OAuth ${fake.oauth})`);
}
