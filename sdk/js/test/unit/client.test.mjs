// The client's state machine, reference counting and de-duplication, driven through an
// injected WebSocket whose server side the test plays, with fake timers.
import { test, mock, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { HeraldClient } from "../../dist/index.js";

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.closed = code;
  }
  // The server's side.
  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  hello() {
    this.push({ push: "connected", conn_id: "c1", node: "n1", time: 1, ping_interval_ms: 25000 });
  }
  reply(op, result) {
    const req = this.sent.find((r) => r.op === op && !r.answered);
    assert.ok(req, `a ${op} request was sent`);
    req.answered = true;
    this.push({ id: req.id, result });
  }
  drop(code = 1006, reason = "") {
    this.onclose?.({ code, reason });
  }
}
const last = () => FakeSocket.all.at(-1);
const tick = async (ms = 0) => {
  mock.timers.tick(ms);
  for (let i = 0; i < 5; i++) await Promise.resolve();
};
const pub = (offset, epoch = "e1", channel = "a") => ({
  push: "publication", channel, event: "m", epoch, offset, time: 1, data: offset,
});

beforeEach(() => {
  FakeSocket.all = [];
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
});
afterEach(() => mock.timers.reset());

/** Connects `c` and plays the server's hello. */
async function connected(c) {
  c.connect();
  await tick();
  last().hello();
  await tick();
}

function client(extra = {}) {
  const states = [];
  const c = new HeraldClient({ url: "http://herald.test", WebSocket: FakeSocket, transport: "websocket", backoff: { minDelay: 1000 }, ...extra });
  c.on("state", (s) => states.push(`${s.state}${s.code ? `:${s.code}` : ""}`));
  return { c, states };
}

test("states: connecting, connected, disconnected with a retry, connected again; closed on 4503", async (t) => {
  // A jittered delay of 0 would reconnect before the state could be read: pin it mid-range.
  t.mock.method(Math, "random", () => 0.5);
  const { c, states } = client();
  c.connect();
  await tick();
  assert.equal(last().url, "ws://herald.test/ws");
  last().hello();
  await tick();
  last().drop(4001, "slow consumer");
  await tick();
  assert.equal(c.state, "disconnected");
  await tick(1000);
  assert.equal(FakeSocket.all.length, 2, "reconnected after the backoff");
  last().hello();
  await tick();
  last().drop(4503, "disconnected");
  await tick(60000);
  assert.deepEqual(states, ["connecting", "connected", "disconnected:4001", "connecting", "connected", "closed:4503"]);
  assert.equal(FakeSocket.all.length, 2, "no retry after a do-not-reconnect code");
});

test("a disconnect push's delay replaces the backoff", async () => {
  const { c } = client();
  const changes = [];
  c.on("state", (s) => changes.push(s));
  await connected(c);
  last().push({ push: "disconnect", code: 4000, reason: "server shutdown", reconnect: true, delay_ms: 7000 });
  last().drop(4000, "server shutdown");
  await tick();
  assert.equal(changes.at(-1).retryIn, 7000);
  await tick(6999);
  assert.equal(FakeSocket.all.length, 1);
  await tick(1);
  assert.equal(FakeSocket.all.length, 2);
});

test("an auth refusal closes for good and says why", async () => {
  const { c } = client({ getToken: () => "bad.token.x" });
  const changes = [];
  c.on("state", (s) => changes.push(s));
  await connected(c);
  const auth = last().sent.find((r) => r.op === "auth");
  assert.equal(auth.token, "bad.token.x");
  last().push({ id: auth.id, error: { code: "unauthorized", message: "the token expired" } });
  await tick(60000);
  assert.equal(c.state, "closed");
  assert.match(changes.at(-1).reason, /expired/);
  assert.equal(FakeSocket.all.length, 1);
});

test("two handles on one channel make one subscribe; the last unsubscribe ends it", async () => {
  const { c } = client();
  const got1 = [];
  const got2 = [];
  const s1 = c.subscribe("a", { onPublication: (p) => got1.push(p.offset) });
  const s2 = c.subscribe("a", { onPublication: (p) => got2.push(p.offset) });
  await connected(c);
  assert.equal(last().sent.filter((r) => r.op === "subscribe").length, 1);
  last().reply("subscribe", { channel: "a", position: { epoch: "e1", offset: 0 }, recovered: false, replayed: 0 });
  await tick();
  last().push(pub(1));
  s1.unsubscribe();
  await tick();
  assert.equal(last().sent.filter((r) => r.op === "unsubscribe").length, 0, "one handle remains");
  last().push(pub(2));
  s2.unsubscribe();
  await tick();
  assert.equal(last().sent.filter((r) => r.op === "unsubscribe").length, 1);
  assert.deepEqual(got1, [1]);
  assert.deepEqual(got2, [1, 2]);
});

