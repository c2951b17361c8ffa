// The worker gateway, in one command: a Redis (its own, unless REDIS_URL names yours), Herald
// reading job progress from that Redis, and the app's backend, which signs connection tokens,
// starts the worker, sends alerts and streams AI answers through Herald's HTTP API.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { connect as connectTls } from "node:tls";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { api, exitStack, serveApp, signToken, startHerald, startRedis, workDir } from "../lib/herald.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_LISTEN = process.env.EXAMPLE_HERALD_LISTEN || "127.0.0.1:7700";
const APP_PORT = Number(process.env.EXAMPLE_PORT ?? 8080);
const TOKEN_TTL = 3600;
/** User ids, job ids and ask ids become parts of channel names and idempotency keys. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What to stop on the way out, newest first: Redis outlives Herald, which outlives the app. */
const stops = exitStack("gateway");
const work = workDir(stops, "gateway");

// ---- Redis ----

let redisUrl = process.env.REDIS_URL;
if (!redisUrl) {
  const redis = await startRedis({ dir: work });
  stops.push(redis.stop);
  redisUrl = redis.url;
}

// ---- Herald, with the connector pointed at that Redis ----

const source = readFileSync(join(here, "herald.toml"), "utf8");
const secret = /^hmac_secrets\s*=\s*\["([^"]+)"/m.exec(source)?.[1];
if (!secret) throw new Error("herald.toml has no auth.token.hmac_secrets entry");
const urlLine = /^url = "redis:\/\/[^"]*"$/m;
if (!urlLine.test(source)) throw new Error('herald.toml has no `url = "redis://..."` line for the connector');
const config = join(work, "herald.toml");
writeFileSync(config, source.replace(urlLine, `url = ${JSON.stringify(redisUrl)}`));
const herald = await startHerald({ config, listen: HERALD_LISTEN });
stops.push(() => herald.stop());
await connectorListening(herald.url, redisUrl);

// ---- the app's backend ----

/** An HS256 connection token: who the user is, and which channels it may read. */
function connectionToken(user) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: user, iat: now, exp: now + TOKEN_TTL, channels: ["job_progress:*"], info: { name: user } };
  return { token: signToken(secret, claims), expires_at: claims.exp };
}

/** Every run of the worker, newest last: what it sent, and how it ended. */
const runs = [];

