// The watch party as its users live it, each page opened with initData this test signs itself
// with the example's (demo) bot token, as Telegram would: alice creates a room and hosts it; bob
// (in two tabs) and later carol follow her player within a second; bob's own controls are
// refused; the chat carries messages and history, and refuses a user's 31st message in a minute;
// the participants list holds each user once; and every page outlives its first token.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startExample, until } from "../lib/testing.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const toml = readFileSync(join(here, "herald.toml"), "utf8");
const BOT_TOKEN = /^bot_token = "([^"]+)"$/m.exec(toml)[1];
const LEEWAY_MS = Number(/^leeway = "(\d+)s"$/m.exec(toml)[1]) * 1000;
/** How soon a guest's player must show what the host did. */
const FOLLOW_MS = 1000;
const USERS = {
  alice: { id: 1001, first_name: "Alice", username: "alice" },
  bob: { id: 1002, first_name: "Bob", username: "bob" },
  carol: { id: 1003, first_name: "Carol", username: "carol" },
};

/** Telegram's initData for `user`, signed with the bot token (HMAC-SHA256, key from "WebAppData"). */
function initData(user, startParam) {
  const fields = [
    ["query_id", `test${user.id}${Date.now()}`],
    ["user", JSON.stringify({ ...user, language_code: "en" })],
    ["auth_date", String(Math.floor(Date.now() / 1000))],
  ];
  if (startParam) fields.push(["start_param", startParam]);
  const check = [...fields]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
  const key = createHmac("sha256", "WebAppData").update(BOT_TOKEN).digest();
  fields.push(["hash", createHmac("sha256", key).update(check).digest("hex")]);
  return fields.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
}

/** Everything the test reads from a page, in one round trip. */
const look = (page) =>
  page.evaluate(() => {
    const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
    const b = document.body.dataset;
    const p = $("player").dataset;
    const error = (id) => ({ code: $(id).dataset.code ?? "", text: $(id).textContent, visible: $(id).offsetParent !== null && $(id).textContent !== "" });
    return {
      state: b.state,
      view: b.view,
      role: b.role,
      room: b.room,
      connId: b.connId,
      connects: Number(b.connects ?? 0),
      renewals: Number(b.renewals ?? 0),
      firstTokenExp: Number(b.firstTokenExp ?? 0),
      tokenExp: Number(b.tokenExp ?? 0),
      subscribed: [...document.querySelectorAll("#room section")].every((s) => s.dataset.subscribed === "true"),
      player: { video: p.video, playing: p.playing === "true", position: Number(p.position), seq: Number(p.seq ?? -1), applied: Number(p.applied ?? 0) },
      participants: [...document.querySelectorAll('[data-testid="participants"] li')].map((li) => li.dataset.userId),
      messages: [...document.querySelectorAll('[data-testid="messages"] li')].map((li) => ({ id: Number(li.dataset.id), user: li.dataset.user, text: li.dataset.text })),
      controlError: error("control-error"),
      chatError: error("chat-error"),
    };
  });