test("resume: positions are kept, duplicates dropped, latest-state pushes delivered, resets reported", async () => {
  const { c } = client();
  const got = [];
  const resets = [];
  c.subscribe("a", { onPublication: (p) => got.push(p.offset), onReset: (r, p) => resets.push([r, p.offset]) });
  await connected(c);
  // A fresh subscribe on a channel with latest state: the pushes sit below the reply's position.
  last().reply("subscribe", { channel: "a", position: { epoch: "e1", offset: 3 }, recovered: false, replayed: 1 });
  await tick();
  last().push(pub(3));
  last().push(pub(4));
  last().push(pub(4));
  assert.deepEqual(c.position("a"), { epoch: "e1", offset: 4 });
  last().drop();
  await tick(1000);
  last().hello();
  await tick();
  const sub = last().sent.find((r) => r.op === "subscribe");
  assert.deepEqual(sub.since, { epoch: "e1", offset: 4 }, "resumes from the last publication seen");
  last().reply("subscribe", { channel: "a", position: { epoch: "e1", offset: 6 }, recovered: true, replayed: 2 });
  await tick();
  last().push(pub(4)); // a duplicate from a racing replay
  last().push(pub(5));
  last().push(pub(6));
  last().push({ push: "reset", reason: "beyond_retention", channels: [{ channel: "a", position: { epoch: "e1", offset: 90 } }] });
  last().push(pub(90));
  last().push(pub(91));
  assert.deepEqual(got, [3, 4, 5, 6, 91]);
  assert.deepEqual(resets, [["beyond_retention", 90]]);
  assert.equal(c.duplicates, 3);
});

test("heartbeat: a ping unanswered past the interval reconnects; a late timer alone does not", async () => {
  const { c, states } = client();
  await connected(c);
  // A throttled tab: the timer fires 60 s late, the connection is quiet but alive.
  await tick(60000);
  const ping = last().sent.find((r) => r.op === "ping");
  assert.ok(ping, "a quiet connection is pinged");
  assert.equal(c.state, "connected", "lateness alone is no verdict");
  last().push({ id: ping.id, result: {} });
  await tick(12500);
  assert.equal(c.state, "connected");
  await tick(25000);
  await tick(25000);
  assert.equal(c.state, "disconnected", "an unanswered ping ends the connection");
  assert.equal(states.at(-1), "disconnected:4002");
});

test("publish over SSE is refused as unavailable, not lost silently", async () => {
  const c = new HeraldClient({ url: "http://herald.test", transport: "sse" });
  c.connect();
  await tick();
  assert.equal(c.state, "connected");
  await assert.rejects(c.publish("a", "m", 1), { code: "unavailable_over_sse" });
  c.disconnect();
});

test("back online or visible again: the remaining backoff is skipped", async () => {
  const handlers = {};
  globalThis.addEventListener = (type, fn) => (handlers[type] = fn);
  globalThis.removeEventListener = (type) => delete handlers[type];
  globalThis.document = {
    visibilityState: "hidden",
    addEventListener: (type, fn) => (handlers[type] = fn),
    removeEventListener: (type) => delete handlers[type],
  };
  try {
    const { c } = client({ backoff: { minDelay: 600000, maxDelay: 600000 } });
    c.connect();
    await tick();
    last().hello();
    await tick();
    last().drop();
    await tick();
    assert.equal(c.state, "disconnected");
    handlers.visibilitychange();
    assert.equal(FakeSocket.all.length, 1, "a hidden tab waits");
    globalThis.document.visibilityState = "visible";
    handlers.visibilitychange();
    await tick();
    assert.equal(FakeSocket.all.length, 2, "visible again: reconnected at once");
    last().drop();
    await tick();
    handlers.online();
    await tick();
    assert.equal(FakeSocket.all.length, 3, "online again: reconnected at once");
    c.disconnect();
    assert.deepEqual(Object.keys(handlers), [], "disconnect() removes its listeners");
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
    delete globalThis.document;
  }
});
