// What the examples' browser tests stand on: each example started with the one command its
// README gives (`npm start` in its folder), Debian's Chromium through playwright-core, waiting.
import { spawn } from "node:child_process";
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
 * (`NAME ready: URL` lines, by name), and a `stop()` that ends it and every process it started.
 */
export async function startExample(name, env = {}) {
  const proc = spawn("npm", ["start", "--silent"], {
    cwd: join(ROOT, "examples", name),
    stdio: ["ignore", "pipe", "inherit"],
    detached: true,
    env: { ...process.env, ...env },
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
     */
    async end(ms = 15000) {
      this.stop("SIGTERM");
      const deadline = Date.now() + ms;
      while (Date.now() < deadline && alive(proc.pid)) await sleep(50);
      this.stop("SIGKILL");
    },
  };
}
