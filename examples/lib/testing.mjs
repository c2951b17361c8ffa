// What the examples' browser tests stand on: each example started with the one command its
// README gives (`npm start` in its folder), Debian's Chromium through playwright-core, waiting.
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "./herald.mjs";
import { sleep } from "../../sdk/js/test/e2e/harness.mjs";
export { browserOrSkip, launch, sleep, until } from "../../sdk/js/test/e2e/harness.mjs";

/** Whether any process of the group `pgid` is still running. */
function alive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `npm start` in `examples/NAME` with `env` and resolves with the URLs it prints
 * (`NAME ready: URL` lines, by name), a `stop()` that kills it and every process it started,
 * and an `end()` that stops it as Ctrl-C would. It runs with a temporary directory of its own
 * (TMPDIR), so `end()` can tell what it left behind.
 */
export async function startExample(name, env = {}) {
  const tmp = mkdtempSync(join(tmpdir(), `herald-example-${name}-`));
  // Services an example runs as another user (Postgres) reach their directories through it.
  chmodSync(tmp, 0o755);
  const proc = spawn("npm", ["start", "--silent"], {
    cwd: join(ROOT, "examples", name),
    stdio: ["ignore", "pipe", "inherit"],
    detached: true,
    env: { ...process.env, TMPDIR: tmp, ...env },
  });
  const urls = await new Promise((ok, fail) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      if (/^Example ready\b/m.test(out)) {
        const found = {};
        for (const m of out.matchAll(/^(\S+) ready: (\S+)$/gm)) found[m[1]] = m[2];
        ok(found);
      }
    });
    proc.on("exit", (code) => fail(new Error(`npm start in examples/${name} exited with ${code}: ${out}`)));
  });
  proc.stdout.resume();
  return {
    urls,
    proc,
    stop(signal = "SIGKILL") {
      try {
        process.kill(-proc.pid, signal);
      } catch {}
    },
    /**
     * Ends it as Ctrl-C would (SIGTERM to every process it started), so it stops what it runs
     * outside its process group too (a database); whatever is left after `ms` is killed.
     * Resolves with the names it left in its temporary directory (none, if it cleaned up).
     */
    async end(ms = 20000) {
      this.stop("SIGTERM");
      const deadline = Date.now() + ms;
      while (Date.now() < deadline && alive(proc.pid)) await sleep(50);
      this.stop("SIGKILL");
      const left = readdirSync(tmp);
      rmSync(tmp, { recursive: true, force: true });
      return left;
    },
  };
}

/** Whether something accepts TCP connections at `url`'s host and port. */
export function listening(url) {
  const { hostname, port } = new URL(url);
  return new Promise((done) => {
    const socket = connect({ host: hostname, port: Number(port) });
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}
