// The worker gateway as alice and bob use it: a Python worker's progress through Redis (pub/sub
// and the lossless stream) reaches both pages completely; an alert for alice reaches alice only,
// and Herald refuses bob's attempt to read her alerts; alice's question is answered chunk by
// chunk, in order, then completed, on her page only.
import assert from "node:assert/strict";
import { listening, startExample, until } from "../lib/testing.mjs";

export default async function gateway(browser, t) {
  // REDIS_URL empty: the example starts its own Redis, never one the machine shares.
  const example = await startExample("gateway", { EXAMPLE_PORT: "0", EXAMPLE_HERALD_LISTEN: "127.0.0.1:0", REDIS_URL: "" });
  const contexts = [];
  const { app, herald, redis } = example.urls;
  let left;
  try {
    assert.ok(app && herald && redis, `ready lines: ${JSON.stringify(example.urls)}`);
    t.diagnostic(`app ${app}, herald ${herald}, redis ${redis}`);

    const open = async (user) => {
      const context = await browser.newContext();
      contexts.push(context);
      const page = await context.newPage();
      page.on("pageerror", (e) => t.diagnostic(`${user}'s page: ${e.message}`));
      await page.goto(`${app}/?user=${user}`);
      await until(`${user}'s page connected and subscribed`, () =>
        page.evaluate(
          () =>
            document.body.dataset.state === "connected" &&
            [...document.querySelectorAll("section")].every((s) => s.dataset.subscribed === "true"),
        ),
      );
      return page;
    };
    const alice = await open("alice");
    const bob = await open("bob");
    const attr = (page, id, name) => page.getAttribute(`[data-testid="${id}"]`, name);

    // ---- job progress: the worker publishes through Redis only ----
    await alice.click('[data-testid="start-job"]');
    const finished = await until("the worker to finish", async () => {
      const { runs } = await fetch(`${app}/api/jobs`).then((r) => r.json());
      return runs.at(-1)?.state !== "running" && runs.at(-1);
    });
    assert.equal(finished.state, "done", `the worker failed: ${finished.errors}`);
    const sent = finished.sent.map((s) => s.data);
    assert.ok(sent.length >= 3, `the worker sent ${sent.length} steps`);
    assert.ok(finished.sent.some((s) => s.via === "pubsub") && finished.sent.some((s) => s.via === "stream"));
    for (const s of finished.sent.filter((s) => s.via === "pubsub")) {
      assert.ok(s.receivers >= 1, `step ${s.step} was PUBLISHed to nobody: Herald was not subscribed`);
    }
    for (const [user, page] of [["alice", alice], ["bob", bob]]) {
      await until(`${user}'s progress bar at 100%`, async () => (await attr(page, "progress", "value")) === "100");
      const steps = () => page.$$eval('[data-testid="steps"] li', (lis) => lis.map((li) => JSON.parse(li.dataset.pub)));
      // On a timeout, compare what is there: the difference is the message.
      const shown = await until(`every step on ${user}'s page`, async () => {
        const list = await steps();
        return list.length >= sent.length && list;
      }).catch(steps);
      assert.deepEqual(shown, sent, `${user}'s page shows exactly the steps the worker sent`);
    }

    // ---- alerts: alerts:alice is alice's only ----
    await alice.selectOption('[data-testid="alert-form"] select', "alice");
    await alice.fill('[data-testid="alert-form"] input[name="text"]', "Disk almost full on render-3");
    await alice.click('[data-testid="alert-form"] button');
    // Bob's own alert, sent after alice's, shows that bob's page is live when we look.
    const res = await fetch(`${app}/api/alerts`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: "bob", text: "Your export is ready" }),
    });
    assert.equal(res.status, 200, await res.text());
    const alerts = (page) => page.$$eval('[data-testid="alerts"] li', (lis) => lis.map((li) => li.dataset.text));
    await until("alice's alert on alice's page", async () => (await alerts(alice)).includes("Disk almost full on render-3"));
    await until("bob's alert on bob's page", async () => (await alerts(bob)).includes("Your export is ready"));
    assert.deepEqual(await alerts(alice), ["Disk almost full on render-3"]);
    assert.deepEqual(await alerts(bob), ["Your export is ready"], "bob's page never shows alice's alert");

    // Bob asks Herald for alice's alerts from his page: the SDK reports the refusal.
    await bob.fill('[data-testid="peek-form"] input[name="user"]', "alice");
    await bob.click('[data-testid="peek-form"] button');
    await until("the refusal on bob's page", async () => (await attr(bob, "peek-result", "data-code")) === "forbidden");
    // And straight over SSE with bob's token, without the SDK: 403 for alice's channels.
    const bobToken = (await fetch(`${app}/api/token?user=bob`).then((r) => r.json())).token;
    for (const channel of ["alerts:alice", "answers:alice"]) {
      const sse = await fetch(`${herald}/sse?channel=${channel}&token=${bobToken}`);
      const body = await sse.json();
      assert.equal(sse.status, 403, `${channel}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, "forbidden");
    }
    const anonymous = await fetch(`${herald}/sse?channel=alerts:alice`);
    assert.equal(anonymous.status, 401, "no token, no user channel");
    await anonymous.body?.cancel();

    // ---- the AI answer: many chunks to alice, then completion ----
    const answer = (page) =>
      page.$eval('[data-testid="answer"]', (el) => ({
        state: el.dataset.state,
        expected: Number(el.dataset.expected),
        total: Number(el.dataset.total),
        indexes: [...el.children].map((s) => Number(s.dataset.index)),
        text: el.textContent,
        received: Number(el.dataset.received ?? 0),
      }));
    await alice.fill('[data-testid="ask-form"] input[name="prompt"]', "How do workers reach the browser?");
    await alice.click('[data-testid="ask-form"] button');
    await until("the answer streaming on alice's page, chunk by chunk", async () => {
      const a = await answer(alice);
      return a.state === "streaming" && a.indexes.length >= 1 && (!a.expected || a.indexes.length < a.expected);
    });
    const done = await until("the answer complete", async () => {
      const a = await answer(alice);
      return ["complete", "incomplete", "failed"].includes(a.state) && a.expected && a;
    });
    assert.equal(done.state, "complete");
    assert.ok(done.expected > 10, `only ${done.expected} chunks`);
    assert.equal(done.total, done.expected, "the completion event counts every chunk the backend sent");
    assert.deepEqual(done.indexes, [...Array(done.expected).keys()], "every chunk once, in order");
    assert.match(done.text, /^You asked: "How do workers reach the browser\?"/);
    const bobAnswer = await answer(bob);
    assert.equal(done.received, done.expected + 1, "alice's channel brought the chunks and the completion");
    assert.equal(bobAnswer.received, 0, "bob's page received nothing on its answers channel");
    assert.equal(bobAnswer.indexes.length, 0, "bob's page shows no chunk");
    assert.equal(bobAnswer.state, "idle");
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    left = await example.end();
  }
  // Ctrl-C stopped the Redis it started in a process group of its own, after Herald.
  assert.equal(await listening(redis), false, `the example's Redis at ${redis} still runs after it stopped`);
  assert.deepEqual(left, [], "Ctrl-C left temporary files behind");
}