export default async function watchparty(browser, t) {
  const example = await startExample("watchparty", { EXAMPLE_PORT: "0", EXAMPLE_HERALD_LISTEN: "127.0.0.1:0" });
  const contexts = new Map();
  let left;
  try {
    const { app, herald } = example.urls;
    assert.ok(app && herald, `ready lines: ${JSON.stringify(example.urls)}`);
    t.diagnostic(`app ${app}, herald ${herald}`);

    /** A tab of `name`'s, launched as Telegram launches a Mini App: data in the fragment. */
    const open = async (name, room) => {
      if (!contexts.has(name)) contexts.set(name, await browser.newContext());
      const page = await contexts.get(name).newPage();
      page.on("pageerror", (e) => t.diagnostic(`${name}'s page: ${e.message}`));
      const launch = `#tgWebAppData=${encodeURIComponent(initData(USERS[name], room))}&tgWebAppVersion=8.0&tgWebAppPlatform=tdesktop`;
      await page.goto(`${app}/${launch}`);
      await until(`${name}'s page connected`, async () => (await look(page)).state === "connected");
      return page;
    };
    const inRoom = (name, page) =>
      until(`${name}'s page in the room, every channel subscribed`, async () => {
        const s = await look(page);
        return s.view === "room" && s.subscribed && s.player.applied > 0 && s;
      });
    /** Waits (at most FOLLOW_MS) until every page's player satisfies `check`. */
    const follow = async (what, pages, check) => {
      const started = Date.now();
      await until(what, async () => (await Promise.all(pages.map(look))).every((s) => check(s.player)), FOLLOW_MS);
      return Date.now() - started;
    };
    const near = (a, b, within = 0.6) => Math.abs(a - b) <= within;

    // ---- alice opens the Mini App and creates a room: she is its host ----
    const alice = await open("alice");
    assert.equal((await look(alice)).view, "lobby");
    await alice.fill('[data-testid="create-form"] input[name="video"]', "sintel");
    await alice.click('[data-testid="create-form"] button');
    const hosting = await inRoom("alice", alice);
    const room = hosting.room;
    assert.match(room, /^[a-z0-9]{8}$/);
    assert.equal(hosting.role, "host");
    assert.deepEqual([hosting.player.video, hosting.player.playing, hosting.player.position], ["sintel", false, 0]);

    // ---- bob joins through the invitation (start_param), in two tabs ----
    const bob1 = await open("bob", room);
    const bob2 = await open("bob", room);
    for (const [n, p] of [["bob's first tab", bob1], ["bob's second tab", bob2]]) {
      const s = await inRoom(n, p);
      assert.equal(s.role, "guest");
      assert.equal(s.room, room);
      assert.equal(s.player.video, "sintel", `${n} lands on the room's video`);
    }
    const everyone = [alice, bob1, bob2];
    const guests = [bob1, bob2];

    // ---- participants: one entry per user, bob's two tabs included ----
    for (const [n, p] of [["alice", alice], ["bob 1", bob1], ["bob 2", bob2]]) {
      await until(`alice and bob once each on ${n}'s list`, async () => {
        const list = (await look(p)).participants;
        return list.length === 2 && list[0] === "1001" && list[1] === "1002";
      });
    }

    // ---- the host's controls: every guest follows within a second ----
    const took = [];
    await alice.click('[data-testid="play"]');
    took.push(await follow("the guests playing", everyone, (pl) => pl.playing && pl.video === "sintel"));
    await alice.fill('[data-testid="seek-form"] input', "120");
    await alice.click('[data-testid="seek-form"] button');
    took.push(await follow("the guests at 2:00", everyone, (pl) => pl.playing && pl.position >= 120 && pl.position < 122));
    await alice.click('[data-testid="pause"]');
    took.push(await follow("the guests paused", everyone, (pl) => !pl.playing && pl.position >= 120 && pl.position < 123));
    const paused = (await look(alice)).player.position;
    for (const g of guests) assert.ok(near((await look(g)).player.position, paused, 0.01), "paused at the host's position");
    await alice.fill('[data-testid="change-form"] input', "tears-of-steel");
    await alice.click('[data-testid="change-form"] button');
    took.push(await follow("the guests on the new video", everyone, (pl) => pl.video === "tears-of-steel" && !pl.playing && pl.position === 0));
    await alice.fill('[data-testid="seek-form"] input', "300");
    await alice.click('[data-testid="seek-form"] button');
    await alice.click('[data-testid="play"]');
    took.push(await follow("the guests playing from 5:00", everyone, (pl) => pl.video === "tears-of-steel" && pl.playing && pl.position >= 300 && pl.position < 303));
    t.diagnostic(`guests followed in ${took.join(", ")} ms`);

    // ---- bob's controls are refused, and the host's state does not change ----
    const before = (await look(alice)).player;
    await bob1.click('[data-testid="pause"]');
    await until("the refusal on bob's page", async () => (await look(bob1)).controlError.code === "refused");
    await bob1.fill('[data-testid="seek-form"] input', "5");
    await bob1.click('[data-testid="seek-form"] button');
    const refused = await until("bob's seek refused too", async () => {
      const s = await look(bob1);
      return s.controlError.code === "refused" && s.controlError.visible && s;
    });
    assert.match(refused.controlError.text, /only the host, Alice, controls the player/);
    for (const [n, p] of [["alice", alice], ["bob 1", bob1], ["bob 2", bob2]]) {
      const s = (await look(p)).player;
      assert.equal(s.seq, before.seq, `${n}: no new state after bob's attempts`);
      assert.ok(s.playing && s.video === "tears-of-steel" && s.position > before.position, `${n}: still playing on: ${JSON.stringify(s)}`);
    }

    // ---- chat ----
    const send = async (page, text) => {
      await page.fill('[data-testid="chat-form"] input', text);
      await page.click('[data-testid="chat-form"] button');
    };
    const texts = async (page) => (await look(page)).messages.map((m) => `${m.user}: ${m.text}`);
    await send(alice, "Hello everyone!");
    for (const [n, p] of [["bob 1", bob1], ["bob 2", bob2]]) {
      await until(`alice's message on ${n}`, async () => (await texts(p)).includes("1001: Hello everyone!"));
    }
    await send(bob2, "Hi Alice");
    await until("bob's reply on alice's page", async () => (await texts(alice)).join("|") === "1001: Hello everyone!|1002: Hi Alice");

    // ---- carol, a newcomer, lands on the current video and position at once ----
    const carol = await open("carol", room);
    const landed = await inRoom("carol", carol);
    const host = (await look(alice)).player;
    const carolNow = (await look(carol)).player;
    assert.equal(landed.player.applied, 1, "carol's first state is the current one: no replay of older ones");
    assert.equal(carolNow.video, "tears-of-steel");
    assert.equal(carolNow.playing, true);
    assert.ok(near(carolNow.position, host.position), `carol at ${carolNow.position}, alice at ${host.position}`);
    assert.equal(carolNow.seq, host.seq);
    assert.deepEqual(await texts(carol), ["1001: Hello everyone!", "1002: Hi Alice"], "the chat's history, from the app");
    await until("carol on everyone's list once", async () =>
      (await Promise.all([alice, bob1, carol].map(look))).every((s) => s.participants.join() === "1001,1002,1003"),
    );

    // ---- 30 messages a minute: carol's 31st is refused, visibly ----
    await carol.evaluate(() => {
      const form = document.querySelector('[data-testid="chat-form"]');
      for (let i = 1; i <= 31; i++) {
        form.text.value = `burst ${i}`;
        form.requestSubmit();
      }
    });
    const limited = await until("the refusal on carol's page", async () => {
      const s = await look(carol);
      return s.chatError.code === "rate_limited" && s;
    });
    assert.ok(limited.chatError.visible, "the error is shown");
    assert.match(limited.chatError.text, /30 messages a minute/);
    const burst = Array.from({ length: 30 }, (_, i) => `1003: burst ${i + 1}`);
    await until("carol's 30 messages on bob's page", async () => (await texts(bob1)).filter((m) => m.startsWith("1003:")).length >= 30);
    assert.deepEqual((await texts(bob1)).filter((m) => m.startsWith("1003:")), burst, "messages 1 to 30, in order; not the 31st");
    const token = await alice.evaluate(() => window.watchparty.session().token);
    const history = await fetch(`${app}/api/rooms/${room}/history`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json());
    assert.deepEqual(
      history.messages.map((m) => `${m.user.id}: ${m.text}`),
      ["1001: Hello everyone!", "1002: Hi Alice", ...burst],
      "the app's history holds what was published, and not the refused message",
    );
    assert.equal(history.messages[1].user.name, "Bob");

    // ---- every session outlives its first token ----
    const pages = [["alice", alice], ["bob 1", bob1], ["bob 2", bob2], ["carol", carol]];
    const first = await Promise.all(pages.map(([, p]) => look(p)));
    const expired = Math.max(...first.map((s) => s.firstTokenExp)) + LEEWAY_MS + 1500;
    await until("every first token to expire", async () => Date.now() > expired, 20000);
    for (const [i, [n, p]] of pages.entries()) {
      const s = await look(p);
      assert.equal(s.state, "connected", `${n} is connected`);
      assert.equal(s.connId, first[i].connId, `${n} keeps the same connection`);
      assert.equal(s.connects, 1, `${n} never reconnected`);
      assert.ok(s.renewals >= 1 && s.tokenExp > s.firstTokenExp, `${n} renewed its token: ${JSON.stringify(s)}`);
    }
    await alice.fill('[data-testid="seek-form"] input', "42");
    await alice.click('[data-testid="seek-form"] button');
    await follow("the guests at 0:42 on renewed tokens", [alice, bob1, bob2, carol], (pl) => pl.position >= 42 && pl.position < 44);
    await send(bob1, "Still here");
    await until("bob's message on a renewed token", async () => (await texts(carol)).at(-1) === "1002: Still here");

    // ---- the demo launch link, and the proxy endpoint's signature check ----
    const res = await fetch(`${app}/dev/launch?user=carol&room=${room}`, { redirect: "manual" });
    assert.equal(res.status, 302);
    const launched = new URLSearchParams(new URL(res.headers.get("location"), app).hash.slice(1)).get("tgWebAppData");
    const login = await fetch(`${herald}/auth/telegram`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ init_data: launched }),
    }).then((r) => r.json());
    assert.equal(login.user_id, "1003");
    assert.equal(login.start_param, room);
    const forged = await fetch(`${herald}/auth/telegram`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ init_data: launched.replace("Carol", "Alice") }),
    });
    assert.equal(forged.status, 401, "initData changed after signing is refused");
    const unsigned = await fetch(`${app}/herald/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ op: "publish", channel: `room:${room}`, event: "state", data: {}, user: "1001", conn_id: "0" }),
    });
    assert.equal(unsigned.status, 401, "the proxy endpoint answers only Herald");
  } finally {
    for (const c of contexts.values()) await c.close().catch(() => {});
    left = await example.end();
  }
  assert.deepEqual(left, [], "Ctrl-C left temporary files behind");
}
