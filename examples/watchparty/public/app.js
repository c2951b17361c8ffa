// The watch party's Mini App page. Telegram opens it with the launch data in the URL's fragment
// (`#tgWebAppData=...`); the page logs in with it at Herald (POST /auth/telegram), keeps the token
// fresh (POST /auth/refresh), and holds one Herald connection carrying the room's player state
// (room:ID) and its chat (chat:ID).
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const ROOM_ID = /^[a-z0-9]{8}$/;
const body = document.body;

/** A launch parameter: Telegram puts them in the fragment, some clients in the query. */
function launchParam(name) {
  for (const part of [location.hash.slice(1), location.search.slice(1)]) {
    const value = new URLSearchParams(part).get(name);
    if (value) return value;
  }
  return null;
}

function problem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text ?? "";
}

function showError(id, error) {
  const el = $(id);
  el.dataset.code = error?.code ?? (error ? "error" : "");
  el.textContent = error ? error.text ?? error.message : "";
}

function applyTheme() {
  // Telegram passes its colours along; outside Telegram the page keeps its own.
  try {
    const theme = JSON.parse(launchParam("tgWebAppThemeParams") ?? "{}");
    for (const [key, css] of [["bg_color", "--bg"], ["text_color", "--text"], ["button_color", "--button"], ["button_text_color", "--button-text"], ["secondary_bg_color", "--card"], ["hint_color", "--hint"]]) {
      if (/^#[0-9a-f]{3,8}$/i.test(theme[key] ?? "")) document.documentElement.style.setProperty(css, theme[key]);
    }
  } catch {
    // No theme, or not JSON: the page's own colours.
  }
}

// ---- logging in: Telegram's initData for a Herald token ----

const initData = launchParam("tgWebAppData");
const config = await fetch("/api/config").then((r) => r.json());
applyTheme();

/** `{token, exp (ms), user_id, user, start_param}` of the current login. */
let session = null;
let renewals = 0;
/** Renew this long before the token's `exp` (set from the first token's lifetime). */
let refreshBefore = 30000;

function keep(answer) {
  session = { ...session, ...answer, exp: answer.expires_at * 1000 };
  body.dataset.tokenExp = String(session.exp);
  body.dataset.firstTokenExp ??= String(session.exp);
}

async function heraldPost(path, init) {
  const res = await fetch(`${config.herald}${path}`, { method: "POST", ...init });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) {
    const error = new Error(json.error?.message ?? `${path} answered ${res.status}`);
    error.code = json.error?.code ?? String(res.status);
    throw error;
  }
  return json;
}

async function login() {
  keep(
    await heraldPost("/auth/telegram", {
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ init_data: initData }),
    }),
  );
}

async function renew() {
  keep(await heraldPost("/auth/refresh", { headers: { authorization: `Bearer ${session.token}` } }));
  body.dataset.renewals = String(++renewals);
}

let renewing = null;
/** A token good for a while: the current one, a renewed one, or (the session over) a new login. */
function freshToken({ force = false } = {}) {
  const left = session.exp - Date.now();
  if (!force && left > refreshBefore + 1000) return Promise.resolve(session.token);
  renewing ??= (async () => {
    try {
      if (left > 500) {
        try {
          await renew();
          return session.token;
        } catch (e) {
          console.warn(`renewal refused (${e.message}); logging in again`);
        }
      }
      try {
        await login();
      } catch (e) {
        problem(`Your Telegram login is no longer valid (${e.message}). Close the Mini App and open it again.`);
        throw e;
      }
      return session.token;
    } finally {
      renewing = null;
    }
  })();
  return renewing;
}

/** A call to the app's backend, which checks the Herald token itself. */
async function appFetch(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const token = await freshToken({ force: attempt > 0 });
    const res = await fetch(path, { ...init, headers: { ...init.headers, authorization: `Bearer ${token}` } });
    if (res.status === 401 && attempt === 0) continue;
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(json.error ?? `${path} answered ${res.status}`);
    return json;
  }
}

if (!initData) {
  problem(
    config.dev
      ? "No Telegram launch data in this URL. Open the Mini App from Telegram, or (demo only) /dev/launch?user=alice."
      : "No Telegram launch data in this URL. Open the Mini App from Telegram.",
  );
  throw new Error("no tgWebAppData");
}
try {
  await login();
} catch (e) {
  problem(`Telegram login refused: ${e.message}`);
  throw e;
}
refreshBefore = Math.min(30000, Math.max(1000, Math.floor((session.exp - Date.now()) * 0.4)));
const me = session.user_id;
body.dataset.user = me;
$("me").textContent = `${session.user.first_name}${session.user.username ? ` (@${session.user.username})` : ""}`;

