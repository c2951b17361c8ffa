// The OBS widget: a browser's own EventSource on Herald's /sse, nothing else. The browser
// reconnects by itself and sends the last event id (Last-Event-ID), which holds the position of
// both channels, so Herald replays exactly what the widget missed.
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const params = new URLSearchParams(location.search);
let herald = params.get("herald");
let streamer = params.get("streamer");
if (!herald || !streamer) {
  // Opened from the app without parameters: ask it.
  const config = await fetch("/api/config").then((r) => r.json());
  herald ||= config.herald;
  streamer ||= config.streamer;
}
$("log").hidden = !params.has("debug");

const CHANNELS = [`queue:${streamer}`, `donations:${streamer}`];
const EVENTS = [
  "youtube-queue-updated",
  "video-status-changed",
  "tts-completed",
  "tts-error",
  "donation",
  "donations-paused",
  "donations-resumed",
];

// ---- what the widget shows ----

function log(pub) {
  const li = document.createElement("li");
  li.dataset.testid = "event";
  li.dataset.channel = pub.channel;
  li.dataset.offset = String(pub.offset);
  li.dataset.epoch = pub.epoch;
  li.dataset.event = pub.event;
  li.textContent = `${pub.channel} #${pub.offset} ${pub.event}`;
  $("log").prepend(li);
  while ($("log").children.length > 500) $("log").lastElementChild.remove();
}

const show = {
  "youtube-queue-updated"({ queue, nowPlaying }) {
    $("now-playing").textContent = nowPlaying ? nowPlaying.title : "–";
    $("now-playing").dataset.video = nowPlaying?.id ?? "";
    $("queue").replaceChildren(
      ...queue.slice(0, 5).map((v) => {
        const li = document.createElement("li");
        li.dataset.testid = "queue-item";
        li.dataset.video = v.id;
        li.textContent = v.title;
        return li;
      }),
    );
  },
  donation(d) {
    const el = $("latest-donation");
    el.dataset.id = d.id;
    const amount = document.createElement("span");
    amount.className = "amount";
    amount.textContent = `${d.amount} ${d.currency}`;
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = d.message;
    el.replaceChildren(`${d.donor} `, amount, message);
  },
  "donations-paused"() {
    $("donations-state").hidden = false;
    $("donations-state").dataset.paused = "true";
  },
  "donations-resumed"() {
    $("donations-state").hidden = true;
    $("donations-state").dataset.paused = "false";
  },
};

// ---- the connection ----

const dot = $("connection");
const trail = [];
function setState(state) {
  if (dot.dataset.state === state) return;
  if (dot.dataset.state === "connected") dot.dataset.disconnects = String(Number(dot.dataset.disconnects) + 1);
  if (state === "connected") dot.dataset.connects = String(Number(dot.dataset.connects) + 1);
  dot.dataset.state = state;
  trail.push(state);
  dot.dataset.trail = trail.slice(-30).join(" ");
  dot.title = `Herald: ${state}`;
}

let source;
/** The last event id seen: every channel's position, for opening a new EventSource. */
let lastId = "";
let failures = 0;
let retry;

function open({ fresh = false } = {}) {
  clearTimeout(retry);
  source?.close();
  if (fresh) lastId = "";
  const url = new URL(`${herald.replace(/\/+$/, "")}/sse`, location.href);
  for (const channel of CHANNELS) url.searchParams.append("channel", channel);
  if (lastId) url.searchParams.set("lastEventId", lastId);
  setState("connecting");
  const es = (source = new EventSource(url));
  const on = (name, fn) =>
    es.addEventListener(name, (e) => {
      if (es !== source) return;
      if (e.lastEventId) lastId = e.lastEventId;
      fn(JSON.parse(e.data));
    });

  on("herald.connected", () => {
    failures = 0;
    setState("connected");
  });
  for (const name of EVENTS) {
    on(name, (pub) => {
      log(pub);
      show[pub.event]?.(pub.data);
    });
  }
  // Publications were lost (beyond history, or the server lost its data): start over without a
  // position, so the channels' latest state (queue, last donation, paused) comes first.
  on("herald.reset", () => open({ fresh: true }));
  on("herald.disconnect", (d) => {
    if (d.reconnect) return setState("disconnected"); // the browser comes back after `retry:`
    es.close();
    setState("closed");
  });
  es.onerror = () => {
    if (es !== source) return;
    if (es.readyState === EventSource.CONNECTING) return setState("connecting"); // the browser retries
    // The browser gave up (a refusal, or a response that was not a stream): try again later,
    // from the last position, with a growing delay.
    setState("disconnected");
    const wait = Math.min(20000, 500 * 2 ** failures++) * (0.5 + Math.random() / 2);
    retry = setTimeout(() => open(), wait);
  };
}

open();
