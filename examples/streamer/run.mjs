// Streamer tools, in one command: Herald keeping its streams in a data directory, and the
// streamer's backend (the dashboard, the OBS widget, the YouTube queue and the TTS and donation
// controls), which publishes every change through Herald's HTTP API.
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { exitStack, serveApp, startHerald } from "../lib/herald.mjs";
import { deliverWithRetries, donation, webhookSecret } from "./platform.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const CONFIG = join(here, "herald.toml");
const HERALD_LISTEN = process.env.EXAMPLE_HERALD_LISTEN || "127.0.0.1:7700";
const APP_PORT = Number(process.env.EXAMPLE_PORT ?? 8080);
/** Another Herald to use instead of starting one (it needs this folder's herald.toml settings). */
const EXTERNAL = process.env.EXAMPLE_HERALD_URL?.replace(/\/+$/, "");
const API_KEY = process.env.EXAMPLE_HERALD_API_KEY;
const STREAMER = process.env.EXAMPLE_STREAMER || "s1";
const QUEUE = `queue:${STREAMER}`;
const DONATIONS = `donations:${STREAMER}`;
/** How long a publish keeps trying while Herald is unreachable (restarting, say). */
const PATIENCE = 30000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!/^[A-Za-z0-9_-]{1,64}$/.test(STREAMER)) throw new Error("EXAMPLE_STREAMER must be 1 to 64 letters, digits, _ or -");

const stops = exitStack("streamer");

// ---- Herald, keeping every channel in a data directory ----

/** The running Herald (replaced by a restart); `null` while it is down. */
let herald = null;
let heraldUrl = EXTERNAL;
let dataDir;
if (!EXTERNAL) {
  // EXAMPLE_DATA_DIR keeps the streams across runs too; by default a directory of this run's.
  if (process.env.EXAMPLE_DATA_DIR) mkdirSync((dataDir = resolve(process.env.EXAMPLE_DATA_DIR)), { recursive: true });
  else {
    const made = (dataDir = mkdtempSync(join(tmpdir(), "herald-streamer-")));
    stops.push(() => rmSync(made, { recursive: true, force: true }));
  }
  herald = await startHerald({ config: CONFIG, listen: HERALD_LISTEN, args: ["--data-dir", dataDir] });
  heraldUrl = herald.url;
  stops.push(() => herald?.stop());
}
const secret = webhookSecret(CONFIG);

/**
 * POSTs to Herald's HTTP API. While Herald cannot answer (not listening, or 503 while it
 * restarts) it tries again for up to PATIENCE ms: every command carries an idempotency key, so
 * a retry of something Herald had already accepted publishes nothing twice.
 */
async function heraldPost(path, body) {
  const end = Date.now() + PATIENCE;
  const headers = { "content-type": "application/json" };
  if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
  for (let wait = 100; ; wait = Math.min(2 * wait, 1000)) {
    let why;
    try {
      const res = await fetch(`${heraldUrl}${path}`, { method: "POST", headers, body: JSON.stringify(body), signal: AbortSignal.timeout(5000) });
      const json = await res.json().catch(() => null);
      if (res.ok) return json;
      why = `${path} answered ${res.status}: ${json?.error?.message ?? JSON.stringify(json)}`;
      if (res.status !== 503) throw Object.assign(new Error(why), { status: 502 });
    } catch (e) {
      if (e.status) throw e;
      why = `Herald did not answer ${path}: ${e.cause?.code ?? e.message}`;
    }
    if (Date.now() + wait > end) throw Object.assign(new Error(`gave up: ${why}`), { status: 503 });
    await sleep(wait);
  }
}

/** Several events in one request (`/api/batch`), published in order, each with its own key. */
function publishBatch(events) {
  const op = `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
  const commands = events.map(([channel, event, data], i) => ({ channel, event, data, idempotency_key: `${op}-${i}` }));
  return heraldPost("/api/batch", { commands });
}

/** One event (`/api/publish`). */
function publish(channel, event, data) {
  const idempotency_key = `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
  return heraldPost("/api/publish", { channel, event, data, idempotency_key });
}

// ---- the streamer's state, kept by this backend ----

const state = {
  /**
   * Raised on every change to the queue, so a page can tell a newer snapshot from an older one;
   * from the clock, so it also grows across runs of this backend.
   */
  rev: 0,
  queue: [],
  nowPlaying: null,
  paused: false,
  tts: { state: "idle" },
};
let nextVideo = 1;

/**
 * The queue lives in this backend's memory. When Herald already holds the streamer's channels
 * (EXAMPLE_DATA_DIR from an earlier run, or another Herald), pick up where they left off: the
 * newest queue snapshot and the newest pause or resume in their history.
 */