// ---- one Herald connection ----

const client = new Herald.HeraldClient({
  url: config.herald,
  transport: "websocket",
  // Asked on every connect and `refreshBefore` ms before the token expires: the SDK hands the
  // renewed token to the open WebSocket (`auth`), so the connection and its channels stay.
  getToken: () => freshToken(),
  refreshBefore,
});
/** Herald's clock minus ours, from each connection's hello: positions are timed by Herald. */
let clockOffset = 0;
let connects = 0;
client.on("state", (s) => {
  body.dataset.state = s.state;
  $("state").textContent = s.state + (s.reason && s.state !== "connected" ? ` (${s.reason})` : "");
});
client.on("connected", (hello) => {
  clockOffset = hello.time - Date.now();
  body.dataset.connId = hello.conn_id;
  body.dataset.connects = String(++connects);
});
client.connect();
window.watchparty = { client, session: () => session };

// ---- the lobby: create a room ----

$("create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("create-error", null);
  try {
    const { room } = await appFetch("/api/rooms", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ video: e.target.video.value }),
    });
    // A reload comes back to this room.
    history.replaceState(null, "", `?room=${room.id}${location.hash}`);
    enter(room);
  } catch (err) {
    showError("create-error", err);
  }
});

const wanted = [new URLSearchParams(location.search).get("room"), session.start_param].find((r) => ROOM_ID.test(r ?? ""));
if (wanted) {
  try {
    enter((await appFetch(`/api/rooms/${wanted}`)).room);
  } catch (e) {
    problem(`Cannot join room ${wanted}: ${e.message}. Start a new one instead.`);
    body.dataset.view = "lobby";
    document.getElementById("lobby").hidden = false;
  }
} else {
  body.dataset.view = "lobby";
  document.getElementById("lobby").hidden = false;
}

// ---- the room ----

function enter(room) {
  document.getElementById("lobby").hidden = true;
  document.getElementById("room").hidden = false;
  body.dataset.view = "room";
  body.dataset.room = room.id;
  const host = room.host.id;
  body.dataset.role = host === me ? "host" : "guest";
  $("room-name").textContent = room.name;
  $("host").textContent = host === me ? "you" : room.host.name;
  $("controls-hint").textContent =
    host === me
      ? "You are the host: your controls drive everyone's player."
      : `Only the host's controls take effect: Herald asks the app before each change, and the app refuses anyone but ${room.host.name}.`;
  showInvite(room);
  player(room.id);
  people(room.id, host);
  chat(room.id);
}

function showInvite(room) {
  const el = $("invite");
  el.replaceChildren();
  const link = (href, text) => Object.assign(document.createElement("a"), { href, textContent: text, target: "_blank" });
  if (room.invite.telegram) el.append("Invite friends: ", link(room.invite.telegram, room.invite.telegram));
  else if (room.invite.dev) {
    el.append("Demo only, outside Telegram: open this room as ");
    ["bob", "carol", "dave"].forEach((name, i) => el.append(i ? ", " : "", link(`${room.invite.dev}&user=${name}`, name)));
  }
}

// ---- the player: room:ID, whose last publication is the room's state ----

function player(roomId) {
  const channel = `room:${roomId}`;
  /** `{video, playing, position, at}`: `position` seconds at Herald's time `at` (ms). */
  let state = null;
  let applied = 0;
  const el = $("player");
  const now = () => Date.now() + clockOffset;
  const position = () => (!state ? 0 : state.playing ? state.position + Math.max(0, now() - state.at) / 1000 : state.position);
  const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

  const sub = client.subscribe(channel, {
    onSubscribed: () => (document.getElementById("player-section").dataset.subscribed = "true"),
    onError: (e) => problem(`Herald refused the room: ${e.message}`),
  });
  sub.on("state", (data, pub) => {
    state = { video: data.video, playing: data.playing, position: data.position, at: pub.time };
    applied++;
    el.dataset.video = data.video;
    el.dataset.playing = String(data.playing);
    el.dataset.seq = String(data.seq);
    el.dataset.applied = String(applied);
    $("video").textContent = data.video;
    $("play-icon").textContent = data.playing ? "▶" : "❚❚";
    const verb = { create: "started the room with", play: "pressed play on", pause: "paused", seek: "jumped in", change: "changed the video to" }[data.action] ?? data.action;
    $("last-change").textContent = data.by ? `${data.by.id === me ? "You" : data.by.name} ${verb} ${data.video} at ${clock(data.position)}` : "";
    render();
  });

  function render() {
    const p = position();
    el.dataset.position = p.toFixed(2);
    $("clock").textContent = clock(p);
    $("elapsed").style.width = `${(p % 600) / 6}%`;
  }
  setInterval(render, 100);

  /** Asks for a change; Herald sends it to the app first, which lets only the host's through. */
  async function control(action, change = {}) {
    showError("control-error", null);
    if (!state) return;
    const wish = { action, video: state.video, playing: state.playing, position: Math.round(position() * 1000) / 1000, ...change };
    try {
      await sub.publish("state", wish);
    } catch (e) {
      showError("control-error", { code: e.code, text: `Not applied: ${e.message}` });
    }
  }
  $("play").addEventListener("click", () => control("play", { playing: true }));
  $("pause").addEventListener("click", () => control("pause", { playing: false }));
  $("seek-form").addEventListener("submit", (e) => {
    e.preventDefault();
    control("seek", { position: Number(e.target.position.value) });
  });
  $("change-form").addEventListener("submit", (e) => {
    e.preventDefault();
    control("change", { video: e.target.video.value.trim(), position: 0 });
  });
  window.watchparty.control = control;
}

