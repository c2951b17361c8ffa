// What every example's `run.mjs` stands on: finding the Herald binary, starting it with the
// example's configuration, and a small app server (static pages plus JSON routes) standing in
// for the example system's own backend.
import { spawn, spawnSync } from "node:child_process";
import { createHmac, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
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
  return { url, proc, stop: (signal = "SIGTERM") => proc.kill(signal) };
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
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
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

/** Stops every child on SIGINT/SIGTERM, so the one command leaves nothing running. */
export function onExit(...stops) {
  const stop = () => {
    for (const s of stops) {
      try {
        s();
      } catch {}
    }
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
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
 * directory). `detached` gives it a process group of its own, so Ctrl-C reaches only the
 * example, which can stop Redis after what uses it. Resolves once it accepts connections.
 */
export async function startRedis({ dir, detached = false }) {
  const port = await freePort();
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: ["ignore", "pipe", "inherit"],
    detached,
  });
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
  return { url: `redis://127.0.0.1:${port}`, proc, stop: () => proc.kill() };
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
