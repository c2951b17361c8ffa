// The admin page in headless Chromium against a real Herald: login refused and throttled, the
// overview shows the test's connections, the inspector tails a user channel, the publish form
// delivers, disconnecting a user closes their connections, and a POST from a page on another
// port of the same host is refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { browserOrSkip, launch, pageServer, ROOT, startHerald, until } from "../../sdk/js/test/e2e/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const PASSWORD = "correct horse battery staple";
const SECRET = "an admin test secret of at least 32 bytes";
const bin = process.env.HERALD_BIN ?? join(ROOT, "target/debug/herald");
// Where the README's screenshots go when HERALD_SCREENSHOTS=1; elsewhere a scratch folder.
const shots = process.env.HERALD_SCREENSHOTS === "1" ? join(ROOT, "docs") : join(here, "..", "..", "target", "admin-shots");

let herald, browser, other;
const open = [];

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function token(sub) {
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

before(async () => {
  if (!browserOrSkip({ skip: () => {} })) return;
  const hash = execFileSync(bin, ["hash-password"], { input: `${PASSWORD}\n` }).toString().trim();
  herald = await startHerald(`
[auth.token]
hmac_secrets = ["${SECRET}"]

[channels.defaults]
subscribe = "public"

[channels.namespaces.closed]
subscribe = "none"

[admin]
password_hash = "${hash}"
logins_per_minute_per_ip = 4
`);
  browser = await launch();
  // A page on another port of the same host: same site, another origin.
  other = await pageServer();
});

after(async () => {
  for (const c of open) c.close?.() ?? c.abort?.();
  await browser?.close();
  other?.close();
  herald?.stop();
});

async function sse(channel) {
  const ctl = new AbortController();
  const res = await fetch(`${herald.url}/sse?channel=${encodeURIComponent(channel)}`, { signal: ctl.signal });
  const got = [];
  (async () => {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ done: true }));
      if (done) break;
      buf += value;
      for (const m of buf.matchAll(/^data: (\{"push":"publication".*)$/gm)) got.push(JSON.parse(m[1]).data);
      buf = buf.slice(buf.lastIndexOf("\n") + 1);
    }
  })();
  open.push(ctl);
  return got;
}

function ws(user) {
  const url = `${herald.url.replace("http", "ws")}/ws${user ? `?token=${token(user)}` : ""}`;
  const sock = new WebSocket(url);
  const state = { closed: null };
  sock.on("close", (code) => (state.closed = code));
  open.push(sock);
  return new Promise((ok) => sock.on("message", () => ok(state)));
}

