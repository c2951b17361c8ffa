// The overlays as a streamer's OBS scene uses them: Helix's numbers reach the goal bar; a
// follow, a subscription, a gift (whose recipients' subscriptions are no alerts of their own),
// a cheer and a raid each show once, in order, on the alert box, even when Twitch delivers a
// message twice or moves Herald to a new socket; an alert box opened later shows none of the old
// alerts; a stats widget opened late shows the current numbers at once, from the state the
// channel keeps, not from a new poll.
import assert from "node:assert/strict";
import { sleep, startExample, until } from "../lib/testing.mjs";

export default async function twitch(browser, t) {
  const example = await startExample("twitch", { EXAMPLE_PORT: "0", EXAMPLE_HERALD_LISTEN: "127.0.0.1:0" });
  const contexts = [];
  let left;
  try {
    const { app, herald, twitch } = example.urls;
    assert.ok(app && herald && twitch, `ready lines: ${JSON.stringify(example.urls)}`);
    t.diagnostic(`app ${app}, herald ${herald}, fake twitch ${twitch}`);
    const { channel } = await fetch(`${app}/config.json`).then((r) => r.json());
    assert.equal(channel, "twitch:herald_demo");

    const control = async (action, body = {}) => {
      const res = await fetch(`${twitch}/control/${action}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const json = await res.json();
      assert.equal(res.status, 200, `${action}: ${JSON.stringify(json)}`);
      return json;
    };
    const fakeState = () => fetch(`${twitch}/control/state`).then((r) => r.json());
    const history = () => fetch(`${herald}/api/history?channel=${channel}&limit=1000`).then((r) => r.json());
    const connector = async () => (await fetch(`${herald}/api/stats`).then((r) => r.json())).connectors.find((c) => c.kind === "twitch");

    const open = async (path) => {
      const context = await browser.newContext();
      contexts.push(context);
      const page = await context.newPage();
      page.on("pageerror", (e) => t.diagnostic(`${path}: ${e.message}`));
      await page.goto(`${app}/${path}`);
      await until(`${path} connected and subscribed`, () =>
        page.evaluate(() => document.body.dataset.state === "connected" && document.body.dataset.subscribed === "true"),
      );
      return page;
    };
    const shown = (page) => page.evaluate(() => window.overlay.shown.map(({ kind, name }) => ({ kind, name })));
    const goal = (page) =>
      page.$eval('[data-testid="goal"]', (el) => ({
        followers: Number(el.dataset.followers),
        percent: Number(el.dataset.percent),
        latest: document.querySelector('[data-testid="goal-latest"]').textContent,
      }));

    // ---- Helix's numbers reach the goal bar at the next poll ----
    const alerts = await open("alert.html?duration=250");
    const goalPage = await open("goal.html?target=20");
    await control("stats", { live: true, viewers: 42, followers: 10, subs: 3 });
    await until("the goal bar at 10 of 20 followers (the next poll)", async () => (await goal(goalPage)).followers === 10, 15000);
    assert.equal((await goal(goalPage)).percent, 50);

    // ---- alerts: each once, in order ----
    await control("follow", { user: "Ada" });
    await until("the goal bar moved by the follow", async () => (await goal(goalPage)).followers === 11);
    const g = await goal(goalPage);
    assert.equal(g.percent, 55);
    assert.equal(g.latest, "Latest: Ada");

    await control("subscribe", { user: "Bo", tier: "2000" });
    await control("gift", { user: "Cy", total: 3 });
    const cheer = await control("cheer", { user: "Dee", bits: 500, message: "Cheer500 <b>hi</b>" });
    // Twitch delivers at least once: the same message again is published once.
    const again = await control("redeliver", { message_id: cheer.message_id });
    assert.equal(again.message_id, cheer.message_id);
    assert.equal(again.delivered, 1, "the repeat went out to Herald's session");
    await control("raid", { user: "Eve", viewers: 12 });
    const expected = [
      { kind: "channel.follow", name: "Ada" },
      { kind: "channel.subscribe", name: "Bo" },
      { kind: "channel.subscription.gift", name: "Cy" },
      { kind: "channel.cheer", name: "Dee" },
      { kind: "channel.raid", name: "Eve" },
    ];
    const all = await until("every alert shown", async () => {
      const list = await shown(alerts);
      return list.length >= expected.length && (await alerts.evaluate(() => window.overlay.queued())) === 0 && list;
    }).catch(() => shown(alerts));
    assert.deepEqual(all, expected, "each alert once, in order; the gift's recipients are no alerts of their own");
    const cheerShown = await alerts.evaluate(() => window.overlay.shown.find((a) => a.kind === "channel.cheer"));
    assert.equal(cheerShown.detail, "Cheer500 <b>hi</b>", "the cheer's message, as text");
    assert.equal(cheerShown.title, "500 bits");
    const published = (await history()).publications.filter((p) => p.event === "channel.cheer");
    assert.equal(published.length, 1, "the cheer delivered twice was published once");
    assert.ok((await connector()).events.duplicate >= 1, "the connector counted the repeat");

    // ---- Twitch moves the connector to a new socket: nothing lost, nothing doubled ----
    const before = await fakeState();
    await control("reconnect");
    await until("the connector on the new socket, the old one closed", async () => {
      const s = await fakeState();
      return s.sessions.length === 1 && s.sessions[0].sockets === 1 && (await connector()).reconnects >= 1;
    });
    assert.equal((await fakeState()).subscriptions_created, before.subscriptions_created, "subscriptions carried over, none re-created");
    await control("follow", { user: "Fay" });
    await until("the follow after the hand-off", async () => (await shown(alerts)).length === expected.length + 1);
    assert.deepEqual((await shown(alerts)).at(-1), { kind: "channel.follow", name: "Fay" });
    await until("the goal bar at 12", async () => (await goal(goalPage)).followers === 12);

    // ---- an alert box opened now shows none of the alerts before it ----
    const lateAlerts = await open("alert.html?duration=250");
    await sleep(500);
    assert.deepEqual(await shown(lateAlerts), [], "no old alert replayed on a new alert box");
    await control("follow", { user: "Gus" });
    await until("the new follow on the late alert box", async () => (await shown(lateAlerts)).length === 1);
    assert.deepEqual(await shown(lateAlerts), [{ kind: "channel.follow", name: "Gus" }]);
    await until("the new follow on the first alert box", async () => (await shown(alerts)).length === expected.length + 2);

    // ---- a token that stops working is refreshed, and the numbers keep coming ----
    await control("expire-token");
    await control("stats", { viewers: 64 });
    // Once Herald's newest stats are what Helix reports, nothing changes, so no poll publishes.
    const settled = await until(
      "Herald's stats matching Helix (after a token refresh)",
      async () => {
        const s = await fakeState();
        const { publications, position } = await history();
        const last = publications.filter((p) => p.event === "stats").at(-1)?.data;
        const want = { live: s.live, viewers: s.viewers, followers: s.followers, subs: s.subs };
        return Object.keys(want).every((k) => last?.[k] === want[k]) && { want, position };
      },
      20000,
    );
    assert.ok((await fakeState()).token_refreshes >= 1, "the connector refreshed the token");
    assert.deepEqual(settled.want, { live: true, viewers: 64, followers: 13, subs: 3 + 1 + 3 });

    // ---- the stats widget, opened late, shows the current numbers at once ----
    const context = await browser.newContext();
    contexts.push(context);
    const statsPage = await context.newPage();
    statsPage.on("pageerror", (e) => t.diagnostic(`stats.html: ${e.message}`));
    const opened = Date.now();
    await statsPage.goto(`${app}/stats.html`);
    const values = await until(
      "the stats widget showing numbers",
      () => statsPage.$eval('[data-testid="stats"]', (el) => el.dataset.values && { ...JSON.parse(el.dataset.values), offset: Number(el.dataset.offset) }),
      3000,
    );
    const took = Date.now() - opened;
    t.diagnostic(`stats shown ${took} ms after opening the page`);
    assert.ok(took < 2000, `the stats took ${took} ms`);
    const { offset, ...numbers } = values;
    assert.deepEqual(numbers, settled.want);
    const now = (await history()).position;
    assert.deepEqual(now, settled.position, "nothing was published meanwhile: the numbers came from the channel's kept state");
    assert.ok(offset <= settled.position.offset);
    assert.equal(await statsPage.textContent('[data-testid="stats-live"]'), "LIVE");
    assert.equal(await statsPage.textContent('[data-testid="stats-viewers"]'), "64");
    assert.equal(await statsPage.textContent('[data-testid="stats-subs"]'), "7");

    // ---- stream.offline reaches the stats at once, between polls ----
    await control("offline");
    await until("the stats widget offline", async () => (await statsPage.textContent('[data-testid="stats-live"]')) === "offline", 3000);
    assert.equal(JSON.parse(await statsPage.getAttribute('[data-testid="stats"]', "data-values")).viewers, 0);
    assert.equal((await shown(alerts)).length, expected.length + 2, "going offline is no alert");
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    left = await example.end();
  }
  assert.deepEqual(left, [], "Ctrl-C left temporary files behind");
}
