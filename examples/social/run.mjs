// The scaled social app, in one command: a Redis and a Postgres (its own, unless REDIS_URL and
// DATABASE_URL name yours), two Herald nodes sharing channels and presence through that Redis,
// nginx in front of both (the page, the app and /realtime on one origin), Prometheus scraping
// both nodes, and the app's backend, which signs connection tokens and writes posts to Postgres,
// whose trigger hands each change to Herald through the outbox.
import { spawn, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { bearerClaims, ended, exitStack, freePort, heraldToml, serveApp, signToken, startHerald, startRedis, workDir } from "../lib/herald.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const PORT = Number(process.env.EXAMPLE_PORT ?? 8080);
const NODE_LISTEN = [process.env.EXAMPLE_NODE1_LISTEN || "127.0.0.1:7701", process.env.EXAMPLE_NODE2_LISTEN || "127.0.0.1:7702"];
const PROMETHEUS_PORT = Number(process.env.EXAMPLE_PROMETHEUS_PORT ?? 9090);
const NGINX = process.env.NGINX || "/usr/sbin/nginx";
const PROMETHEUS = process.env.PROMETHEUS || "prometheus";
const TOKEN_TTL = 3600;
const USER = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_BODY = 500;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What to stop on the way out, newest first, each awaited: Redis and Postgres outlive the nodes. */
const stops = exitStack("social");
const work = workDir(stops, "social");

const { source, setting } = heraldToml(here);
const apiKey = setting(/^key = "([^"]+)"$/m, '`key = "..."` in [[auth.api_keys]]');
const tokenSecret = setting(/^hmac_secrets = \["([^"]+)"/m, "auth.token.hmac_secrets entry");
const connectorName = setting(/^\[\[connectors\.postgres\]\]\s*\nname = "([^"]+)"$/m, "[[connectors.postgres]] with a name");

// ---- Redis and Postgres: yours, or the example's own ----

let redisUrl = process.env.REDIS_URL;
if (!redisUrl) {
  const redis = await startRedis({ dir: work });
  stops.push(redis.stop);
  redisUrl = redis.url;
}
let databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  const postgres = await startPostgres();
  stops.push(postgres.stop);
  databaseUrl = postgres.url;
}
const db = new pg.Pool({ connectionString: databaseUrl, max: 4 });
db.on("error", (e) => console.error(`social: Postgres: ${e.message}`));
stops.push(() => db.end().catch(() => {}));

// ---- two Herald nodes over that Redis, the connector pointed at that Postgres ----

const urlLine = /^url = "postgres:\/\/[^"]*"$/m;
if (!urlLine.test(source)) throw new Error('herald.toml has no `url = "postgres://..."` line for the connector');
const configFile = join(work, "herald.toml");
writeFileSync(configFile, source.replace(urlLine, `url = ${JSON.stringify(databaseUrl)}`), { mode: 0o600 });
const nodes = [];
for (const listen of NODE_LISTEN) {
  const node = await startHerald({ config: configFile, listen, args: ["--engine-url", redisUrl] });
  stops.push(node.stop);
  nodes.push(node);
}
const stats = (node) => fetch(`${node.url}/api/stats`, { headers: { authorization: `Bearer ${apiKey}` } }).then((r) => r.json());

// ---- the schema: posts, and a trigger handing each change to Herald's outbox ----

await outboxReady();
await db.query(readFileSync(join(here, "schema.sql"), "utf8"));

// ---- the app's backend ----

/** An HS256 connection token: who the user is, shown to others in presence as `info`. */
function connectionToken(user) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: user, iat: now, exp: now + TOKEN_TTL, info: { name: user } };
  return { token: signToken(tokenSecret, claims), expires_at: claims.exp };
}