test("the admin page: login, overview, inspector, publish, disconnect, and cross-site refusal", async (t) => {
  if (!browserOrSkip(t)) return;
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${herald.url}/admin`);

  // A wrong password is refused and says so.
  await page.fill("#password", "not the password");
  await page.click("#login button");
  await until("the refusal", async () => (await page.textContent("#login-error")) === "wrong password");

  // The right one opens the overview, which shows the connections the test opens.
  await page.fill("#password", PASSWORD);
  await page.click("#login button");
  await page.waitForSelector("#app:not([hidden])");
  const feed = [await sse("news"), await sse("news"), await sse("news")];
  const alice = [await ws("alice"), await ws("alice")];
  await until("3 SSE and 2 WebSocket connections on the overview", async () =>
    (await page.textContent("#conn-sse").catch(() => "")) === "3" && (await page.textContent("#conn-ws").catch(() => "")) === "2",
  );
  // Some traffic, so the overview's charts have something to show.
  for (let i = 0; i < 40; i++) {
    await herald.publish("news", { n: i });
    await new Promise((r) => setTimeout(r, 60 + (i % 7) * 15));
  }
  await until("the deliveries counted", async () => (await page.textContent("#cards")).includes("120 in all"));
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, "admin-overview.png") });

  // The inspector tails a user channel (no client but alice could read it).
  await page.click('nav button[data-tab="inspector"]');
  await page.fill("#inspect-channel", "alerts#alice");
  await page.click("#tail");
  await until("the tail", async () => (await page.textContent("#inspect-log")).includes("tailing alerts#alice"));
  // The tail's subscription is in place once the stream has started; publish after it.
  await until("the tail's subscription", async () => {
    const r = await fetch(`${herald.url}/api/channels?search=${encodeURIComponent("alerts#alice")}`);
    return (await r.json()).total === 1;
  });
  await herald.publish("alerts#alice", { text: "low balance" }, "alert");
  await until("the alert in the inspector", async () => (await page.textContent("#inspect-log")).includes("low balance"));
  await page.screenshot({ path: join(shots, "admin-inspector.png") });
  // A namespace no client may subscribe to is tailed too.
  await page.fill("#inspect-channel", "closed:audit");
  await page.click("#tail");
  const tailing = async (channel) => {
    const r = await fetch(`${herald.url}/api/channels?search=${encodeURIComponent(channel)}`);
    return (await r.json()).total === 1;
  };
  await until("the closed channel's tail subscribed", () => tailing("closed:audit"));
  await herald.publish("closed:audit", "entry 1");
  await until("the entry in the inspector", async () => (await page.textContent("#inspect-log")).includes('"entry 1"'));

  // The publish form delivers to a subscriber.
  await page.fill("#inspect-channel", "news");
  await page.fill("#publish-event", "notice");
  await page.fill("#publish-data", '{"from": "admin"}');
  await page.click("#publish");
  await until("the publication at every subscriber", () => feed.every((got) => got.some((d) => d?.from === "admin")));
  await until("the publish form's answer", async () => /published at offset/.test(await page.textContent("#publish-result")));

  // Disconnecting a user closes every connection of theirs.
  await page.click('nav button[data-tab="connections"]');
  await page.fill("#conn-user", "alice");
  await page.click("#conn-find");
  await until("alice's two connections", async () => (await page.textContent("#conn-result")) === "2 connections");
  await page.click("#conn-kick-all");
  await until("both closed", () => alice.every((s) => s.closed === 4003));

  // A page on another port of the same host cannot make the admin page act, even with the
  // browser's cookie (SameSite lets a same-site request carry it).
  const before = (await herald.stats()).publications;
  const page2 = await context.newPage();
  await page2.goto(other.url);
  const sent = await page2.evaluate(async (target) => {
    try {
      await fetch(`${target}/admin/api/publish`, {
        method: "POST",
        mode: "no-cors",
        credentials: "include",
        headers: { "content-type": "text/plain" },
        body: JSON.stringify({ channel: "news", data: "forged" }),
      });
      return true;
    } catch {
      return false;
    }
  }, herald.url);
  assert.ok(sent, "the forged request left the browser");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await herald.stats()).publications, before, "the forged publish was refused");
  assert.ok(feed.every((got) => !got.includes("forged")));
  await page2.close();

  // Repeated failures from one address are throttled: 4 attempts a minute here.
  const statuses = [];
  for (let i = 0; i < 6 && statuses.at(-1) !== 429; i++) {
    const r = await fetch(`${herald.url}/admin/login`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: herald.url },
      body: JSON.stringify({ password: "guess" }),
    });
    statuses.push(r.status);
  }
  assert.equal(statuses.at(-1), 429, `throttled: ${statuses}`);
  assert.ok(statuses.slice(0, -1).every((s) => s === 401), `wrong passwords refused first: ${statuses}`);
  await context.close();
});

test("with no [admin] the page is off", async (t) => {
  const plain = await startHerald("");
  try {
    const r = await fetch(`${plain.url}/admin`);
    assert.equal(r.status, 404);
    const login = await fetch(`${plain.url}/admin/login`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: plain.url },
      body: JSON.stringify({ password: "x" }),
    });
    assert.equal(login.status, 404);
  } finally {
    plain.stop();
  }
});
