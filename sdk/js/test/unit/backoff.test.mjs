import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff, throttle } from "../../dist/index.js";
import { mock } from "node:test";

test("backoff grows exponentially with full jitter, capped, and resets", () => {
  const top = new Backoff({ minDelay: 500, maxDelay: 20000 }, () => 0.999999);
  const ceilings = Array.from({ length: 10 }, () => top.next());
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 15999, 19999, 19999, 19999, 19999]);
  top.reset();
  assert.equal(top.next(), 499);
  const bottom = new Backoff({}, () => 0);
  assert.equal(bottom.next(), 0, "full jitter reaches down to zero");
  // Spread: 1000 draws of the fifth attempt cover the whole range [0, 8000).
  const real = new Backoff();
  const draws = Array.from({ length: 1000 }, () => {
    real.attempt = 4;
    return real.next();
  });
  assert.ok(Math.min(...draws) < 800 && Math.max(...draws) > 7200, "draws cover the range");
});

test("throttle: latest wins, the last call always lands", () => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  try {
    const calls = [];
    const seek = throttle((t) => calls.push(t), 100);
    seek(1);
    seek(2);
    seek(3);
    assert.deepEqual(calls, [1]);
    mock.timers.tick(100);
    assert.deepEqual(calls, [1, 3]);
    mock.timers.tick(500);
    seek(4);
    assert.deepEqual(calls, [1, 3, 4]);
  } finally {
    mock.timers.reset();
  }
});