const app = await serveApp({
  dir: join(here, "public"),
  routes: {
    // Demo only: anyone may be anyone. A real app signs the token for its logged-in user.
    "GET /api/token": async (_, __, url) => {
      const user = url.searchParams.get("user") ?? "";
      if (!USER.test(user)) return [400, { error: "user must be 1 to 64 letters, digits, _ or -" }];
      return [200, connectionToken(user)];
    },
    "GET /api/posts": async () => {
      const { rows } = await db.query("SELECT id, author, body, created_at FROM posts ORDER BY id DESC LIMIT 50");
      return [200, { posts: rows }];
    },
    // Writes the post; its trigger queues the publication in the same transaction.
    "POST /api/posts": async (body, req) => {
      const user = bearerClaims(req, tokenSecret)?.sub;
      if (!user) return [401, { error: "send your connection token as Authorization: Bearer" }];
      const text = typeof body?.body === "string" ? body.body.trim() : "";
      if (!text || text.length > MAX_BODY) return [400, { error: `a post holds 1 to ${MAX_BODY} characters` }];
      const { rows } = await db.query("INSERT INTO posts (author, body) VALUES ($1, $2) RETURNING id, author, body, created_at", [user, text]);
      return [201, { post: rows[0] }];
    },
    // Each node's process, id (as a connection's hello names it), connections and connector role.
    "GET /api/nodes": async () => {
      const out = await Promise.all(
        nodes.map(async (node, i) => {
          try {
            const s = await stats(node);
            const connector = s.connectors.find((c) => c.name === connectorName);
            return { name: `node ${i + 1}`, pid: node.proc.pid, id: s.node, connections: s.connections.total, outbox_leader: connector?.leader ?? false };
          } catch (e) {
            return { name: `node ${i + 1}`, pid: node.proc.pid, id: null, error: `not answering (${e.cause?.code ?? e.message})` };
          }
        }),
      );
      return [200, { nodes: out }];
    },
  },
});
stops.push(() => app.close());

// ---- nginx: one origin for the page, the app and both nodes ----

const site = await startNginx();
stops.push(site.stop);

// ---- Prometheus, scraping both nodes ----

const prometheus = await startPrometheus();
if (prometheus) stops.push(prometheus.stop);

nodes.forEach((node, i) => console.log(`node${i + 1} ready: ${node.url}`));
console.log(`redis ready: ${redisUrl}`);
console.log(`postgres ready: ${databaseUrl}`);
if (prometheus) console.log(`prometheus ready: ${prometheus.url}`);
console.log(`app ready: ${site.url}`);
console.log(`Open ${site.url}/?user=alice and ${site.url}/?user=bob: each page says which node serves it.`);
console.log(`Example ready: ${site.url}`);

// ---- the parts ----

/** Waits until the node holding the connector's lease has created herald_publish(). */
async function outboxReady() {
  const end = Date.now() + 30000;
  for (;;) {
    try {
      const { rows } = await db.query("SELECT to_regprocedure('herald_publish(text,text,jsonb)') IS NOT NULL AS ready");
      if (rows[0].ready) return;
    } catch {}
    if (Date.now() > end) {
      const connectors = (await Promise.all(nodes.map(stats))).flatMap((s) => s.connectors);
      throw new Error(`Herald's Postgres connector did not create herald_publish() within 30 s: ${JSON.stringify(connectors)}`);
    }
    await sleep(100);
  }
}


/**
 * A Postgres of the example's own: initdb into the run's directory and pg_ctl on a free port,
 * trust authentication on loopback only, nothing fsync'd. Postgres refuses to run as root, so
 * as root it runs as the `postgres` user.
 */
