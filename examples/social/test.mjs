// The scaled social app as its users and its operator see it: alice and bob on different Herald
// nodes behind nginx each see both online (bob once, with two tabs), a post written through the
// app and rows changed straight in Postgres reach both pages through the connector, bob leaving
// reaches alice's node, Prometheus scrapes both nodes, and when alice's node is killed her page
// moves to the other one and gets the post made meanwhile.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import pg from "pg";
import { listening, startExample, until } from "../lib/testing.mjs";

/** How many times a page is reopened to land on the other node (nginx round robin). */
const TRIES = 6;

export default async function social(browser, t) {
  // REDIS_URL and DATABASE_URL empty: the example starts its own, never ones the machine shares.
  const example = await startExample("social", {
    EXAMPLE_PORT: "0",
    EXAMPLE_NODE1_LISTEN: "127.0.0.1:0",
    EXAMPLE_NODE2_LISTEN: "127.0.0.1:0",
    EXAMPLE_PROMETHEUS_PORT: "0",
    REDIS_URL: "",
    DATABASE_URL: "",
  });
  const contexts = [];
  let db;
  let left;
  try {
    const { app, node1, node2, postgres, prometheus } = example.urls;
    assert.ok(app && node1 && node2 && postgres && prometheus, `ready lines: ${JSON.stringify(example.urls)}`);
    t.diagnostic(`app ${app}, nodes ${node1} ${node2}, prometheus ${prometheus}`);
    const key = /^key = "([^"]+)"$/m.exec(readFileSync(new URL("./herald.toml", import.meta.url), "utf8"))[1];
    const stats = (node) => fetch(`${node}/api/stats`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.json());
    const ids = { [(await stats(node1)).node]: "node 1", [(await stats(node2)).node]: "node 2" };
    const urlOf = { [(await stats(node1)).node]: node1, [(await stats(node2)).node]: node2 };
    assert.equal(Object.keys(ids).length, 2, "the two nodes have ids of their own");

    const look = (page) =>
      page.evaluate(() => ({
        state: document.body.dataset.state,
        node: document.body.dataset.node,
        subscribed: [...document.querySelectorAll("section[data-subscribed]")].every((s) => s.dataset.subscribed === "true"),
        online: [...document.querySelectorAll('[data-testid="online"] li')].map((li) => li.dataset.user),
        posts: [...document.querySelectorAll('[data-testid="posts"] li')].map((li) => `${li.dataset.author}: ${li.dataset.body}`),
        nodes: [...document.querySelectorAll('[data-testid="nodes"] tr')].map((tr) => tr.dataset.mine),
        nodeName: document.querySelector('[data-testid="node"]').dataset.name,
      }));
    const errors = [];
    const open = async (user, context) => {
      if (!context) {
        context = await browser.newContext();
        contexts.push(context);
      }
      const page = await context.newPage();
      page.on("pageerror", (e) => errors.push(`${user}'s page: ${e.message}`));
      await page.goto(`${app}/?user=${user}`);
      await until(`${user}'s page connected and subscribed`, async () => {
        const l = await look(page);
        return l.state === "connected" && l.subscribed && l.node;
      });
      return page;
    };
    /** Opens a page for `user` until it is served by a node other than `notOn`'s. */
    const openElsewhere = async (user, notOn, context) => {
      for (let i = 0; i < TRIES; i++) {
        const page = await open(user, context);
        if ((await look(page)).node !== notOn) return page;
        await page.close();
      }
      throw new Error(`${TRIES} pages of ${user} all landed on ${ids[notOn]}: nginx does not spread them`);
    };

    // ---- alice and bob on different nodes, each seeing both online ----
    const alice = await open("alice");
    const aliceNode = (await look(alice)).node;
    const bobContext = await browser.newContext();
    contexts.push(bobContext);
    const bob = await openElsewhere("bob", aliceNode, bobContext);
    const bobNode = (await look(bob)).node;
    assert.ok(ids[aliceNode] && ids[bobNode], "each page names a node of the example");
    t.diagnostic(`alice on ${ids[aliceNode]}, bob on ${ids[bobNode]}`);
    for (const [name, page, node] of [["alice", alice, aliceNode], ["bob", bob, bobNode]]) {
      await until(`${name}'s page shows alice and bob online`, async () => (await look(page)).online.join() === "alice,bob");
      await until(`${name}'s page shows the nodes, its own marked`, async () => {
        const l = await look(page);
        return l.nodes.length === 2 && l.nodes.filter((m) => m === "true").length === 1 && l.nodeName === ids[node];
      });
    }

    // bob's second tab: still one bob, on both pages and on both nodes' presence.
    const bob2 = await open("bob", bobContext);
    await until("bob's second tab sees alice and bob", async () => (await look(bob2)).online.join() === "alice,bob");
    for (const node of [node1, node2]) {
      const p = await fetch(`${node}/api/presence?channel=online:everyone`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.json());
      assert.deepEqual(p.users.map((u) => u.user_id).sort(), ["alice", "bob"], `presence on ${node}: ${JSON.stringify(p)}`);
    }
    for (const [name, page] of [["alice", alice], ["bob", bob]]) {
      assert.deepEqual((await look(page)).online, ["alice", "bob"], `${name}'s page lists bob once with two tabs`);
    }

    // ---- posts: through the app, and straight in Postgres, shown on both pages ----
    const pages = { alice, bob, bob2 };
    const allShow = async (what, want) => {
      for (const [name, page] of Object.entries(pages)) {
        await until(`${name}'s page shows ${what}`, async () => JSON.stringify((await look(page)).posts) === JSON.stringify(want));
      }
    };
    // The app writes posts only for a user its token names; a forged token is refused too.
    const { token } = await fetch(`${app}/api/token?user=mallory`).then((r) => r.json());
    const [head, claims] = token.split(".");
    const forged = `${head}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(claims, "base64url")), sub: "alice" })).toString("base64url")}.${token.split(".")[2]}`;
    for (const authorization of [undefined, `Bearer ${forged}`]) {
      const res = await fetch(`${app}/api/posts`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(authorization && { authorization }) },
        body: JSON.stringify({ body: "not mine to post" }),
      });
      assert.equal(res.status, 401, `a post with ${authorization ? "a forged token" : "no token"}`);
    }
    await alice.fill('[data-testid="post-form"] input[name="body"]', "hello from alice");
    await alice.click('[data-testid="post-form"] button');
    await allShow("alice's post", ["alice: hello from alice"]);
    db = new pg.Client({ connectionString: postgres });
    await db.connect();
    const [first] = (await db.query("SELECT id FROM posts WHERE author = 'alice'")).rows;

    const { rows } = await db.query("INSERT INTO posts (author, body) VALUES ('carol', 'written in psql') RETURNING id");
    await allShow("the row inserted in Postgres", ["carol: written in psql", "alice: hello from alice"]);
    // A transaction that rolls back publishes nothing; the next one does.
    await db.query("BEGIN");
    await db.query("INSERT INTO posts (author, body) VALUES ('carol', 'never committed')");
    await db.query("ROLLBACK");
    await db.query("UPDATE posts SET body = 'edited in psql' WHERE id = $1", [rows[0].id]);
    await allShow("the row updated in Postgres", ["carol: edited in psql", "alice: hello from alice"]);
    await db.query("DELETE FROM posts WHERE id = $1", [rows[0].id]);
    await allShow("the row deleted in Postgres", ["alice: hello from alice"]);

    // One node reads the outbox (it holds the lease); the other stands by.
    const connectors = await Promise.all([node1, node2].map(async (n) => (await stats(n)).connectors.find((c) => c.name === "social")));
    assert.deepEqual(connectors.map((c) => c.leader).sort(), [false, true], JSON.stringify(connectors));
    const leader = connectors.find((c) => c.leader);
    assert.equal(leader.state, "connected");
    assert.equal(leader.events.published, 4, "the post, the insert, the update and the delete; not the rolled-back insert");

    // A new page lands on the feed as it is now, from the app.
    const late = await open("dave");
    await until("a late page shows the feed as it is", async () => (await look(late)).posts.join() === "alice: hello from alice");
    await until("the late page sees everyone online", async () => (await look(late)).online.join() === "alice,bob,dave");
    await late.close();

    // ---- Prometheus scrapes both nodes ----
    const query = async (q) => {
      const r = await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(q)}`).then((res) => res.json());
      assert.equal(r.status, "success", JSON.stringify(r));
      return r.data.result;
    };
    const targets = [node1, node2].map((n) => new URL(n).host).sort();
    await until(
      "Prometheus to scrape both nodes",
      async () => JSON.stringify((await query('up{job="herald"} == 1')).map((s) => s.metric.instance).sort()) === JSON.stringify(targets),
      30000,
    );
    await until(
      "Prometheus to see connections on both nodes",
      async () => (await query("sum by (instance) (herald_connections) > 0")).length === 2,
      30000,
    );

    const leaders = await until("Prometheus to see which node reads the outbox", async () => {
      const r = await query('herald_connector_leader{name="social"} == 1');
      return r.length === 1 && r;
    }, 30000);
    assert.equal(leaders[0].metric.instance, new URL(connectors[0].leader ? node1 : node2).host);

    // ---- bob leaves: one tab changes nothing, the last one reaches alice's node ----
    const before = (await stats(urlOf[bobNode])).connections.total;
    await bob.close();
    await until("bob's first tab's connection closed on his node", async () => (await stats(urlOf[bobNode])).connections.total === before - 1);
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual((await look(alice)).online, ["alice", "bob"], "bob still online with one tab open");
    await bob2.close();
    await until("alice's page shows bob gone", async () => (await look(alice)).online.join() === "alice");

    // ---- alice's node dies: her page moves to the other node through nginx, missing nothing ----
    const { nodes } = await fetch(`${app}/api/nodes`).then((r) => r.json());
    const victim = nodes.find((n) => n.id === aliceNode);
    const survivor = nodes.find((n) => n.id !== aliceNode);
    t.diagnostic(`killing ${victim.name} (pid ${victim.pid}), which ${victim.outbox_leader ? "reads" : "does not read"} the outbox`);
    process.kill(victim.pid, "SIGKILL");
    const [erin] = (await db.query("INSERT INTO posts (author, body) VALUES ('erin', 'while a node was down') RETURNING id")).rows;
    await until(
      "alice's page to reconnect to the other node",
      async () => {
        const l = await look(alice);
        return l.state === "connected" && l.node === survivor.id;
      },
      30000,
    );
    // If the dead node held the outbox's lease, the survivor takes it once it runs out (10 s).
    await until(
      "alice's page to show the post made while her node was down",
      async () => (await look(alice)).posts.join("|") === "erin: while a node was down|alice: hello from alice",
      30000,
    );
    const received = await alice.evaluate(() => window.social.received);
    assert.deepEqual(
      received.filter((r) => r.startsWith("post.created:")),
      [`post.created:${first.id}`, `post.created:${rows[0].id}`, `post.created:${erin.id}`],
      `alice's page received each post once, through Herald: ${received}`,
    );
    const after = (await stats(urlOf[survivor.id])).connectors.find((c) => c.name === "social");
    assert.equal(after.leader, true, "the survivor reads the outbox");
    assert.deepEqual((await look(alice)).online, ["alice"], "alice is online on her new node");

    assert.deepEqual(errors, [], "no page threw");
  } finally {
    await db?.end().catch(() => {});
    for (const c of contexts) await c.close().catch(() => {});
    left = await example.end();
  }
  assert.deepEqual(left, [], "Ctrl-C left temporary files behind");
  // Redis and Postgres run outside the example's process group: it stopped them itself.
  for (const service of ["redis", "postgres", "prometheus", "app"]) {
    assert.equal(await listening(example.urls[service]), false, `the example's ${service} at ${example.urls[service]} still runs after it stopped`);
  }
}