function startJob(job) {
  const run = `${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  const record = { job, run, state: "running", sent: [], exit_code: null, errors: "" };
  runs.push(record);
  const worker = spawn("python3", [join(here, "worker.py"), "--job", job, "--run", run], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, REDIS_URL: redisUrl },
  });
  stops.push(() => worker.kill());
  let out = "";
  worker.stdout.on("data", (d) => {
    out += d;
    let nl;
    while ((nl = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      if (!line.trim()) continue;
      try {
        record.sent.push(JSON.parse(line));
      } catch {
        record.errors += `not a JSON line: ${line}\n`;
      }
    }
  });
  worker.stderr.on("data", (d) => {
    record.errors += d;
    process.stderr.write(d);
  });
  worker.on("error", (e) => {
    record.state = "failed";
    record.errors += `could not start the worker: ${e.message}\n`;
  });
  worker.on("exit", (code) => {
    record.exit_code = code;
    record.state = code === 0 ? "done" : "failed";
  });
  return record;
}

/** A stand-in for a language model: a reply that depends on the prompt, in word-sized pieces. */
function answerChunks(prompt) {
  const text =
    `You asked: "${prompt.trim().slice(0, 200)}". ` +
    "Here is how this answer reaches you: the backend asks the model, and every piece the model " +
    "produces is published at once to your own answers channel through Herald's HTTP API. " +
    "Herald gives each piece the next offset of the channel, so your page receives them in order, " +
    "and after a dropped connection it resumes from the last piece it showed. " +
    "Nobody else can read this channel: it is user-scoped, so only a token for you may subscribe to it. " +
    "When the model is finished, one last event says so.";
  return text.match(/\S+\s*/g);
}

async function streamAnswer(user, id, chunks) {
  const channel = `answers:${user}`;
  try {
    for (let index = 0; index < chunks.length; index++) {
      await api(herald.url, "/api/publish", { channel, event: "chunk", data: { id, index, text: chunks[index] } });
      await sleep(25);
    }
    await api(herald.url, "/api/publish", { channel, event: "done", data: { id, chunks: chunks.length, text: chunks.join("") } });
  } catch (e) {
    console.error(`streaming answer ${id} to ${channel} failed: ${e.message}`);
    await api(herald.url, "/api/publish", { channel, event: "failed", data: { id, error: e.message } }).catch(() => {});
  }
}

const app = await serveApp({
  dir: join(here, "public"),
  port: APP_PORT,
  routes: {
    "GET /api/config": async () => [200, { herald: herald.url }],
    // A real backend checks its own session first; here the page names the user (?user=).
    "GET /api/token": async (_, req, url) => {
      const user = url.searchParams.get("user") ?? "";
      if (!NAME.test(user)) return [400, { error: "user must be 1 to 64 letters, digits, _ or -" }];
      return [200, { user, ...connectionToken(user) }];
    },
    "POST /api/jobs": async (body) => {
      const job = body?.job ?? "job_123";
      if (!NAME.test(job)) return [400, { error: "job must be 1 to 64 letters, digits, _ or -" }];
      const { run } = startJob(job);
      return [202, { job, run, channel: `job_progress:${job}` }];
    },
    "GET /api/jobs": async () => [200, { runs }],
    "POST /api/alerts": async (body) => {
      const { user, text } = body ?? {};
      if (!NAME.test(user ?? "")) return [400, { error: "user must be 1 to 64 letters, digits, _ or -" }];
      if (typeof text !== "string" || !text.trim()) return [400, { error: "text is required" }];
      const channel = `alerts:${user}`;
      const data = { text: text.slice(0, 500), severity: "info", at: new Date().toISOString() };
      return [200, await api(herald.url, "/api/publish", { channel, event: "alert", data })];
    },
    "POST /api/ask": async (body) => {
      const { user, prompt, id } = body ?? {};
      if (!NAME.test(user ?? "")) return [400, { error: "user must be 1 to 64 letters, digits, _ or -" }];
      if (!NAME.test(id ?? "")) return [400, { error: "id must be 1 to 64 letters, digits, _ or -" }];
      if (typeof prompt !== "string" || !prompt.trim()) return [400, { error: "prompt is required" }];
      const chunks = answerChunks(prompt);
      streamAnswer(user, id, chunks);
      return [202, { id, channel: `answers:${user}`, chunks: chunks.length }];
    },
  },
});
stops.push(() => app.close());

console.log(`herald ready: ${herald.url}`);
console.log(`app ready: ${app.url}`);
console.log(`redis ready: ${redacted(redisUrl)}`);
console.log(`Open ${app.url}/?user=alice and ${app.url}/?user=bob side by side.`);
console.log(`Example ready: ${app.url}`);

// ---- helpers ----

/** A redis-server of our own on a free loopback port, keeping nothing on disk. */


/**
 * Waits until Herald's Redis connector is connected and holds its pattern subscription:
 * a worker's PUBLISH before that would reach nobody (pub/sub keeps nothing).
 */
async function connectorListening(heraldUrl, redis) {
  const end = Date.now() + 20000;
  for (;;) {
    const stats = await fetch(`${heraldUrl}/api/stats`).then((r) => r.json());
    const connector = stats.connectors?.find((c) => c.kind === "redis" && c.name === "workers");
    if (connector?.state === "connected" && (await redisCommand(redis, "PUBSUB", "NUMPAT")) > 0) return;
    if (Date.now() > end) throw new Error(`Herald's Redis connector did not subscribe: ${JSON.stringify(connector)}`);
    await sleep(100);
  }
}

/** One command on a fresh connection, for a reply that is a simple string or an integer. */
function redisCommand(url, ...args) {
  const u = new URL(url);
  const encode = (words) => `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join("")}`;
  const commands = [];
  if (u.password) commands.push(u.username ? ["AUTH", decodeURIComponent(u.username), decodeURIComponent(u.password)] : ["AUTH", decodeURIComponent(u.password)]);
  const db = u.pathname.slice(1);
  if (db) commands.push(["SELECT", db]);
  commands.push(args);
  return new Promise((ok, fail) => {
    const tls = u.protocol === "rediss:";
    const port = Number(u.port || 6379);
    const sock = tls ? connectTls({ port, host: u.hostname, servername: u.hostname }) : connect(port, u.hostname);
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("error", fail);
    sock.on(tls ? "secureConnect" : "connect", () => sock.write(commands.map(encode).join("")));
    sock.on("data", (d) => {
      buf += d;
      const lines = buf.split("\r\n").slice(0, -1);
      const error = lines.find((l) => l.startsWith("-"));
      if (error) {
        sock.destroy();
        fail(new Error(`Redis: ${error.slice(1)}`));
      } else if (lines.length >= commands.length) {
        sock.destroy();
        const last = lines[commands.length - 1];
        ok(last.startsWith(":") ? Number(last.slice(1)) : last.slice(1));
      }
    });
  });
}

function redacted(url) {
  const u = new URL(url);
  if (u.password) u.password = "***";
  return u.href.replace(/\/$/, "");
}