async function startPostgres() {
  const versions = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").sort((a, b) => Number(a) - Number(b)) : [];
  const bin = versions.map((v) => `/usr/lib/postgresql/${v}/bin`).filter((d) => existsSync(`${d}/initdb`)).pop();
  const tool = (name) => (bin ? `${bin}/${name}` : name);
  if (!bin && spawnSync("initdb", ["--version"]).status !== 0) {
    throw new Error("cannot find Postgres's initdb: install PostgreSQL, or set DATABASE_URL to a database you have");
  }
  const dir = join(work, "postgres");
  mkdirSync(dir);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const id = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
    if (id.status !== 0) throw new Error("running as root and there is no `postgres` user to run Postgres as: set DATABASE_URL");
    const uid = Number(id.stdout.trim());
    chownSync(work, uid, Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim()));
    chownSync(dir, uid, Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim()));
  }
  const run = (name, args) => {
    const [cmd, all] = asRoot ? ["runuser", ["-u", "postgres", "--", tool(name), ...args]] : [tool(name), args];
    const r = spawnSync(cmd, all, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (r.status !== 0) throw new Error(`${name} failed: ${r.error?.message ?? ""}${r.stdout}${r.stderr}`);
  };
  const port = await freePort();
  const data = join(dir, "data");
  run("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c fsync=off`;
  run("pg_ctl", ["-D", data, "-l", join(dir, "log"), "-o", options, "-w", "start"]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]),
  };
}

async function startNginx() {
  if (!existsSync(NGINX)) throw new Error(`cannot find nginx at ${NGINX}: install it (Debian: nginx-light) or set NGINX`);
  const dir = join(work, "nginx");
  mkdirSync(dir);
  const port = PORT || (await freePort());
  const conf = readFileSync(join(here, "nginx.conf"), "utf8")
    .replaceAll("{{WORK}}", dir)
    .replaceAll("{{PORT}}", String(port))
    .replaceAll("{{NODE1}}", new URL(nodes[0].url).host)
    .replaceAll("{{NODE2}}", new URL(nodes[1].url).host)
    .replaceAll("{{APP}}", new URL(app.url).host);
  const file = join(dir, "nginx.conf");
  writeFileSync(file, conf);
  const proc = spawn(NGINX, ["-c", file, "-e", join(dir, "nginx-error.log")], { stdio: ["ignore", "inherit", "inherit"] });
  let exited = null;
  proc.on("exit", (code) => (exited = code));
  const url = `http://127.0.0.1:${port}`;
  const end = Date.now() + 10000;
  for (;;) {
    if (exited !== null) throw new Error(`nginx exited with ${exited}: ${readFileSync(join(dir, "nginx-error.log"), "utf8")}`);
    try {
      if ((await fetch(`${url}/api/nodes`)).ok) break;
    } catch {}
    if (Date.now() > end) throw new Error("nginx did not answer within 10 s");
    await sleep(50);
  }
  return { url, stop: () => ended(proc) };
}

/** Prometheus scraping both nodes' /metrics every 2 s with the app's key, or null without it. */
async function startPrometheus() {
  if (spawnSync(PROMETHEUS, ["--version"]).status !== 0) {
    console.error(`social: ${PROMETHEUS} not found (Debian: prometheus): running without it`);
    return null;
  }
  const dir = join(work, "prometheus");
  mkdirSync(dir);
  writeFileSync(join(dir, "key"), apiKey, { mode: 0o600 });
  const targets = nodes.map((n) => JSON.stringify(new URL(n.url).host)).join(", ");
  const yml = readFileSync(join(here, "prometheus.yml"), "utf8")
    .replace("{{TARGETS}}", targets)
    .replace("{{KEY_FILE}}", join(dir, "key"));
  writeFileSync(join(dir, "prometheus.yml"), yml);
  const port = PROMETHEUS_PORT || (await freePort());
  const proc = spawn(
    PROMETHEUS,
    [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=error"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  let exited = null;
  proc.on("exit", (code) => (exited = code));
  const url = `http://127.0.0.1:${port}`;
  const end = Date.now() + 20000;
  for (;;) {
    if (exited !== null) throw new Error(`prometheus exited with ${exited}`);
    try {
      if ((await fetch(`${url}/-/ready`)).ok) break;
    } catch {}
    if (Date.now() > end) throw new Error("prometheus was not ready within 20 s");
    await sleep(100);
  }
  return { url, stop: () => ended(proc) };
}
