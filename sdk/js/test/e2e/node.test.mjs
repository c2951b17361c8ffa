// The SDK on Node 20 (the `ws` package as its WebSocket) against a real Herald with tokens:
// getToken on connect, renewal without reconnecting, a fresh token after 4006, subscription
// tokens, a refusal that stops retrying, and the WebSocket requests with presence.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import WebSocket from "ws";
import { HeraldClient } from "../../dist/index.js";
import { sleep, startHerald, until } from "./harness.mjs";

const SECRET = "a test secret that is at least thirty-two bytes long";
const CONFIG = `
[auth.token]
hmac_secrets = ["${SECRET}"]
leeway = "0s"

[channels.defaults]
subscribe = "authenticated"

[channels.namespaces.room]
subscribe = "granted"

[channels.namespaces.chat]
subscribe = "authenticated"
publish = "authenticated"
presence = true
history_size = 50
`;

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function token(claims, ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ iat: now, exp: now + ttl, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let herald;
const clients = [];
before(async () => {
  herald = await startHerald(CONFIG);
});
after(() => {
  for (const c of clients) c.disconnect();
  herald?.stop();
});

function client(options) {
  const c = new HeraldClient({ url: herald.url, WebSocket, ...options });
  const states = [];
  c.on("state", (s) => states.push(s));
  clients.push(c);
  return { c, states };
}

test("a token is renewed over the open WebSocket before it expires: no reconnect, nothing lost", async () => {
  let asked = 0;
  const { c, states } = client({
    getToken: () => (asked++, token({ sub: "ann" }, 3)),
    refreshBefore: 2000,
  });
  const got = [];
  c.subscribe("feed", { onPublication: (p) => got.push(p.data) });
  c.connect();
  await until("connected", () => c.state === "connected");
  for (let i = 1; i <= 3; i++) {
    await herald.publish("feed", i);
    await sleep(1500);
  }
  await until("every publication", () => got.length === 3);
  assert.ok(asked >= 3, `getToken asked on connect and before each expiry (asked ${asked} times)`);
  assert.deepEqual(
    states.map((s) => s.state),
    ["connecting", "connected"],
    "the connection stayed up through the renewals",
  );
  c.disconnect();
});

test("after 4006 (token expired) the client reconnects with a fresh token and resumes", async () => {
  let asked = 0;
  // Renewal is set to come too late, so the server ends the connection first.
  const { c, states } = client({ getToken: () => (asked++, token({ sub: "bob" }, 2)), refreshBefore: -60000 });
  const got = [];
  c.subscribe("feed2", { onPublication: (p) => got.push(p.data) });
  c.connect();
  await until("connected", () => c.state === "connected");
  await herald.publish("feed2", 1);
  await until("the close", () => states.some((s) => s.code === 4006), 10000);
  await herald.publish("feed2", 2);
  await until("connected again", () => c.state === "connected" && asked >= 2);
  await until("both publications", () => got.length === 2);
  assert.deepEqual(got, [1, 2]);
  const drop = states.find((s) => s.code === 4006);
  assert.equal(drop.state, "disconnected");
  assert.equal(drop.retryIn, 0, "a fresh token at once, no backoff");
  c.disconnect();
});

test("a refused token closes the client for good, with the server's reason", async () => {
  let asked = 0;
  const { c, states } = client({ getToken: () => (asked++, token({ sub: "eve" }, -60)) });
  c.connect();
  await until("closed", () => c.state === "closed");
  assert.match(states.at(-1).reason, /expired/i);
  await sleep(1500);
  assert.equal(asked, 1, "no retry after an authorisation refusal");
  assert.equal(c.state, "closed");
});

test("a subscription token grants one channel the connection token does not", async () => {
  const { c } = client({ getToken: () => token({ sub: "cat" }) });
  const errors = [];
  const got = [];
  c.subscribe("room:1", { onError: (e) => errors.push(e.code) });
  c.subscribe("room:2", {
    getToken: (channel) => token({ sub: "cat", channels: [channel] }, 300),
    onPublication: (p) => got.push(p.data),
  });
  c.connect();
  await until("the refusal", () => errors.length === 1);
  assert.deepEqual(errors, ["forbidden"]);
  await sleep(200);
  await herald.publish("room:2", "hello");
  await until("the publication", () => got.length === 1);
  c.disconnect();
});

test("publish, history and presence over WebSocket; joins and leaves reach the subscription", async () => {
  const a = client({ getToken: () => token({ sub: "ann", info: { name: "Ann" } }) }).c;
  const b = client({ getToken: () => token({ sub: "ben" }) }).c;
  const joins = [];
  const leaves = [];
  const got = [];
  a.subscribe("chat:lobby", {
    onJoin: (m) => joins.push(m.user_id),
    onLeave: (m) => leaves.push(m.user_id),
    onPublication: (p) => got.push(p.data.text),
  });
  a.connect();
  await until("a subscribed", () => joins.includes("ann"));
  const sub = b.subscribe("chat:lobby");
  b.connect();
  await until("b's join", () => joins.includes("ben"));
  const ack = await sub.publish("msg", { text: "hi" });
  assert.equal(ack.channel, "chat:lobby");
  await until("the message", () => got.includes("hi"));
  const presence = await a.presence("chat:lobby");
  assert.deepEqual(presence.members.map((m) => m.user_id).sort(), ["ann", "ben"]);
  const history = await b.history("chat:lobby", { limit: 10 });
  assert.deepEqual(history.publications.map((p) => p.data.text), ["hi"]);
  b.disconnect();
  await until("b's leave", () => leaves.includes("ben"));
  a.disconnect();
});
