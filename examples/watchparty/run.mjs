// The watch party, in one command: Herald (Telegram login, the room and chat namespaces) and
// the app's backend: the Mini App's page, rooms, chat history, and the proxy endpoints Herald
// asks before each client publish and subscribe.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { bearerClaims, exitStack, heraldToml, SDK_BUNDLE, startHerald, workDir } from "../lib/herald.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const PUBLIC = join(here, "public");
const HERALD_LISTEN = process.env.EXAMPLE_HERALD_LISTEN || "127.0.0.1:7700";
const APP_PORT = Number(process.env.EXAMPLE_PORT ?? 8080);
/** Where the page reaches Herald, when that is not where Herald listens (a tunnel, a proxy). */
const HERALD_PUBLIC_URL = process.env.HERALD_PUBLIC_URL || "";
/** The Mini App's link (https://t.me/BOT/APP); invitations add `?startapp=ROOM`. */
const TELEGRAM_APP_LINK = process.env.TELEGRAM_APP_LINK || "";
const ROOM_ID = /^[a-z0-9]{8}$/;
const ROOM_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
const VIDEO_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_TEXT = 500;
const MAX_HISTORY = 200;
/** How far Herald's clock (x-herald-timestamp) may be from ours. */
const PROXY_TOLERANCE_S = 60;

const stops = exitStack("watchparty");
const work = workDir(stops, "watchparty");

// ---- the configuration: what the app shares with Herald ----

const { source, setting } = heraldToml(here);
const apiKey = setting(/^key = "([^"]+)"$/m, '`key = "..."` in [[auth.api_keys]]');
const tokenSecret = setting(/^hmac_secrets = \["([^"]+)"/m, "auth.token.hmac_secrets entry");
const proxySecret = setting(/^\[proxy\]$[^[]*?^secret = "([^"]+)"$/ms, '`secret = "..."` in [proxy]');
const leeway = Number(setting(/^leeway = "(\d+)s"$/m, '`leeway = "Ns"` in [auth.token]'));
const demoBotToken = setting(/^bot_token = "([^"]+)"$/m, '`bot_token = "..."` in [auth.telegram]');
const botToken = process.env.TELEGRAM_BOT_TOKEN || demoBotToken;
/** Signed launch links for made-up users, only while the bot token is the demo's. */
const DEV = botToken === demoBotToken;

// ---- the app's state (in memory: a real app keeps it in its database) ----

/** Rooms by id: `{id, name, host, created, state, chat, nextMessage}`. */
const rooms = new Map();
/** What each user's token said about them (`info`: Telegram's first name, username...). */
const users = new Map();

function displayName(userId) {
  const info = users.get(userId);
  if (!info) return `user ${userId}`;
  return [info.first_name, info.last_name].filter(Boolean).join(" ") || info.username || `user ${userId}`;
}

function publicRoom(room) {
  return {
    id: room.id,
    name: room.name,
    host: { id: room.host, name: displayName(room.host) },
    created: room.created,
    state: room.state,
    invite: inviteLinks(room.id),
  };
}

function inviteLinks(id) {
  return {
    telegram: TELEGRAM_APP_LINK ? `${TELEGRAM_APP_LINK}?startapp=${id}` : null,
    // Demo only: opens the room outside Telegram as a made-up user (add &user=NAME).
    dev: DEV ? `${app.url}/dev/launch?room=${id}` : null,
  };
}

// ---- Herald's connection tokens, checked by the app ----

/** The user of a request's `Authorization: Bearer <Herald token>`, remembered by id. */
function requestUser(req) {
  const claims = bearerClaims(req, tokenSecret, leeway);
  if (!claims) return null;
  if (claims.info && typeof claims.info === "object") users.set(claims.sub, claims.info);
  return claims.sub;
}

// ---- the proxy: Herald asks before each client publish and subscribe ----

