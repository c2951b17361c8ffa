// Twitch overlays, in one command: a fake Twitch (or the real one, with TWITCH_* variables set),
// Herald running its Twitch connector against it, and a small server for the widgets and the
// control panel that fires the fake's events.
import { readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { exitStack, serveApp, startHerald, workDir } from "../lib/herald.mjs";
import { startFakeTwitch } from "./fake-twitch.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_LISTEN = process.env.EXAMPLE_HERALD_LISTEN || "127.0.0.1:7700";
const APP_PORT = Number(process.env.EXAMPLE_PORT ?? 8080);
const TWITCH_PORT = Number(process.env.EXAMPLE_TWITCH_PORT ?? 0);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const stops = exitStack("twitch example");
const work = workDir(stops, "twitch");

// ---- the configuration: herald.toml with the Twitch it talks to ----

const source = readFileSync(join(here, "herald.toml"), "utf8");
/** A `key = "value"` line of herald.toml (each key appears once). */
const line = (key) => new RegExp(`^${key} = "[^"]*"\\n`, "m");
const setting = (key) => {
  const m = new RegExp(`^${key} = "([^"]*)"$`, "m").exec(source);
  if (!m) throw new Error(`herald.toml has no \`${key} = "..."\` line`);
  return m[1];
};
const quote = (v) => JSON.stringify(String(v));

const REAL = ["CLIENT_ID", "CLIENT_SECRET", "BROADCASTER_ID", "BROADCASTER_LOGIN", "ACCESS_TOKEN", "REFRESH_TOKEN"];
const real = Boolean(process.env.TWITCH_CLIENT_ID);
let account;
let replace;
if (real) {
  const missing = REAL.filter((k) => !process.env[`TWITCH_${k}`]).map((k) => `TWITCH_${k}`);
  if (missing.length) throw new Error(`TWITCH_CLIENT_ID is set, so Twitch itself is used: set ${missing.join(", ")} too`);
  const env = (k) => process.env[`TWITCH_${k}`];
  account = { broadcasterLogin: env("BROADCASTER_LOGIN"), broadcasterId: env("BROADCASTER_ID") };
  // Kept across runs: the refresh token rotates, so the one you started with stops working.
  const tokenFile = process.env.TWITCH_TOKEN_FILE || join(homedir(), `.herald-twitch-${account.broadcasterLogin}.json`);
  replace = {
    client_id: env("CLIENT_ID"),
    client_secret: env("CLIENT_SECRET"),
    broadcaster_id: env("BROADCASTER_ID"),
    broadcaster_login: env("BROADCASTER_LOGIN"),
    access_token: env("ACCESS_TOKEN"),
    refresh_token: env("REFRESH_TOKEN"),
    token_file: tokenFile,
    // Twitch's own addresses are the connector's defaults; Helix is polled at its default pace.
    poll_interval: null,
    eventsub_url: null,
    helix_url: null,
    oauth_url: null,
  };
} else {
  account = {
    clientId: setting("client_id"),
    clientSecret: setting("client_secret"),
    broadcasterId: setting("broadcaster_id"),
    broadcasterLogin: setting("broadcaster_login"),
    accessToken: setting("access_token"),
    refreshToken: setting("refresh_token"),
  };
}

let fake = null;
if (!real) {
  fake = await startFakeTwitch({ port: TWITCH_PORT, account, stats: { followers: 37, subs: 4 } });
  stops.push(() => fake.close());
  replace = { eventsub_url: fake.eventsub, helix_url: fake.helix, oauth_url: fake.oauth, token_file: join(work, "twitch-tokens.json") };
}

let config = source;
for (const [key, value] of Object.entries(replace)) {
  if (!line(key).test(config)) throw new Error(`herald.toml has no \`${key} = "..."\` line`);
  config = config.replace(line(key), value === null ? "" : `${key} = ${quote(value)}\n`);
}
const configFile = join(work, "herald.toml");
writeFileSync(configFile, config);
const channel = setting("channel")
  .replaceAll("{broadcaster_login}", account.broadcasterLogin)
  .replaceAll("{broadcaster_id}", account.broadcasterId);

// ---- Herald ----

const herald = await startHerald({ config: configFile, listen: HERALD_LISTEN });
stops.push(() => herald.stop());
const connected = await connectorReady();

// ---- the widgets and the control panel ----

const app = await serveApp({
  dir: join(here, "public"),
  port: APP_PORT,
  routes: {
    // What the pages need: where Herald is, which channel, and where the fake's control API is.
    "GET /config.json": async () => [200, { herald: herald.url, channel, twitch: fake?.url ?? null }],
  },
});
stops.push(() => app.close());

console.log(`herald ready: ${herald.url}`);
if (fake) console.log(`twitch ready: ${fake.url}`);
console.log(`app ready: ${app.url}`);
console.log(
  fake
    ? `Open ${app.url}/control.html to fire follows, subs, cheers and raids at the widgets.`
    : connected
      ? `Connected to Twitch as ${account.broadcasterLogin}; the widgets show its events.`
      : `Not connected to Twitch yet: Herald keeps trying (its log above says why).`,
);
console.log(`OBS browser sources: ${app.url}/alert.html, ${app.url}/goal.html?target=50, ${app.url}/stats.html`);
console.log(`Example ready: ${app.url}`);

/**
 * Waits until the connector has its EventSub session with every subscription and the first
 * stats are published: an event fired before that would reach no subscription. False when
 * Twitch itself did not let it in time (the fake always must).
 */
async function connectorReady() {
  const end = Date.now() + (real ? 30000 : 20000);
  let connector;
  for (;;) {
    const stats = await fetch(`${herald.url}/api/stats`).then((r) => r.json());
    connector = stats.connectors?.find((c) => c.kind === "twitch");
    const subscribed = !fake || fake.state().sessions.some((s) => s.subscriptions.length === 7);
    const history = await fetch(`${herald.url}/api/history?channel=${encodeURIComponent(channel)}&limit=1`).then((r) => r.json());
    if (connector?.state === "connected" && subscribed && history.publications?.length) return true;
    if (Date.now() > end) break;
    await sleep(100);
  }
  const why = `Herald's Twitch connector is not connected: ${JSON.stringify(connector ?? "not listed in /api/stats")}`;
  if (!real) throw new Error(why);
  // Twitch may refuse for reasons only its answer tells (scopes, an expired refresh token).
  console.error(`${why}; see Herald's log above. Starting the widgets anyway.`);
  return false;
}
