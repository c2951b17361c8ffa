// What every example's `run.mjs` stands on: finding the Herald binary, starting it with the
// example's configuration, and a small app server (static pages plus JSON routes) standing in
// for the example system's own backend.
import { spawn, spawnSync } from "node:child_process";
import { createHmac, timingSafeEqual } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../..");
/** The browser client Herald serves at /sdk/herald.js, as built in this checkout. */
export const SDK_BUNDLE = join(ROOT, "crates/herald-server/assets/herald.js");

/** The Herald binary: HERALD_BIN, else this checkout's release or debug build, else PATH. */
export function heraldBin() {
  if (process.env.HERALD_BIN) return process.env.HERALD_BIN;
  for (const p of ["target/release/herald", "target/debug/herald"]) {
    if (existsSync(join(ROOT, p))) return join(ROOT, p);
  }
  if (spawnSync("herald", ["--version"]).status === 0) return "herald";
  throw new Error("no Herald binary: run `cargo build --release` at the repository's root, or set HERALD_BIN");
}

/**
 * Starts `herald serve --config FILE --listen ADDR` (ADDR `127.0.0.1:0` picks a free port);
 * resolves with its URL once it listens. `env` adds HERALD_* settings.
 */
export async function startHerald({ config, listen = "127.0.0.1:0", env = {}, args = [] }) {
  const proc = spawn(heraldBin(), ["serve", "--config", config, "--listen", listen, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_"))),
      HERALD_LOG: process.env.HERALD_LOG ?? "warn",
      ...env,
    },
  });
  const url = await new Promise((ok, fail) => {
    let out = "";
    const onData = (d) => {
      out += d;
      const m = /Listening on (\S+)/.exec(out);
      if (m) {
        proc.stdout.off("data", onData);
        proc.stdout.resume();
        ok(m[1]);
      }
    };
    proc.stdout.on("data", onData);
    proc.on("exit", (code) => fail(new Error(`herald exited with ${code}: ${out}`)));
  });
  return { url, proc, stop: (signal = "SIGTERM") => ended(proc, signal) };
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml" };

/**
 * An app server: files under `dir`, `/sdk/herald.js` from this checkout, and `routes`
 * (`"POST /api/x": async (body, req, url) => [status, json]`). Resolves with its URL.
 */
export async function serveApp({ dir, routes = {}, port = 0 }) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const route = routes[`${req.method} ${url.pathname}`];
    try {
      if (route) {
        let body = "";
        for await (const chunk of req) body += chunk;
        let parsed = null;
        if (body) {
          try {
            parsed = JSON.parse(body);
          } catch {
            return send(res, 400, { error: "the body is not JSON" });
          }
        }
        const [status, out] = await route(parsed, req, url);
        return send(res, status, out);
      }
      if (req.method !== "GET") return send(res, 404, { error: "no such route" });
      const path = url.pathname === "/" ? "/index.html" : url.pathname;
      const file = path === "/sdk/herald.js" ? SDK_BUNDLE : join(dir, path);
      if (!file.startsWith(dir) && file !== SDK_BUNDLE) return send(res, 404, { error: "not found" });
      if (!existsSync(file)) return send(res, 404, { error: "not found" });
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(readFileSync(file));
    } catch (e) {
      send(res, 500, { error: String(e?.message ?? e) });
    }
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