async function restore() {
  const headers = API_KEY ? { authorization: `Bearer ${API_KEY}` } : {};
  const newest = async (channel, events) => {
    const res = await fetch(`${heraldUrl}/api/history?channel=${encodeURIComponent(channel)}&limit=1000`, { headers });
    if (!res.ok) throw new Error(`reading the history of ${channel}: Herald answered ${res.status}`);
    return (await res.json()).publications.findLast((p) => events.includes(p.event));
  };
  const snapshot = await newest(QUEUE, ["youtube-queue-updated"]);
  if (snapshot) {
    Object.assign(state, { rev: snapshot.data.rev, queue: snapshot.data.queue, nowPlaying: snapshot.data.nowPlaying });
    const numbers = [...state.queue, state.nowPlaying].map((v) => Number(/^v(\d+)$/.exec(v?.id ?? "")?.[1] ?? 0));
    nextVideo = Math.max(0, ...numbers) + 1;
  }
  const pause = await newest(DONATIONS, ["donations-paused", "donations-resumed"]);
  if (pause) state.paused = pause.event === "donations-paused";
}
await restore();

/** Changes run one at a time, so the channel carries them in the order they were made. */
let tail = Promise.resolve();
function serially(fn) {
  const run = tail.then(fn);
  tail = run.catch(() => {});
  return run;
}

const bump = () => (state.rev = Math.max(state.rev + 1, Date.now()));
const queueSnapshot = () => ({ rev: state.rev, queue: state.queue, nowPlaying: state.nowPlaying });
const now = () => new Date().toISOString();

/** A route's answer; an error from Herald becomes 502/503 with its reason. */
async function answer(fn) {
  try {
    return await fn();
  } catch (e) {
    if (!e.status) throw e;
    return [e.status, { error: e.message }];
  }
}

function videoFrom(body) {
  const title = typeof body?.title === "string" ? body.title.trim() : "";
  if (!title || title.length > 120) return { error: "title must be 1 to 120 characters" };
  const by = typeof body?.requestedBy === "string" && body.requestedBy.trim() ? body.requestedBy.trim().slice(0, 40) : "streamer";
  let url = null;
  if (body?.url) {
    try {
      const u = new URL(String(body.url));
      if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error();
      url = u.href;
    } catch {
      return { error: "url must be an http(s) URL" };
    }
  }
  return { video: { id: `v${nextVideo++}`, title, url, requestedBy: by, addedAt: now() } };
}

/** Donations the simulator sent, by id, so one can be delivered again. */
const delivered = new Map();
/** What the restart route is doing, if anything. */
let restarting = null;

