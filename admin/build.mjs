// Builds the admin page's script into the file Herald embeds (committed, so `cargo build`
// needs no npm; CI rebuilds it and fails when it differs). The page, index.html, is embedded
// as it is.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const OUT = "../crates/herald-server/assets/admin.js";
await build({
  entryPoints: ["src/app.ts"],
  outfile: OUT,
  bundle: true,
  format: "iife",
  target: "es2020",
  minify: true,
  legalComments: "none",
  logLevel: "warning",
  banner: { js: "/* herald admin page: built from admin/ by `npm run build`; do not edit */" },
  // The SDK's sources, not its build, so this builds on its own.
  alias: { "herald-client": "../sdk/js/src/index.ts" },
});
execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { stdio: "inherit" });
const js = readFileSync(OUT);
console.log(`/admin/app.js: ${js.length} bytes, ${gzipSync(js).length} gzipped`);
