// A stand-in for the donation platform: it sends each donation to Herald as a signed webhook,
// the way a real platform calls the URL a streamer registers with it, and retries a delivery
// that got no answer (or a 5xx) with the same id, as real platforms do.
//
// run.mjs uses it for the dashboard's "Simulate donation" button. From a shell:
//   node platform.mjs --donor Alice --amount 5 --message "Hello!"
//   node platform.mjs --id don_1 --donor Alice --amount 5     # again with --id don_1: published once
// (HERALD_URL names Herald, http://127.0.0.1:7700 by default; the secret is read from herald.toml.)
import { createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The webhook source's secret, as herald.toml gives it. */
export function webhookSecret(file = join(here, "herald.toml")) {
  const block = readFileSync(file, "utf8").split(/^\[\[connectors\.webhook\]\]\s*$/m)[1] ?? "";
  const secret = /^secret\s*=\s*"([^"]+)"/m.exec(block)?.[1];
  if (!secret) throw new Error(`${file} has no [[connectors.webhook]] secret`);
  return secret;
}

/** A donation as the platform describes it; `id` names it for every delivery attempt. */
export function donation({ streamer, donor, amount, currency = "USD", message = "", id }) {
  return {
    id: id ?? `don_${Date.now().toString(36)}${randomBytes(3).toString("hex")}`,
    streamer_id: streamer,
    donor: String(donor).slice(0, 40),
    amount: Math.round(Number(amount) * 100) / 100,
    currency,
    message: String(message).slice(0, 200),
    created_at: new Date().toISOString(),
  };
}

/**
 * One delivery: the body, signed with HMAC-SHA256 over "TIMESTAMP.BODY" (hex, after "sha256="),
 * POSTed to Herald's /ingest/donations. Resolves with Herald's answer (the publication's
 * position; `duplicate: true` when that id was already published).
 */
export async function deliver({ herald, secret, body, source = "donations" }) {
  const raw = JSON.stringify(body);
  const timestamp = String(Math.floor(Date.now() / 1000));
  const signature = createHmac("sha256", secret).update(`${timestamp}.${raw}`).digest("hex");
  const res = await fetch(`${herald}/ingest/${source}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-timestamp": timestamp, "x-signature": `sha256=${signature}` },
    body: raw,
    signal: AbortSignal.timeout(5000),
  });
  const answer = await res.json().catch(() => null);
  return { status: res.status, answer };
}

/** Delivers until Herald answers (other than 5xx) or `patience` ms have passed. */
export async function deliverWithRetries({ patience = 30000, ...delivery }) {
  const end = Date.now() + patience;
  let attempts = 0;
  for (let wait = 100; ; wait = Math.min(2 * wait, 1000)) {
    attempts++;
    let why;
    try {
      const out = await deliver(delivery);
      if (out.status < 500) return { ...out, attempts };
      why = `Herald answered ${out.status}: ${JSON.stringify(out.answer)}`;
    } catch (e) {
      why = `Herald did not answer: ${e.cause?.code ?? e.message}`;
    }
    if (Date.now() + wait > end) throw new Error(`gave up after ${attempts} attempts; ${why}`);
    await sleep(wait);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      id: { type: "string" },
      streamer: { type: "string", default: "s1" },
      donor: { type: "string", default: "Anonymous" },
      amount: { type: "string", default: "5" },
      currency: { type: "string", default: "USD" },
      message: { type: "string", default: "" },
    },
  });
  const herald = (process.env.HERALD_URL ?? "http://127.0.0.1:7700").replace(/\/$/, "");
  const body = donation(values);
  const { status, answer } = await deliverWithRetries({ herald, secret: webhookSecret(), body });
  console.log(`${body.id}: ${status} ${JSON.stringify(answer)}`);
  process.exitCode = status === 200 ? 0 : 1;
}
