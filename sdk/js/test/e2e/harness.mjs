// What the end-to-end tests stand on: a real Herald (the debug build cargo made), a TCP proxy
// the test can cut, a page server, a publisher, and Debian's Chromium through playwright-core.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttp } from "node:http";
import { createServer as createTcp, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../../../..");
export const CHROMIUM = "/usr/bin/chromium";
export const BUNDLE = join(ROOT, "crates/herald-server/assets/herald.js");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value, or fails after `ms`. */
export async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Whether the browser can run; without it the test is skipped, or fails in CI. */
export function browserOrSkip(t) {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.HERALD_TEST_REQUIRE_BACKENDS === "1") throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  t.skip(`skipped: ${CHROMIUM} is missing`);
  return false;
}

/** Starts Herald on a free port with `config` (TOML); resolves once it listens. */
export async function startHerald(config = "") {
  const bin = process.env.HERALD_BIN ?? join(ROOT, "target/debug/herald");
  if (!existsSync(bin)) throw new Error(`no Herald binary at ${bin}: run cargo build (or set HERALD_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), "herald-sdk-"));
  const file = join(dir, "herald.toml");
  writeFileSync(file, config);
  const proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--config", file], {
    stdio: ["ignore", "pipe", "inherit"],
    // HERALD_* variables are configuration to Herald: pass none of the test's own.
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_"))),
      HERALD_LOG: process.env.HERALD_TEST_LOG ?? "warn",
    },
  });
  proc.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const url = await new Promise((ok, fail) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /Listening on (\S+)/.exec(out);
      if (m) ok(m[1]);
    });
    proc.on("exit", (code) => fail(new Error(`herald exited with ${code}: ${out}`)));
  });
  proc.stdout.resume();
  return {
    url,
    stop: () => proc.kill("SIGKILL"),
    async publish(channel, data, event = "m") {
      const res = await fetch(`${url}/api/publish`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ channel, event, data }),
      });
      if (!res.ok) throw new Error(`publish answered ${res.status}: ${await res.text()}`);
      return res.json();
    },
    async stats() {
      return (await fetch(`${url}/api/stats`)).json();
    },
  };
}

/**
 * A TCP proxy in front of Herald that the test can cut: with a FIN, with a RST, in the middle
 * of a frame, or by refusing every connection for a while; and that can refuse WebSocket
 * upgrades (as some corporate proxies do) while letting other requests through.
 */
export class CutProxy {
  pairs = new Set();
  refusing = false;
  refuseUpgrades = false;
  midFrame = false;

  constructor(target) {
    const { hostname, port } = new URL(target);
    this.server = createTcp((client) => {
      if (this.refusing) return client.resetAndDestroy();
      let upstream;
      const pair = { client, upstream: undefined };
      this.pairs.add(pair);
      const forget = () => this.pairs.delete(pair);
      client.on("error", () => upstream?.destroy());
      client.on("close", () => (forget(), upstream?.destroy()));
      client.once("data", (first) => {
        if (this.refuseUpgrades && /^upgrade:\s*websocket/im.test(first.toString("latin1"))) {
          client.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
          return;
        }
        upstream = pair.upstream = connect(Number(port), hostname);
        upstream.on("error", () => client.destroy());
        upstream.on("close", () => client.destroy());
        upstream.write(first);
        client.on("data", (d) => upstream.write(d));
        upstream.on("data", (d) => {
          if (this.midFrame && d.length > 1) {
            // Half a frame (or half an SSE event), then the connection is gone.
            this.midFrame = false;
            client.write(d.subarray(0, Math.floor(d.length / 2)), () => client.resetAndDestroy());
            upstream.destroy();
            return;
          }
          client.write(d);
        });
      });
    });
  }

  async listen() {
    await new Promise((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  /** Ends every open connection: `fin` (a clean close), `rst` (a reset). */
  cut(how) {
    for (const { client, upstream } of this.pairs) {
      if (how === "fin") client.end();
      else client.resetAndDestroy();
      upstream?.destroy();
    }
    this.pairs.clear();
  }

  /** Resets every connection and refuses new ones for `ms`. */
  async refuse(ms) {
    this.refusing = true;
    this.cut("rst");
    await sleep(ms);
    this.refusing = false;
  }

  close() {
    this.cut("rst");
    this.server.close();
  }
}

/** Serves the test pages: the bundle Herald embeds, the page, and any extra files. */
export async function pageServer(extra = {}) {
  const page = `<!doctype html><meta charset="utf-8"><title>herald sdk test</title>
<script src="/herald.js"></script><script src="/page.js"></script><div id="root"></div>`;
  const files = {
    "/": ["text/html", () => page],
    "/herald.js": ["text/javascript", () => readFileSync(BUNDLE)],
    "/page.js": ["text/javascript", () => readFileSync(join(here, "page.js"))],
    ...extra,
  };
  const server = createHttp((req, res) => {
    const f = files[new URL(req.url, "http://x").pathname];
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": f[0], "cache-control": "no-store" }).end(f[1]());
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => server.close() };
}

/** Publishes `every` ms to each channel until stopped; counts what Herald acknowledged. */
export function publisher(herald, channels, every = 15) {
  const acked = Object.fromEntries(channels.map((c) => [c, 0]));
  let running = true;
  const done = (async () => {
    let n = 0;
    while (running) {
      const ch = channels[n++ % channels.length];
      await herald.publish(ch, { n });
      acked[ch]++;
      await sleep(every / channels.length);
    }
  })();
  return {
    acked,
    async stop() {
      running = false;
      await done;
    },
  };
}

export async function launch() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
}
