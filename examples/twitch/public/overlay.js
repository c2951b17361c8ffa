// What every widget shares: where Herald is and which channel to read, one Server-Sent Events
// connection through the client Herald serves at /sdk/herald.js, and the connection state on
// <body> (a small badge shows while the widget is not connected).
//
// An OBS browser source names Herald and the channel on its URL:
//   alert.html?herald=https://rt.example.com&channel=twitch:yourlogin
// Without them the page asks this example's server (/config.json).

const params = new URLSearchParams(location.search);

/** A number from the page's URL (`?name=N`), or `fallback`. */
export function numberParam(name, fallback) {
  const n = Number(params.get(name));
  return params.has(name) && Number.isFinite(n) && n > 0 ? n : fallback;
}

/** A text from the page's URL, or `fallback`. */
export function textParam(name, fallback) {
  return params.get(name) || fallback;
}

async function where() {
  let herald = params.get("herald");
  let channel = params.get("channel");
  if (!herald || !channel) {
    const config = await fetch("/config.json").then((r) => r.json());
    herald ||= config.herald;
    channel ||= config.channel;
  }
  return { herald, channel };
}

/**
 * Subscribes to the account's channel with `handlers` (the SDK's subscription handlers) and
 * connects. `onHello` receives each connection's hello (`time` is Herald's clock).
 */
export async function openChannel(handlers, { onHello } = {}) {
  const badge = document.createElement("div");
  badge.className = "connection";
  badge.setAttribute("data-testid", "connection");
  document.body.append(badge);
  let herald, channel;
  try {
    ({ herald, channel } = await where());
  } catch (e) {
    badge.textContent = "No Herald address: add ?herald=URL&channel=twitch:LOGIN to this page's URL";
    throw e;
  }
  document.body.dataset.channel = channel;
  const client = new Herald.HeraldClient({ url: herald, transport: "sse" });
  client.on("state", (s) => {
    document.body.dataset.state = s.state;
    badge.textContent = s.state === "connected" ? "" : s.state === "disconnected" ? "reconnecting…" : s.state;
  });
  if (onHello) client.on("connected", onHello);
  client.subscribe(channel, {
    ...handlers,
    onSubscribed(info) {
      document.body.dataset.subscribed = "true";
      handlers.onSubscribed?.(info);
    },
  });
  client.connect();
  return { client, channel };
}
