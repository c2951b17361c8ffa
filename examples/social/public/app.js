// The social app's page: one Herald connection, through nginx, to whichever node it lands on.
// It shows who is online (presence by user, across both nodes) and the posts feed, which
// Postgres fills through Herald's connector; the app's backend signs the connection token.
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const param = new URLSearchParams(location.search).get("user");
const user = /^[A-Za-z0-9_-]{1,64}$/.test(param ?? "") ? param : "alice";
const ONLINE = "online:everyone";
const FEED = "feed:global";

$("user").textContent = user;
let token = null;

const client = new Herald.HeraldClient({
  // nginx passes /realtime/ws and /realtime/sse to the nodes.
  url: "/realtime",
  getToken: async () => {
    const r = await fetch(`/api/token?user=${encodeURIComponent(user)}`).then((res) => res.json());
    token = r.token;
    return token;
  },
});
window.social = { client, user };

client.on("state", (s) => {
  document.body.dataset.state = s.state;
  $("state").textContent = s.state + (s.reason && s.state !== "connected" ? ` (${s.reason})` : "");
});
client.on("connected", (hello) => {
  document.body.dataset.node = hello.node;
  showNodes();
});

const subscribed = (section) => (document.getElementById(section).dataset.subscribed = "true");

// ---- who is online: a set of users, from a presence snapshot and the join/leave pushes ----

const online = new Map();
/** Pushes that arrived while a snapshot was being fetched: applied again on top of it. */
let inFlight = null;

function onPresence(kind, member) {
  inFlight?.push([kind, member]);
  apply(kind, member);
  showOnline();
}

function apply(kind, member) {
  if (!member?.user_id) return;
  if (kind === "join") online.set(member.user_id, member.info ?? {});
  else online.delete(member.user_id);
}

async function snapshot() {
  const pending = (inFlight = []);
  try {
    const r = await client.presence(ONLINE);
    online.clear();
    for (const m of r.users ?? []) apply("join", m);
    for (const [kind, m] of pending) apply(kind, m);
  } catch (e) {
    $("online").dataset.error = e.code ?? e.message;
  } finally {
    if (inFlight === pending) inFlight = null;
  }
  showOnline();
}

function showOnline() {
  $("online").replaceChildren(
    ...[...online.keys()].sort().map((id) => {
      const li = document.createElement("li");
      li.dataset.user = id;
      li.textContent = id === user ? `${id} (you)` : id;
      return li;
    }),
  );
  $("online").dataset.count = String(online.size);
}

// Every (re)subscribe takes a fresh snapshot: who left while this page was away is gone.
client.subscribe(ONLINE, {
  onSubscribed: () => {
    subscribed("online");
    snapshot();
  },
  onJoin: (m) => onPresence("join", m),
  onLeave: (m) => onPresence("leave", m),
});

// ---- the feed: the latest posts from the app, then every change as Postgres commits it ----

/** The posts shown, newest kept: a page open for days shows the latest MAX_POSTS. */
const MAX_POSTS = 200;
const posts = new Map();
/** Posts deleted while the first load was on its way, so the load does not bring them back. */
const deleted = new Set();

function showPosts() {
  if (posts.size > MAX_POSTS) {
    for (const id of [...posts.keys()].sort((a, b) => a - b).slice(0, posts.size - MAX_POSTS)) posts.delete(id);
  }
  $("posts").replaceChildren(
    ...[...posts.values()]
      .sort((a, b) => b.id - a.id)
      .map((p) => {
        const li = document.createElement("li");
        li.dataset.id = p.id;
        li.dataset.author = p.author;
        li.dataset.body = p.body;
        const who = document.createElement("strong");
        who.textContent = p.author;
        const when = document.createElement("small");
        when.textContent = ` ${new Date(p.created_at).toLocaleTimeString()}`;
        li.append(who, `: ${p.body}`, when);
        return li;
      }),
  );
  $("posts").dataset.count = String(posts.size);
}

function upsert(post) {
  if (deleted.has(post.id)) return;
  posts.set(post.id, post);
}

/** The latest posts from the app (from Postgres). */
async function loadLatest() {
  const { posts: latest } = await fetch("/api/posts").then((r) => r.json());
  for (const p of latest) upsert({ ...p, id: Number(p.id) });
  // Ids are never reused: past the load, a deleted post cannot come back.
  deleted.clear();
  showPosts();
}

/**
 * What reached this page through Herald, `EVENT:ID` in order, the latest 1000 (a post that
 * arrived twice would show here).
 */
const received = [];
window.social.received = received;
let loaded = false;

const feed = client.subscribe(FEED, {
  onSubscribed: () => {
    subscribed("feed");
    // Posts from before this page: asked after the first subscribe, so none falls in between.
    // After a reconnect Herald resumes the feed where this page left it: nothing to ask.
    if (!loaded) {
      loaded = true;
      loadLatest();
    }
  },
  onPublication: (pub) => {
    received.push(`${pub.event}:${pub.data?.id}`);
    if (received.length > 1000) received.splice(0, received.length - 1000);
  },
  onReset: () => {
    // Herald no longer holds what this page missed: start again from the database.
    posts.clear();
    loadLatest();
  },
});
feed.on("post.created", (p) => {
  upsert({ ...p, id: Number(p.id) });
  showPosts();
});
feed.on("post.updated", (p) => {
  upsert({ ...p, id: Number(p.id) });
  showPosts();
});
feed.on("post.deleted", (p) => {
  deleted.add(Number(p.id));
  posts.delete(Number(p.id));
  showPosts();
});

$("post-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  $("post-error").textContent = "";
  const res = await fetch("/api/posts", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ body: form.body.value }),
  });
  if (!res.ok) return void ($("post-error").textContent = (await res.json()).error ?? `the app answered ${res.status}`);
  // Nothing to add here: the post arrives through Herald like everyone else's.
  form.body.value = "";
});

// ---- the nodes behind nginx ----

async function showNodes() {
  const { nodes } = await fetch("/api/nodes").then((r) => r.json());
  const mine = document.body.dataset.node;
  $("nodes").replaceChildren(
    ...nodes.map((n) => {
      const tr = document.createElement("tr");
      tr.dataset.mine = String(n.id === mine);
      for (const text of [n.name, n.pid, n.id ?? n.error, n.connections ?? "", n.outbox_leader ? "reads it" : "standby"]) {
        const td = document.createElement("td");
        td.textContent = String(text);
        tr.append(td);
      }
      return tr;
    }),
  );
  const here = nodes.find((n) => n.id === mine);
  $("node").textContent = here ? `${here.name} (${mine})` : mine ?? "…";
  $("node").dataset.name = here?.name ?? "";
}
setInterval(showNodes, 2000);

client.connect();