// ---- who is watching: the room channel's presence, one entry per user ----

function people(roomId, host) {
  const channel = `room:${roomId}`;
  let users = new Map();
  let asked = 0;
  let changed = false;
  const render = () => {
    const list = [...users].sort(([a, x], [b, y]) => (a === host ? -1 : b === host ? 1 : String(x?.first_name).localeCompare(String(y?.first_name))));
    $("participants").replaceChildren(
      ...list.map(([id, info]) => {
        const li = document.createElement("li");
        li.dataset.userId = id;
        li.dataset.name = info?.first_name ?? "";
        li.textContent = `${info?.first_name ?? `user ${id}`}${info?.username ? ` @${info.username}` : ""}`;
        if (id === host) li.append(Object.assign(document.createElement("em"), { textContent: "host" }));
        if (id === me) li.append(Object.assign(document.createElement("em"), { textContent: "you" }));
        return li;
      }),
    );
  };
  async function snapshot() {
    const mine = ++asked;
    changed = false;
    try {
      const r = await client.presence(channel);
      if (mine !== asked) return;
      users = new Map(r.users.map((u) => [u.user_id, u.info]));
      document.getElementById("people-section").dataset.subscribed = "true";
      render();
      // A join or leave crossed the answer: ask again rather than trust either.
      if (changed) snapshot();
    } catch (e) {
      console.warn(`presence: ${e.message}`);
    }
  }
  client.subscribe(channel, {
    onSubscribed: snapshot,
    onJoin: (m) => {
      changed = true;
      users.set(m.user_id, m.info);
      render();
    },
    onLeave: (m) => {
      changed = true;
      users.delete(m.user_id);
      render();
    },
  });
}

// ---- the chat: chat:ID live, its history from the app ----

function chat(roomId) {
  const channel = `chat:${roomId}`;
  const messages = new Map();
  const render = () => {
    const list = $("messages");
    list.replaceChildren(
      ...[...messages.values()]
        .sort((a, b) => a.id - b.id)
        .map((m) => {
          const li = document.createElement("li");
          li.dataset.id = m.id;
          li.dataset.user = m.user.id;
          li.dataset.text = m.text;
          li.append(Object.assign(document.createElement("strong"), { textContent: m.user.id === me ? "You" : m.user.name }), ` ${m.text}`);
          return li;
        }),
    );
    list.scrollTop = list.scrollHeight;
  };
  const add = (m) => {
    if (typeof m?.id !== "number") return;
    messages.set(m.id, m);
    render();
  };
  // Subscribed first, then the history: a message sent in between comes by both, once by id.
  async function history() {
    try {
      const r = await appFetch(`/api/rooms/${roomId}/history`);
      r.messages.forEach((m) => messages.set(m.id, m));
      render();
      document.getElementById("chat-section").dataset.subscribed = "true";
    } catch (e) {
      showError("chat-error", { code: "history", text: `Could not load the chat's history: ${e.message}` });
    }
  }
  const sub = client.subscribe(channel, { onSubscribed: history, onReset: history });
  sub.on("message", add);

  // One message at a time: Herald answers requests as they complete, and the app numbers
  // messages as it is asked, so two in flight at once could swap places.
  let sending = Promise.resolve();
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = e.target.text;
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    showError("chat-error", null);
    sending = sending.then(() =>
      sub.publish("message", { text }).catch((err) => {
        // Give the text back, unless something else was typed meanwhile.
        if (!input.value) input.value = text;
        showError("chat-error", {
          code: err.code,
          text: err.code === "rate_limited" ? `Slow down: ${err.message}. Wait a little and send it again.` : `Not sent: ${err.message}`,
        });
      }),
    );
  });
}
