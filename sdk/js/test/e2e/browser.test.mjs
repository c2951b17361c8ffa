// The SDK in headless Chromium against a real Herald, through a proxy that cuts connections
// while publications are being made: every publication arrives exactly once and in order, or a
// reset says what was lost.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { build } from "esbuild";
import { browserOrSkip, CutProxy, launch, pageServer, publisher, sleep, startHerald, until } from "./harness.mjs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const CONFIG = `
[channels.defaults]
history_size = 5000

[channels.namespaces.short]
history_size = 5
`;

let herald, proxy, pages, browser;

before(async () => {
  if (!browserOrSkip({ skip: () => {} })) return;
  herald = await startHerald(CONFIG);
  proxy = await new CutProxy(herald.url).listen();
  const react = await build({
    entryPoints: [join(here, "react-app.js")],
    bundle: true,
    write: false,
    format: "iife",
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "warning",
  });
  pages = await pageServer({ "/react.js": ["text/javascript", () => react.outputFiles[0].contents] });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  pages?.close();
  proxy?.close();
  herald?.stop();
});

/** Each channel's publications, once each, in order; a jump only right after a reset to it. */
function checkLog(log, acked) {
  const resets = [];
  for (const [ch, n] of Object.entries(acked)) {
    let next = null;
    for (const e of log.filter((e) => e.ch === ch)) {
      if (e.t === "reset") {
        resets.push(e);
        next = e.o + 1;
        continue;
      }
      if (next !== null) assert.equal(e.o, next, `${ch}: expected offset ${next}, got ${e.o} (a loss or a duplicate)`);
      next = e.o + 1;
    }
    assert.equal(next - 1, n, `${ch}: the last offset received is the last acknowledged`);
  }
  return resets;
}

async function open(options, channels) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(pages.url);
  // Cuts come faster than a connection becomes stable (10 s), so the backoff would climb to
  // its 20 s ceiling; keep it short for the test.
  const opts = { backoff: { maxDelay: 2000 }, ...options };
  await page.evaluate(([u, o, c]) => window.begin(u, o, c), [proxy.url, opts, channels]);
  await until("connected", () => page.evaluate(() => window.client.state === "connected"));
  return page;
}

const rec = (page) => page.evaluate(() => window.rec);

/** Publishes through a series of cuts; checks that the page got everything exactly once. */
async function throughCuts(t, page, channels, transport) {
  const pub = publisher(herald, channels);
  const drops = async () => (await rec(page)).states.filter((s) => s === "disconnected").length;
  try {
    for (const cut of ["fin", "rst", "mid", "refuse"]) {
      await sleep(400);
      const before = await drops();
      if (cut === "mid") proxy.midFrame = true;
      else if (cut === "refuse") await proxy.refuse(800);
      else proxy.cut(cut);
      await until(`cut by ${cut}`, async () => (await drops()) > before);
      await until(`reconnected after ${cut}`, () => page.evaluate(() => window.client.state === "connected"));
    }
    await sleep(300);
    await pub.stop();
    const total = Object.values(pub.acked).reduce((a, b) => a + b, 0);
    await until("every publication", async () => (await rec(page)).log.filter((e) => e.t === "pub").length >= total);
  } finally {
    // Stopped in any case, so nothing publishes after the test; a publish error shows above.
    await pub.stop().catch(() => {});
    const r = await rec(page);
    const seen = (ch) => r.log.filter((e) => e.ch === ch).map((e) => e.o);
    const state = await page.evaluate(() => [window.client.state, window.client.transport, window.client.duplicates]);
    t.diagnostic(`acked ${JSON.stringify(pub.acked)}; client ${state}; states ${r.states}; errors ${r.errors}`);
    for (const ch of channels) {
      const o = seen(ch);
      const jumps = o.flatMap((x, i) => (i && x !== o[i - 1] + 1 ? [`${o[i - 1]}->${x}`] : []));
      t.diagnostic(`${ch}: ${o.length} received, first ${o.slice(0, 3)}, jumps ${jumps.slice(0, 10)}`);
    }
    for (const line of r.trace.slice(-60)) t.diagnostic(line);
  }
  await sleep(200);
  const r = await rec(page);
  const total = Object.values(pub.acked).reduce((a, b) => a + b, 0);
  assert.deepEqual(checkLog(r.log, pub.acked), [], "no reset: history covered every cut");
  assert.equal(r.log.length, total, "nothing more than what was published");
  assert.ok(r.recovered.includes(transport), `a resume over ${transport} reported as recovered`);
  assert.ok(r.states.includes("disconnected"), "the state machine went through disconnected");
  assert.equal(await page.evaluate(() => window.client.transport), transport);
  return r;
}

test("WebSocket: several channels through FIN, RST, mid-frame and refused cuts, each publication once", async (t) => {
  if (!browserOrSkip(t)) return;
  const page = await open({}, ["ws:a", "ws:b", "ws:c"]);
  await throughCuts(t, page, ["ws:a", "ws:b", "ws:c"], "websocket");
  await page.close();
});

test("SSE read with fetch: the same cuts, each publication once", async (t) => {
  if (!browserOrSkip(t)) return;
  const page = await open({ transport: "sse" }, ["sse:a", "sse:b"]);
  await throughCuts(t, page, ["sse:a", "sse:b"], "sse");
  await page.close();
});

test("WebSocket refused by the proxy, fallback forced onto EventSource as OBS widgets use it: the same cuts, each publication once", async (t) => {
  if (!browserOrSkip(t)) return;
  proxy.refuseUpgrades = true;
  try {
    const page = await open({ sse: "eventsource", events: ["m"] }, ["es:a", "es:b"]);
    await throughCuts(t, page, ["es:a", "es:b"], "sse");
    assert.ok(await page.evaluate(() => window.rec.trace.includes("open sse")), "it fell back");
    await page.close();
  } finally {
    proxy.refuseUpgrades = false;
  }
});

test("WebSocket refused by the proxy: falls back to SSE read with fetch, loses nothing, and goes back when it can", async (t) => {
  if (!browserOrSkip(t)) return;
  proxy.refuseUpgrades = true;
  try {
    const page = await open({ upgradeInterval: 1000 }, ["fb:a", "fb:b"]);
    await throughCuts(t, page, ["fb:a", "fb:b"], "sse");
    proxy.refuseUpgrades = false;
    await until("back on WebSocket", () => page.evaluate(() => window.client.transport === "websocket"));
    const pub = publisher(herald, ["fb:a"]);
    await sleep(300);
    await pub.stop();
    await page.close();
  } finally {
    proxy.refuseUpgrades = false;
  }
});

test("a cut longer than the history: onReset, and no silent gap", async (t) => {
  if (!browserOrSkip(t)) return;
  for (const options of [{}, { transport: "sse" }]) {
    const ch = `short:${options.transport ?? "ws"}`;
    const page = await open(options, [ch]);
    await herald.publish(ch, 1);
    await until("the first publication", async () => (await rec(page)).log.length === 1);
    proxy.refusing = true;
    proxy.cut("rst");
    for (let i = 0; i < 12; i++) await herald.publish(ch, i);
    proxy.refusing = false;
    await until("a reset", async () => (await rec(page)).log.some((e) => e.t === "reset"));
    await herald.publish(ch, "after");
    await until("the publication after", async () => (await rec(page)).log.at(-1)?.o === 14);
    const r = await rec(page);
    const resets = checkLog(r.log, { [ch]: 14 });
    assert.equal(resets[0].reason, "beyond_retention");
    await page.close();
  }
});

test("a page reload resumes from sessionStorage without loss", async (t) => {
  if (!browserOrSkip(t)) return;
  const page = await open({ persist: true }, ["reload:a"]);
  const pub = publisher(herald, ["reload:a"], 20);
  await sleep(500);
  await page.reload();
  await until("connected after the reload", () => page.evaluate(() => window.client?.state === "connected"));
  await sleep(300);
  await pub.stop();
  await until("every publication", async () => (await rec(page)).log.length >= pub.acked["reload:a"]);
  const r = await rec(page);
  checkLog(r.log, pub.acked);
  assert.ok(r.log.length > 10 && r.log.length === pub.acked["reload:a"]);
  assert.ok(r.recovered.includes("websocket"), "the reloaded page resumed");
  await page.close();
});

test("React StrictMode: two components on one channel make one subscription; unmounting one keeps the other", async (t) => {
  if (!browserOrSkip(t)) return;
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${pages.url}?react`);
  await page.addScriptTag({ url: `${pages.url}react.js` });
  await page.evaluate((u) => window.mountApp(u), proxy.url);
  await until("connected", () => page.evaluate(() => window.appState === "connected"));
  await until("one subscription", async () => (await herald.stats()).subscriptions === 1);
  await sleep(200);
  assert.equal((await herald.stats()).subscriptions, 1, "one subscribe reached the server");
  for (let i = 1; i <= 3; i++) await herald.publish("react:room", i);
  await until("both received", () => page.evaluate(() => window.got.A.length === 3 && window.got.B.length === 3));
  await page.evaluate(() => window.hideA());
  // React commits the unmount on its own schedule: publish only once A is gone.
  await until("A unmounted", () => page.evaluate(() => !document.getElementById("feed-A")));
  for (let i = 4; i <= 5; i++) await herald.publish("react:room", i);
  await until("B still receives", () => page.evaluate(() => window.got.B.length === 5));
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(got.A, [1, 2, 3]);
  assert.deepEqual(got.B, [1, 2, 3, 4, 5]);
  assert.equal((await herald.stats()).subscriptions, 1);
  await page.evaluate(() => window.unmountApp());
  await until("no connection left after the provider unmounted", async () => {
    const s = await herald.stats();
    return s.subscriptions === 0 && s.connections.total === 0;
  });
  await page.close();
});
