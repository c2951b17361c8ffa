// Builds the admin page's script into the file Herald embeds (committed, so `cargo build`
// needs no npm; CI rebuilds it and fails when it differs) and copies its page beside it.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync } from "node:fs";
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
copyFileSync("index.html", "../crates/herald-server/assets/admin.html");
const js = readFileSync(OUT);
console.log(`/admin/app.js: ${js.length} bytes, ${gzipSync(js).length} gzipped`);
