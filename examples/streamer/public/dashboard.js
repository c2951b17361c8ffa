// The streamer's dashboard: one Herald connection (the client Herald serves at /sdk/herald.js)
// carrying the streamer's two channels, a live connection indicator with a Reconnect button,
// and buttons that call the streamer's backend, which publishes through Herald.
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const config = await fetch("/api/config").then((r) => r.json());
const { queue: QUEUE, donations: DONATIONS } = config.channels;

$("streamer").textContent = config.streamer;
$("queue-channel").textContent = QUEUE;
$("donations-channel").textContent = DONATIONS;
$("herald-url").textContent = config.herald;
const widget = `/widget.html?herald=${encodeURIComponent(config.herald)}&streamer=${encodeURIComponent(config.streamer)}`;
$("widget-link").href = widget;
$("widget-link").textContent = new URL(widget, location.href).href;
$("restart-box").hidden = !config.restartable;

const client = new Herald.HeraldClient({ url: config.herald });
window.streamer = { client };

// ---- the connection indicator ----

const indicator = $("connection");
const trail = [];
let retryAt = 0;
let counter;

client.on("state", (s) => {
  indicator.dataset.state = s.state;
  trail.push(s.state);
  indicator.dataset.trail = trail.slice(-30).join(" ");
  if (s.state === "connected") indicator.dataset.connects = String(Number(indicator.dataset.connects) + 1);
  if (s.state === "disconnected") indicator.dataset.disconnects = String(Number(indicator.dataset.disconnects) + 1);
  $("transport").textContent = client.transport ?? "-";
  clearInterval(counter);
  const text = $("connection-text");
  if (s.state === "connecting") text.textContent = "connecting…";
  else if (s.state === "connected") text.textContent = `connected (${s.transport})`;
  else if (s.state === "closed") text.textContent = `closed${s.reason ? `: ${s.reason}` : ""}`;
  else {
    // Disconnected: the client comes back by itself after retryIn (exponential backoff).
    retryAt = Date.now() + (s.retryIn ?? 0);
    const tick = () => {
      const left = Math.max(0, (retryAt - Date.now()) / 1000).toFixed(1);
      text.textContent = `disconnected (${s.reason ?? "connection lost"}), retrying in ${left} s`;
    };
    tick();
    counter = setInterval(tick, 100);
  }
});

$("reconnect").addEventListener("click", () => client.reconnect());

// ---- every publication, as it arrives ----

function logEvent(pub) {
  const li = document.createElement("li");
  li.dataset.testid = "event";
  li.dataset.channel = pub.channel;
  li.dataset.offset = String(pub.offset);
  li.dataset.epoch = pub.epoch;
  li.dataset.event = pub.event;
  li.textContent = `${new Date(pub.time).toLocaleTimeString()} ${pub.channel} #${pub.offset} ${pub.event}`;
  const list = $("events");
  list.prepend(li);
  while (list.children.length > 500) list.lastElementChild.remove();
}

// ---- the YouTube queue and TTS ----

let rev = -1;

function showQueue(snapshot) {
  // Snapshots carry a revision: an older one (say, from /api/state racing a live event) loses.
  if (snapshot.rev < rev) return;
  rev = snapshot.rev;
  const now = snapshot.nowPlaying;
  $("now-playing").textContent = now ? `${now.title} (requested by ${now.requestedBy})` : "nothing";
  $("now-playing").dataset.video = now?.id ?? "";
  $("queue").replaceChildren(
    ...snapshot.queue.map((v) => {
      const li = document.createElement("li");
      li.dataset.testid = "queue-item";
      li.dataset.video = v.id;
      li.textContent = `${v.title} `;
      const by = document.createElement("small");
      by.textContent = `requested by ${v.requestedBy}`;
      li.append(by);
      return li;
    }),
  );
  $("queue-empty").hidden = snapshot.queue.length > 0;
}

function showStatus(change) {
  const el = $("video-status");
  el.dataset.status = change.status;
  el.dataset.video = change.video.id;
  el.textContent = `${change.video.title}: ${change.status}`;
}

function showTts(tts) {
  const el = $("tts-status");
  el.dataset.state = tts.state;
  if (tts.state === "completed") el.textContent = `completed: “${tts.text}”, ${tts.video.title} starts`;
  else if (tts.state === "error") el.textContent = `error: ${tts.error}`;
  else el.textContent = "idle";
}

/** After a reset (publications were lost), the backend's current state replaces what we show. */
async function refetchState() {
  const s = await fetch("/api/state").then((r) => r.json());
  showQueue(s);
  showTts(s.tts);
  showPaused(s.paused);
}

const queue = client.subscribe(QUEUE, {
  onPublication: logEvent,
  onSubscribed: () => (document.getElementById("youtube").dataset.subscribed = document.getElementById("tts").dataset.subscribed = "true"),
  onReset: refetchState,
});
queue.on("youtube-queue-updated", showQueue);
queue.on("video-status-changed", showStatus);
queue.on("tts-completed", showTts);
queue.on("tts-error", showTts);