function send(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** Calls Herald's HTTP API (loopback needs no key in development). */
export async function api(herald, path, body, headers = {}) {
  const res = await fetch(`${herald}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const json = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${path} answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/**
 * What an example stops on its way out, pushed as it starts things: on SIGINT, SIGTERM or an
 * uncaught error each is run (and awaited) newest first, so what a process uses outlives it
 * (Herald stops before its Redis), then the example exits. `name` prefixes the error printed.
 */
export function exitStack(name) {
  const stops = [];
  let stopping = false;
  const shutdown = async (code) => {
    if (stopping) return;
    stopping = true;
    for (const stop of stops.splice(0).reverse()) {
      try {
        await stop();
      } catch (e) {
        console.error(`${name}: while stopping: ${e.message}`);
      }
    }
    process.exit(code);
  };
  process.on("SIGINT", () => shutdown(0));
  process.on("SIGTERM", () => shutdown(0));
  for (const event of ["uncaughtException", "unhandledRejection"]) {
    process.on(event, (e) => {
      console.error(`${name}: ${e?.stack ?? e}`);
      shutdown(1);
    });
  }
  return stops;
}

/** A temporary directory for this run (`herald-NAME-…`), removed by `stops` after all else. */
export function workDir(stops, name) {
  const dir = mkdtempSync(join(tmpdir(), `herald-${name}-`));
  stops.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Ends `proc` with `signal` and resolves once it exited; SIGKILL if it is still there after `ms`. */
export function ended(proc, signal = "SIGTERM", ms = 10000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
    proc.once("exit", () => {
      clearTimeout(timer);
      done();
    });
    proc.kill(signal);
  });
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createTcpServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * A Redis of the example's own on a free port, keeping nothing on disk (`dir` is its working
 * directory). It has a process group of its own, so Ctrl-C reaches only the example, which
 * stops Redis after what uses it. Resolves once it accepts connections.
 */
export async function startRedis({ dir }) {
  const port = await freePort();
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    // Not inherited: a Redis outliving the example would hold its caller's output open.
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  proc.stderr.pipe(process.stderr);
  await new Promise((ok, fail) => {
    let out = "";
    proc.on("error", (e) => fail(new Error(`cannot start redis-server (${e.message}): install Redis, or set REDIS_URL to a Redis you have`)));
    proc.on("exit", (code) => fail(new Error(`redis-server exited with ${code}: ${out}`)));
    proc.stdout.on("data", (d) => {
      out += d;
      if (/Ready to accept connections/.test(out)) ok();
    });
  });
  proc.stdout.resume();
  return { url: `redis://127.0.0.1:${port}`, proc, stop: () => ended(proc) };
}

/**
 * The example's `herald.toml` as text, and `setting(pattern, what)`: the first group of
 * `pattern` in it, or an error naming `what` is missing (the app shares keys and secrets with it).
 */
export function heraldToml(dir) {
  const source = readFileSync(join(dir, "herald.toml"), "utf8");
  const setting = (pattern, what) => {
    const m = pattern.exec(source);
    if (!m) throw new Error(`herald.toml has no ${what}`);
    return m[1];
  };
  return { source, setting };
}

/** A connection token (an HS256 JWT) with `claims`, signed with `secret` (auth.token.hmac_secrets). */
export function signToken(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/**
 * The claims of a connection token signed with `secret` (by the app or by Herald), or null if it
 * is not HS256, does not verify, names no user, or expired more than `leeway` seconds ago.
 */
export function verifyToken(secret, token, leeway = 0) {
  const [header, payload, signature] = String(token ?? "").split(".");
  if (!signature) return null;
  try {
    if (JSON.parse(Buffer.from(header, "base64url")).alg !== "HS256") return null;
    const expected = createHmac("sha256", secret).update(`${header}.${payload}`).digest();
    const given = Buffer.from(signature, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    const claims = JSON.parse(Buffer.from(payload, "base64url"));
    if (typeof claims.sub !== "string" || typeof claims.exp !== "number") return null;
    if (claims.exp + leeway < Date.now() / 1000) return null;
    return claims;
  } catch {
    return null;
  }
}

/** The claims of a request's `Authorization: Bearer <token>`, as `verifyToken` checks them. */
export function bearerClaims(req, secret, leeway = 0) {
  const m = /^Bearer (\S+)$/i.exec(req.headers.authorization ?? "");
  return m ? verifyToken(secret, m[1], leeway) : null;
}
