// Builds the package (dist/: ESM and type declarations) and the file Herald serves at
// /sdk/herald.js (one minified script, no module loader needed), then prints its size and
// fails when gzip makes it larger than the budget.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";

const SERVED = "../../crates/herald-server/assets/herald.js";
const BUDGET = 8 * 1024;

rmSync("dist", { recursive: true, force: true });
const common = { bundle: true, format: "esm", target: "es2020", logLevel: "warning", legalComments: "none" };
await build({ ...common, entryPoints: ["src/index.ts"], outfile: "dist/index.js" });
await build({
  ...common,
  entryPoints: ["src/react.ts"],
  outfile: "dist/react.js",
  // The bindings use the package's own client and the app's React.
  external: ["./index.js", "react"],
});
await build({
  ...common,
  entryPoints: ["src/index.ts"],
  outfile: SERVED,
  format: "iife",
  globalName: "Herald",
  minify: true,
  banner: { js: "/* herald-client: built from sdk/js by `npm run build`; do not edit */" },
});
execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { stdio: "inherit" });

const served = readFileSync(SERVED);
const gz = gzipSync(served, { level: 9 }).length;
console.log(`/sdk/herald.js: ${served.length} bytes, ${gz} bytes gzipped (budget ${BUDGET})`);
if (gz > BUDGET) {
  console.error(`/sdk/herald.js is over its budget by ${gz - BUDGET} bytes gzipped`);
  process.exit(1);
}