// ---- donations ----

/** Donations by publication (epoch and offset): a publication shown twice would be a bug. */
const donationsShown = new Map();

function showPaused(paused) {
  const el = $("donations-state");
  el.dataset.paused = String(paused);
  el.textContent = paused ? "donations paused" : "accepting donations";
}

function addDonation(pub) {
  donationsShown.set(`${pub.epoch}-${pub.offset}`, pub);
  const rows = [...donationsShown.values()].sort((a, b) => b.time - a.time || b.offset - a.offset).slice(0, 100);
  $("donations").replaceChildren(
    ...rows.map((p) => {
      const d = p.data;
      const li = document.createElement("li");
      li.dataset.testid = "donation";
      li.dataset.id = d.id;
      li.dataset.offset = String(p.offset);
      const who = document.createElement("strong");
      who.textContent = `${d.donor} ${d.amount} ${d.currency}`;
      li.append(who, ` ${d.message} `);
      const when = document.createElement("small");
      when.textContent = new Date(p.time).toLocaleTimeString();
      li.append(when);
      return li;
    }),
  );
}

let historyLoaded = false;
async function loadDonationHistory() {
  // The evening's donations so far, from the channel's history (a WebSocket request).
  if (historyLoaded || client.transport !== "websocket") return;
  historyLoaded = true;
  try {
    const { publications } = await client.history(DONATIONS, { limit: 100 });
    for (const p of publications) if (p.event === "donation") addDonation(p);
  } catch (e) {
    historyLoaded = false;
    console.warn("donation history:", e.message);
  }
}

const donations = client.subscribe(DONATIONS, {
  onPublication: logEvent,
  onSubscribed: () => {
    document.getElementById("donations").dataset.subscribed = "true";
    loadDonationHistory();
  },
  onReset: () => {
    historyLoaded = false;
    loadDonationHistory();
    refetchState();
  },
});
donations.on("donation", (_, pub) => addDonation(pub));
donations.on("donations-paused", () => showPaused(true));
donations.on("donations-resumed", () => showPaused(false));

client.connect();

// ---- the buttons: the streamer's backend does the work and publishes ----

async function act(label, path, body, method = "POST") {
  const line = $("last-action");
  line.textContent = `${label}…`;
  try {
    const res = await fetch(path, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(json.error ?? `${path} answered ${res.status}`);
    line.textContent = `${label}: done`;
    return json;
  } catch (e) {
    line.textContent = `${label}: ${e.message}`;
    return null;
  }
}

$("add-video-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const title = form.get("title");
  const out = await act(`Adding “${title}”`, "/api/youtube/queue", {
    title,
    requestedBy: form.get("requestedBy") || undefined,
    url: form.get("url") || undefined,
  });
  if (out) e.target.elements.title.value = "";
});
$("next-video").addEventListener("click", () => act("Ending the video", "/api/youtube/next"));
$("clear-queue").addEventListener("click", () => act("Clearing the queue", "/api/youtube/queue", undefined, "DELETE"));
$("tts-complete").addEventListener("click", () => act("TTS complete", "/api/youtube/tts-complete", {}));
$("tts-error").addEventListener("click", () => act("TTS error", "/api/tts-error", { error: "the TTS service timed out" }));
$("pause-donations").addEventListener("click", () => act("Pausing donations", "/api/donations/pause"));
$("resume-donations").addEventListener("click", () => act("Resuming donations", "/api/donations/resume"));

let lastDonation = null;
$("donate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const out = await act("Donation (signed webhook)", "/api/dev/donate", {
    donor: form.get("donor"),
    amount: Number(form.get("amount")),
    message: form.get("message"),
  });
  if (!out) return;
  lastDonation = out.donation.id;
  $("redeliver-donation").disabled = false;
  $("last-action").textContent = `Donation ${lastDonation}: Herald published it at offset ${out.herald.offset}`;
});
$("redeliver-donation").addEventListener("click", async () => {
  const out = await act(`Delivering ${lastDonation} again`, "/api/dev/donate", { id: lastDonation });
  if (!out) return;
  const line = $("last-action");
  line.dataset.duplicate = String(!!out.herald.duplicate);
  line.textContent = out.herald.duplicate
    ? `Donation ${lastDonation} delivered again: Herald answered duplicate (offset ${out.herald.offset}), nothing published`
    : `Donation ${lastDonation} delivered again: published at offset ${out.herald.offset}`;
});

for (const [id, crash] of [["restart-herald", false], ["crash-herald", true]]) {
  $(id).addEventListener("click", () => act(crash ? "Killing Herald" : "Restarting Herald", "/api/dev/restart-herald", { crash, down_ms: 1500 }));
}