const app = await serveApp({
  dir: join(here, "public"),
  port: APP_PORT,
  routes: {
    "GET /api/config": async () => [
      200,
      { herald: heraldUrl, streamer: STREAMER, channels: { queue: QUEUE, donations: DONATIONS }, restartable: !EXTERNAL },
    ],
    // The current state, for a page that was told it missed publications (a reset).
    "GET /api/state": async () => [200, { ...queueSnapshot(), paused: state.paused, tts: state.tts }],

    // A viewer's request (or the streamer's) joins the queue: the video's new status and the
    // whole queue, in one batch, so both arrive and in this order.
    "POST /api/youtube/queue": (body) =>
      answer(() =>
        serially(async () => {
          const { video, error } = videoFrom(body);
          if (error) return [400, { error }];
          state.queue.push(video);
          bump();
          const { results } = await publishBatch([
            [QUEUE, "video-status-changed", { video, status: "queued", at: now() }],
            [QUEUE, "youtube-queue-updated", queueSnapshot()],
          ]);
          return [201, { video, results }];
        }),
      ),
    // The TTS finished reading the next request's message: its video starts at once.
    "POST /api/youtube/tts-complete": (body) =>
      answer(() =>
        serially(async () => {
          const video = state.queue.shift();
          if (!video) return [409, { error: "no video is waiting for its TTS" }];
          const text = typeof body?.text === "string" && body.text.trim() ? body.text.trim().slice(0, 200) : `${video.requestedBy} requested ${video.title}`;
          state.nowPlaying = { ...video, startedAt: now() };
          state.tts = { state: "completed", video, text, at: now() };
          bump();
          const { results } = await publishBatch([
            [QUEUE, "tts-completed", state.tts],
            [QUEUE, "youtube-queue-updated", queueSnapshot()],
          ]);
          return [200, { nowPlaying: state.nowPlaying, results }];
        }),
      ),
    "POST /api/tts-error": (body) =>
      answer(() =>
        serially(async () => {
          const error = typeof body?.error === "string" && body.error.trim() ? body.error.trim().slice(0, 200) : "the TTS service did not answer";
          state.tts = { state: "error", video: state.queue[0] ?? null, error, at: now() };
          return [200, await publish(QUEUE, "tts-error", state.tts)];
        }),
      ),
    // The video playing ended (or was skipped).
    "POST /api/youtube/next": () =>
      answer(() =>
        serially(async () => {
          const video = state.nowPlaying;
          if (!video) return [409, { error: "no video is playing" }];
          state.nowPlaying = null;
          bump();
          const { results } = await publishBatch([
            [QUEUE, "video-status-changed", { video, status: "ended", at: now() }],
            [QUEUE, "youtube-queue-updated", queueSnapshot()],
          ]);
          return [200, { results }];
        }),
      ),
    "DELETE /api/youtube/queue": () => answer(() => serially(clearQueue)),
    "POST /api/youtube/clear": () => answer(() => serially(clearQueue)),

    "POST /api/donations/pause": () => answer(() => serially(() => setPaused(true))),
    "POST /api/donations/resume": () => answer(() => serially(() => setPaused(false))),

    // The donation platform, simulated: a signed webhook to Herald's /ingest/donations.
    // `{"id": "..."}` delivers that donation again, as a platform retrying would.
    "POST /api/dev/donate": (body) =>
      answer(async () => {
        const again = typeof body?.id === "string" ? delivered.get(body.id) : undefined;
        if (body?.id && !again) return [404, { error: "no donation with that id was delivered" }];
        const amount = Number(body?.amount ?? 5);
        if (!again && !(amount > 0 && amount <= 10000)) return [400, { error: "amount must be more than 0 and at most 10000" }];
        const sent =
          again ??
          donation({
            streamer: STREAMER,
            donor: (typeof body?.donor === "string" && body.donor.trim()) || "Anonymous",
            amount,
            currency: "USD",
            message: typeof body?.message === "string" ? body.message : "",
          });
        delivered.set(sent.id, sent);
        try {
          const { status, answer: herald, attempts } = await deliverWithRetries({ herald: heraldUrl, secret, body: sent, patience: PATIENCE });
          return [status === 200 ? 200 : 502, { donation: sent, herald, attempts }];
        } catch (e) {
          return [503, { donation: sent, error: e.message }];
        }
      }),

    // Restarts Herald on the same address and data directory, for trying what pages do when
    // their server goes away: answers once Herald has exited, and starts it again `down_ms`
    // later. `{"crash": true}` kills it (SIGKILL) instead of the usual SIGTERM.
    "POST /api/dev/restart-herald": async (body) => {
      if (EXTERNAL) return [409, { error: "this example did not start Herald (EXAMPLE_HERALD_URL is set)" }];
      if (restarting) return [409, { error: "Herald is already restarting" }];
      const downMs = Math.min(Math.max(Number(body?.down_ms ?? 1000), 0), 30000);
      const crash = body?.crash === true;
      const old = herald;
      restarting = (async () => {
        const exited = new Promise((r) => (old.proc.exitCode !== null || old.proc.signalCode !== null ? r() : old.proc.once("exit", r)));
        old.stop(crash ? "SIGKILL" : "SIGTERM");
        await exited;
        herald = null;
      })();
      const started = Date.now();
      await restarting;
      const stoppedMs = Date.now() - started;
      restarting = (async () => {
        await sleep(downMs);
        for (;;) {
          try {
            herald = await startHerald({ config: CONFIG, listen: new URL(heraldUrl).host, args: ["--data-dir", dataDir] });
            break;
          } catch (e) {
            console.error(`streamer: Herald did not start again (${e.message.split("\n")[0]}); trying again`);
            await sleep(500);
          }
        }
        console.log(`herald restarted: ${herald.url}`);
      })().finally(() => (restarting = null));
      return [202, { stopped_ms: stoppedMs, down_ms: downMs, crash }];
    },
    "GET /api/dev/herald": async () => [200, { url: heraldUrl, running: !!herald && !restarting, pid: herald?.proc.pid ?? null }],
  },
});
stops.push(() => app.close());

async function clearQueue() {
  state.queue = [];
  bump();
  return [200, await publish(QUEUE, "youtube-queue-updated", queueSnapshot())];
}

async function setPaused(paused) {
  state.paused = paused;
  return [200, await publish(DONATIONS, paused ? "donations-paused" : "donations-resumed", { paused, at: now() })];
}

console.log(`herald ready: ${heraldUrl}`);
console.log(`app ready: ${app.url}`);
console.log(`Dashboard: ${app.url}/   OBS widget: ${app.url}/widget.html?herald=${encodeURIComponent(heraldUrl)}&streamer=${STREAMER}`);
console.log(`Example ready: ${app.url}`);
