// The streamer tools, started with `npm start` as the README says, driven through the dashboard
// and watched on the OBS widget: the YouTube queue, TTS, signed donations (a retried delivery
// shown once), pausing donations, and the connection indicator across a Herald restart, a
// Herald crash and the Reconnect button, with every page receiving every publication once.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { startExample, until } from "../lib/testing.mjs";

const QUEUE = "queue:s1";
const DONATIONS = "donations:s1";

export default async function (browser, t) {
  // The example keeps Herald's streams here, so a restart continues them.
  const dataDir = mkdtempSync(join(tmpdir(), "herald-streamer-test-"));
  let ex;
  // The dashboard in the streamer's browser, the widget in OBS: a window (a context) each, so
  // both render as visible pages do.
  const contexts = [];
  const errors = [];
  let left;
  try {
    ex = await startExample("streamer", { EXAMPLE_PORT: "0", EXAMPLE_HERALD_LISTEN: "127.0.0.1:0", EXAMPLE_DATA_DIR: dataDir });
    const { app, herald } = ex.urls;
    assert.ok(app && herald, `the example printed its addresses: ${JSON.stringify(ex.urls)}`);

    const post = async (path, body) => {
      const res = await fetch(`${app}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}) });
      return { status: res.status, json: await res.json() };
    };
    const open = async (url) => {
      const context = await browser.newContext();
      contexts.push(context);
      const page = await context.newPage();
      page.on("pageerror", (e) => errors.push(`${url}: ${e.message}`));
      await page.goto(url);
      return page;
    };
    const attr = (page, id, name) => page.getByTestId(id).getAttribute(name);
    const count = (page, selector) => page.locator(selector).count();

    // ---- the dashboard and the widget, both connected ----

    const dash = await open(`${app}/`);
    await until("the dashboard's indicator says connected", async () => (await attr(dash, "connection", "data-state")) === "connected");
    await until("the dashboard subscribed to both channels", async () =>
      (await dash.locator("#youtube[data-subscribed=true], #donations[data-subscribed=true]").count()) === 2,
    );
    assert.match(await dash.getByTestId("connection-text").textContent(), /^connected \(websocket\)$/);
    const widgetHref = await attr(dash, "widget-link", "href");
    assert.match(widgetHref, /^\/widget\.html\?herald=.+&streamer=s1$/, "the dashboard links the OBS widget");
    const widget = await open(`${app}${widgetHref}&debug=1`);
    await until("the widget's indicator says connected", async () => (await attr(widget, "connection", "data-state")) === "connected");
    const pages = { dashboard: dash, widget };

    /** A page's log of publications on a channel, in the order they arrived. */
    const received = (page, channel) =>
      page.$$eval(
        '[data-testid="event"]',
        (els, ch) => els.filter((e) => e.dataset.channel === ch).map((e) => `${e.dataset.epoch}-${e.dataset.offset} ${e.dataset.event}`).reverse(),
        channel,
      );
    /** Every publication Herald holds for a channel, in order. */
    const history = async (channel) => {
      const h = await fetch(`${herald}/api/history?channel=${encodeURIComponent(channel)}&limit=10000`).then((r) => r.json());
      assert.equal(h.reset, null);
      return h.publications.map((p) => `${p.epoch}-${p.offset} ${p.event}`);
    };
    /** Both pages received exactly what Herald published, in order, each once. */
    async function everythingOnce(when) {
      for (const channel of [QUEUE, DONATIONS]) {
        const want = await history(channel);
        for (const [name, page] of Object.entries(pages)) {
          try {
            await until(`${name} received ${channel} as Herald has it ${when}`, async () => isDeepStrictEqual(await received(page, channel), want), 15000);
          } catch {
            assert.deepEqual(await received(page, channel), want, `${name}, ${channel}, ${when}`);
          }
        }
      }
    }

    // ---- a video joins the queue: both events of the batch reach both pages ----

    await dash.getByTestId("video-title").fill("Lofi beats to test by");
    await dash.getByTestId("video-requested-by").fill("viewer42");
    await dash.getByTestId("add-video").click();
    for (const [name, page] of Object.entries(pages)) {
      await until(`${name} shows the video in the queue`, async () =>
        (await page.getByTestId("queue-item").allTextContents()).some((s) => s.includes("Lofi beats to test by")),
      );
    }
    await until("the dashboard shows the video's new status", async () => (await attr(dash, "video-status", "data-status")) === "queued");
    assert.match(await dash.getByTestId("video-status").textContent(), /Lofi beats to test by: queued/);
    const [first, second] = await history(QUEUE);
    assert.match(first, /-1 video-status-changed$/, "the batch's first event");
    assert.match(second, /-2 youtube-queue-updated$/, "the batch's second event, right after it");
    await everythingOnce("after the batch");

    // ---- a signed donation, then the platform's retry of it ----

    await dash.getByTestId("donor").fill("Alice");
    await dash.getByTestId("amount").fill("7.5");
    await dash.getByTestId("donation-message").fill("Hello from the test");
    await dash.getByTestId("simulate-donation").click();
    await until("the donation is published", async () => /published it at offset/.test(await dash.getByTestId("last-action").textContent()));
    const donationId = await dash.getByTestId("donation").first().getAttribute("data-id");
    assert.match(donationId, /^don_/);
    await until("the dashboard lists the donation", async () => (await count(dash, `[data-testid=donation][data-id="${donationId}"]`)) === 1);
    await until("the widget shows the donation", async () => (await attr(widget, "latest-donation", "data-id")) === donationId);
    assert.match(await widget.getByTestId("latest-donation").textContent(), /Alice 7\.5 USD\s*Hello from the test/);

    await dash.getByTestId("redeliver-donation").click();
    await until("Herald answers the retry as a duplicate", async () => (await attr(dash, "last-action", "data-duplicate")) === "true");
    // Pausing goes to the same channel, after the retry: once it arrives, a second donation
    // publication would have arrived before it.
    await dash.getByTestId("pause-donations").click();
    for (const [name, page] of Object.entries(pages)) {
      await until(`${name} shows donations paused`, async () => (await attr(page, "donations-state", "data-paused")) === "true");
    }
    assert.equal(await count(dash, `[data-testid=donation][data-id="${donationId}"]`), 1, "the dashboard lists the donation once");
    assert.equal((await received(widget, DONATIONS)).filter((e) => e.endsWith(" donation")).length, 1, "the widget received it once");
    assert.equal(await dash.getByTestId("donations-state").textContent(), "donations paused");
    assert.equal(await widget.getByTestId("donations-state").isVisible(), true, "the widget shows the paused banner");

    await dash.getByTestId("resume-donations").click();
    for (const [name, page] of Object.entries(pages)) {
      await until(`${name} shows donations resumed`, async () => (await attr(page, "donations-state", "data-paused")) === "false");
    }
    assert.equal(await widget.getByTestId("donations-state").isVisible(), false);

    // ---- TTS: complete (the video starts), then an error ----

    await dash.getByTestId("tts-complete").click();
    await until("the dashboard shows the TTS completed", async () => (await attr(dash, "tts-status", "data-state")) === "completed");
    for (const [name, page] of Object.entries(pages)) {
      await until(`${name} plays the video`, async () => (await page.getByTestId("now-playing").textContent()).includes("Lofi beats to test by"));
      await until(`${name} shows the queue empty`, async () => (await count(page, "[data-testid=queue-item]")) === 0);
    }
    await dash.getByTestId("tts-error").click();
    await until("the dashboard shows the TTS error", async () => (await attr(dash, "tts-status", "data-state")) === "error");
    assert.match(await dash.getByTestId("tts-status").textContent(), /error: the TTS service timed out/);
    await everythingOnce("after the queue, TTS and donations");
    const epochs = { queue: (await history(QUEUE))[0].split("-")[0], donations: (await history(DONATIONS))[0].split("-")[0] };

    // ---- Herald restarts (SIGTERM, then crash with SIGKILL): the indicator, nothing missed ----

    let n = 0;
    for (const crash of [false, true]) {
      const how = crash ? "after a crash" : "after a restart";
      const before = {};
      for (const [name, page] of Object.entries(pages)) {
        before[name] = { connects: Number(await attr(page, "connection", "data-connects")), disconnects: Number(await attr(page, "connection", "data-disconnects")) };
      }
      const restart = await post("/api/dev/restart-herald", { crash, down_ms: 1500 });
      assert.equal(restart.status, 202, JSON.stringify(restart.json));
      // Herald is down now. Publish anyway: the backend keeps trying (with idempotency keys)
      // until Herald is back, and the donation platform retries its webhook the same way.
      const downTitle = `Requested while Herald was down ${++n}`;
      await dash.getByTestId("video-title").fill(downTitle);
      await dash.getByTestId("add-video").click();
      const whileDown = [
        post("/api/dev/donate", { donor: `Bob ${n}`, amount: 3, message: "sent while Herald was down" }),
        post("/api/donations/pause"),
      ];
      for (const [name, page] of Object.entries(pages)) {
        await until(`${name}'s indicator leaves connected ${how}`, async () =>
          Number(await attr(page, "connection", "data-disconnects")) > before[name].disconnects ||
          (await attr(page, "connection", "data-state")) !== "connected",
        );
      }
      for (const [name, page] of Object.entries(pages)) {
        await until(`${name}'s indicator says connected again ${how}`, async () =>
          (await attr(page, "connection", "data-state")) === "connected" &&
          Number(await attr(page, "connection", "data-connects")) > before[name].connects,
        30000);
        const trail = (await attr(page, "connection", "data-trail")).split(" ");
        const back = trail.lastIndexOf("connected");
        const previous = trail.lastIndexOf("connected", back - 1);
        assert.ok(
          trail.slice(previous + 1, back).some((s) => s === "disconnected" || s === "connecting"),
          `${name} went through disconnected/connecting ${how}: ${trail.join(" ")}`,
        );
      }
      for (const r of await Promise.all(whileDown)) assert.equal(r.status, 200, JSON.stringify(r.json));
      // And right after it is back.
      const afterTitle = `Requested right after Herald came back ${n}`;
      await dash.getByTestId("video-title").fill(afterTitle);
      await dash.getByTestId("add-video").click();
      await dash.getByTestId("resume-donations").click();
      for (const [name, page] of Object.entries(pages)) {
        await until(`${name} shows both videos ${how}`, async () => {
          const items = await page.getByTestId("queue-item").allTextContents();
          return items.some((s) => s.includes(downTitle)) && items.some((s) => s.includes(afterTitle));
        });
        await until(`${name} shows donations resumed ${how}`, async () => (await attr(page, "donations-state", "data-paused")) === "false");
      }
      await until(`the widget shows Bob's donation ${how}`, async () => (await widget.getByTestId("latest-donation").textContent()).includes(`Bob ${n}`));
      assert.equal(await count(dash, `[data-testid=donation]:has-text("Bob ${n}")`), 1);
      await everythingOnce(how);
      // Both pages came back with their positions (resumed, not started afresh), and no resume
      // needed a reset: Herald kept every channel on disk across the restart.
      const stats = await fetch(`${herald}/api/stats`).then((r) => r.json());
      assert.ok(stats.resumes >= 2, `the pages resumed ${how}: ${stats.resumes} resumes`);
      assert.equal(stats.resumes_reset, 0, `no resume ended in a reset ${how}`);
      assert.equal((await history(QUEUE))[0].split("-")[0], epochs.queue, `the queue channel kept its epoch ${how}`);
      assert.equal((await history(DONATIONS))[0].split("-")[0], epochs.donations, `the donations channel kept its epoch ${how}`);
    }

    // ---- the Reconnect button ----

    const connects = Number(await attr(dash, "connection", "data-connects"));
    await dash.getByTestId("reconnect").click();
    await until("the dashboard reconnects", async () =>
      (await attr(dash, "connection", "data-state")) === "connected" && Number(await attr(dash, "connection", "data-connects")) > connects,
    );
    const trail = (await attr(dash, "connection", "data-trail")).split(" ");
    assert.deepEqual(trail.slice(-3), ["connected", "connecting", "connected"], `the Reconnect button's trail: ${trail.join(" ")}`);
    await dash.getByTestId("video-title").fill("After the Reconnect button");
    await dash.getByTestId("add-video").click();
    await until("the widget shows the last video", async () =>
      (await widget.getByTestId("queue-item").allTextContents()).some((s) => s.includes("After the Reconnect button")),
    );
    await everythingOnce("after the Reconnect button");
    assert.equal(await dash.evaluate(() => window.streamer.client.duplicates), 0, "Herald sent the dashboard nothing twice");

    await dash.getByTestId("clear-queue").click();
    for (const [name, page] of Object.entries(pages)) {
      await until(`${name} shows the queue cleared`, async () => (await count(page, "[data-testid=queue-item]")) === 0);
    }
    assert.deepEqual(errors, [], "no page threw");
  } finally {
    for (const context of contexts) await context.close();
    left = await ex?.end();
    rmSync(dataDir, { recursive: true, force: true });
  }
  assert.deepEqual(left, [], "Ctrl-C left temporary files behind");
}
