// Every example, started with the one command its README gives and driven in one headless
// Chromium (Debian's, through playwright-core) as its users would. Each example's checks are
// in its own folder (`NAME/test.mjs`, a default export taking the browser).
import { test, before, after } from "node:test";
import { readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { browserOrSkip, launch } from "../lib/testing.mjs";
import { ROOT } from "../lib/herald.mjs";

const examples = readdirSync(join(ROOT, "examples"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(ROOT, "examples", d.name, "test.mjs")))
  .map((d) => d.name)
  .sort();

let browser;
before(async () => {
  if (browserOrSkip({ skip: () => {} })) browser = await launch();
});
after(async () => {
  await browser?.close();
});

for (const name of examples) {
  test(name, async (t) => {
    if (!browserOrSkip(t)) return;
    const { default: check } = await import(`../${name}/test.mjs`);
    await check(browser, t);
  });
}