/** Whether a proxy call really comes from Herald: its signature, over a recent timestamp. */
function fromHerald(req, raw) {
  const timestamp = String(req.headers["x-herald-timestamp"] ?? "");
  if (!/^\d{1,12}$/.test(timestamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > PROXY_TOLERANCE_S) return false;
  const expected = Buffer.from(
    `sha256=${createHmac("sha256", proxySecret).update(`${timestamp}.`).update(raw).digest("hex")}`,
  );
  const given = Buffer.from(String(req.headers["x-herald-signature"] ?? ""));
  return given.length === expected.length && timingSafeEqual(given, expected);
}

const allow = (data) => (data === undefined ? { result: "allow" } : { result: "allow", data });
const refuse = (reason) => ({ result: "refuse", reason });

/** `room:ID` or `chat:ID` → the namespace and the room, if there is one. */
function roomOf(channel) {
  const at = channel.indexOf(":");
  return { namespace: channel.slice(0, at), room: rooms.get(channel.slice(at + 1)) };
}

function onSubscribe(call) {
  if (!call.user) return refuse("log in first");
  const { room } = roomOf(call.channel);
  return room ? allow() : refuse("there is no such room");
}

function onPublish(call) {
  const { namespace, room } = roomOf(call.channel);
  if (!call.user) return refuse("log in first");
  if (!room) return refuse("there is no such room");
  if (namespace === "room") return onControl(room, call);
  if (namespace === "chat") return onChat(room, call);
  return refuse("this channel takes no client messages");
}

/** A player change: only the host's pass, checked and stamped with who made it. */
function onControl(room, call) {
  if (call.user !== room.host) return refuse(`only the host, ${displayName(room.host)}, controls the player`);
  const d = call.data ?? {};
  if (call.event !== "state") return refuse('the player takes "state" events');
  if (!["play", "pause", "seek", "change"].includes(d.action)) return refuse("action must be play, pause, seek or change");
  if (typeof d.video !== "string" || !VIDEO_ID.test(d.video)) return refuse("video must be 1 to 64 letters, digits, _ or -");
  if (typeof d.playing !== "boolean") return refuse("playing must be true or false");
  if (typeof d.position !== "number" || !(d.position >= 0 && d.position <= 86400)) {
    return refuse("position must be from 0 to 86400 seconds");
  }
  room.state = {
    video: d.video,
    playing: d.playing,
    position: Math.round(d.position * 1000) / 1000,
    action: d.action,
    by: { id: call.user, name: displayName(call.user) },
    seq: room.state.seq + 1,
  };
  return allow(room.state);
}

/** A chat message: checked, stamped with an id and the sender's name, and kept. */
function onChat(room, call) {
  if (call.event !== "message") return refuse('the chat takes "message" events');
  const text = typeof call.data?.text === "string" ? call.data.text.trim() : "";
  if (!text) return refuse("the message is empty");
  if (text.length > MAX_TEXT) return refuse(`a message holds at most ${MAX_TEXT} characters`);
  const message = {
    id: room.nextMessage++,
    user: { id: call.user, name: displayName(call.user) },
    text,
    at: Date.now(),
  };
  room.chat.push(message);
  if (room.chat.length > MAX_HISTORY) room.chat.splice(0, room.chat.length - MAX_HISTORY);
  return allow(message);
}

// ---- rooms ----

async function createRoom(user, body) {
  const video = body?.video ?? "big-buck-bunny";
  if (typeof video !== "string" || !VIDEO_ID.test(video)) return [400, { error: "video must be 1 to 64 letters, digits, _ or -" }];
  const name = typeof body?.name === "string" && body.name.trim() ? body.name.trim().slice(0, 80) : `${displayName(user)}'s room`;
  let id;
  do id = Array.from(randomBytes(8), (b) => ROOM_ALPHABET[b % ROOM_ALPHABET.length]).join("");
  while (rooms.has(id));
  const state = { video, playing: false, position: 0, action: "create", by: { id: user, name: displayName(user) }, seq: 0 };
  const room = { id, name, host: user, created: Date.now(), state, chat: [], nextMessage: 1 };
  rooms.set(id, room);
  // The room's first state, so the host and every newcomer land on something.
  const res = await fetch(`${herald.url}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ channel: `room:${id}`, event: "state", data: state }),
  });
  if (!res.ok) {
    rooms.delete(id);
    return [502, { error: `Herald refused the room's first state: ${await res.text()}` }];
  }
  return [201, { room: publicRoom(room) }];
}

// ---- demo only: launch links for made-up users, signed with the demo bot token ----

const DEMO_USERS = { alice: 1001, bob: 1002, carol: 1003, dave: 1004 };

/** initData as Telegram would send it for this user, signed with the bot token. */
function signInitData(fields, token) {
  const pairs = Object.entries(fields).map(([k, v]) => [k, String(v)]);
  const check = [...pairs]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
  const secret = createHmac("sha256", "WebAppData").update(token).digest();
  const hash = createHmac("sha256", secret).update(check).digest("hex");
  return [...pairs, ["hash", hash]].map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
}

function devLaunch(url) {
  if (!DEV) return [404, { error: "demo launch links are off: TELEGRAM_BOT_TOKEN is set, so only Telegram signs logins" }];
  const name = url.searchParams.get("user") ?? "alice";
  if (!/^[a-z][a-z0-9_]{0,31}$/.test(name)) return [400, { error: "user must be 1 to 32 lowercase letters, digits or _" }];
  const room = url.searchParams.get("room");
  if (room !== null && !ROOM_ID.test(room)) return [400, { error: "room must be a room id" }];
  const id = DEMO_USERS[name] ?? 2000 + (Number.parseInt(createHmac("sha256", "id").update(name).digest("hex").slice(0, 8), 16) % 1e6);
  const user = { id, first_name: name[0].toUpperCase() + name.slice(1), username: name, language_code: "en" };
  const fields = { query_id: `demo${randomBytes(6).toString("hex")}`, user: JSON.stringify(user), auth_date: Math.floor(Date.now() / 1000) };
  if (room) fields.start_param = room;
  const initData = signInitData(fields, botToken);
  return [302, `/#tgWebAppData=${encodeURIComponent(initData)}&tgWebAppVersion=8.0&tgWebAppPlatform=unknown`];
}

// ---- the app's HTTP server ----

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };

async function route(req, url, raw) {
  const body = () => {
    try {
      return raw.length ? JSON.parse(raw) : null;
    } catch {
      return undefined;
    }
  };
  const path = url.pathname;
  const method = req.method;
  if (method === "POST" && (path === "/herald/publish" || path === "/herald/subscribe")) {
    if (!fromHerald(req, raw)) return [401, { error: "not signed by Herald" }];
    const call = body();
    if (!call || typeof call.channel !== "string") return [400, { error: "not a proxy call" }];
    return [200, path === "/herald/publish" ? onPublish(call) : onSubscribe(call)];
  }
  if (method === "GET" && path === "/api/config") {
    return [200, { herald: HERALD_PUBLIC_URL || herald.url, dev: DEV }];
  }
  if (method === "GET" && path === "/dev/launch") return devLaunch(url);
  if (path === "/api/rooms" || path.startsWith("/api/rooms/")) {
    const user = requestUser(req);
    if (!user) return [401, { error: "send your Herald token as Authorization: Bearer" }];
    if (method === "POST" && path === "/api/rooms") {
      const b = body();
      if (b === undefined) return [400, { error: "the body is not JSON" }];
      return createRoom(user, b);
    }
    const m = /^\/api\/rooms\/([^/]+)(\/history)?$/.exec(path);
    const room = m && rooms.get(m[1]);
    if (method !== "GET" || !m) return [404, { error: "no such route" }];
    if (!room) return [404, { error: "there is no such room" }];
    if (m[2]) return [200, { room: room.id, messages: room.chat }];
    return [200, { room: publicRoom(room) }];
  }
  return null;
}

function staticFile(res, pathname) {
  const file = pathname === "/sdk/herald.js" ? SDK_BUNDLE : resolve(PUBLIC, `.${pathname === "/" ? "/index.html" : pathname}`);
  if (file !== SDK_BUNDLE && !file.startsWith(PUBLIC + sep)) return false;
  if (!existsSync(file) || !statSync(file).isFile()) return false;
  res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
  res.end(readFileSync(file));
  return true;
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://app");
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks);
  try {
    const answer = await route(req, url, raw);
    if (answer) {
      const [status, out] = answer;
      if (status === 302) return res.writeHead(302, { location: out, "cache-control": "no-store" }).end();
      return res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(out));
    }
    if (req.method === "GET" && staticFile(res, url.pathname)) return;
    res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: "not found" }));
  } catch (e) {
    console.error(`watchparty: ${req.method} ${url.pathname}: ${e.stack ?? e}`);
    res.writeHead(500, { "content-type": "application/json" }).end(JSON.stringify({ error: "internal error" }));
  }
});
await new Promise((ok, fail) => {
  server.once("error", fail);
  server.listen(APP_PORT, "127.0.0.1", ok);
});
stops.push(() => server.close());
const app = { url: `http://127.0.0.1:${server.address().port}` };

// ---- Herald, calling this app's proxy endpoints ----

let config = source;
if (!config.includes("http://127.0.0.1:8080/herald/")) throw new Error("herald.toml names no proxy URL under http://127.0.0.1:8080/herald/");
config = config.replaceAll("http://127.0.0.1:8080/herald/", `${app.url}/herald/`);
if (botToken !== demoBotToken) config = config.replace(/^bot_token = "[^"]+"$/m, `bot_token = ${JSON.stringify(botToken)}`);
const configFile = join(work, "herald.toml");
writeFileSync(configFile, config, { mode: 0o600 });
const herald = await startHerald({ config: configFile, listen: HERALD_LISTEN });
stops.push(() => herald.stop());

console.log(`herald ready: ${herald.url}`);
console.log(`app ready: ${app.url}`);
if (DEV) console.log(`Demo only (signed with the demo bot token): open ${app.url}/dev/launch?user=alice, create a room, then open its invite link as bob.`);
else console.log(`Open the Mini App from Telegram; its URL must reach ${app.url} over HTTPS.`);
console.log(`Example ready: ${app.url}`);
