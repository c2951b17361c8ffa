// The admin page: login, a live overview, channels, an inspector (tail, history, presence,
// publish) and connections. It talks only to /admin/api/* on its own origin; state-changing
// requests carry the login's CSRF token.

import { SseParser, type SseMessage } from "herald-client";

type Json = Record<string, any>;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
let csrf = "";

async function api(path: string, body?: unknown): Promise<Json> {
  const init: RequestInit = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.method = "POST";
    init.headers = { "content-type": "application/json", "x-herald-csrf": csrf };
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const json = await res.json().catch(() => ({}));
  if (res.status === 401 && path !== "/admin/login") showLogin();
  if (!res.ok) throw new Error(json?.error?.message ?? `${res.status}`);
  return json;
}

function showLogin(): void {
  stopPolling();
  $("app").hidden = true;
  $("login").hidden = false;
  $<HTMLInputElement>("password").focus();
}

function showApp(): void {
  $("login").hidden = true;
  $("app").hidden = false;
  startPolling();
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    const r = await api("/admin/login", { password: $<HTMLInputElement>("password").value });
    csrf = r.csrf;
    $<HTMLInputElement>("password").value = "";
    showApp();
  } catch (err) {
    $("login-error").textContent = (err as Error).message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("/admin/logout", {}).catch(() => {});
  csrf = "";
  showLogin();
});

for (const b of document.querySelectorAll<HTMLButtonElement>("nav button")) {
  b.addEventListener("click", () => tab(b.dataset.tab!));
}

function tab(name: string): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>("nav button")) {
    b.classList.toggle("on", b.dataset.tab === name);
  }
  for (const s of ["overview", "channels", "inspector", "connections"]) $(s).hidden = s !== name;
  if (name === "channels") loadChannels();
  if (name === "connections") findConnections();
}

// ---- overview ----

const HISTORY = 90;
const series: Record<string, number[]> = {};
let previous: { at: number; s: Json } | undefined;
let timer: ReturnType<typeof setInterval> | undefined;

function push(name: string, v: number): number[] {
  const list = (series[name] ??= []);
  list.push(v);
  if (list.length > HISTORY) list.shift();
  return list;
}

function spark(values: number[]): string {
  if (values.length < 2) return "";
  const max = Math.max(1, ...values);
  // The newest sample at the right edge.
  const from = HISTORY - values.length;
  const pts = values.map((v, i) => `${((from + i) / (HISTORY - 1)) * 100},${40 - (v / max) * 38}`).join(" ");
  return `<svg class="spark" viewBox="0 0 100 40" preserveAspectRatio="none"><polyline points="${pts}"/></svg>`;
}

const fmt = (n: number): string => (n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : `${Math.round(n)}`);
const ms = (v: number | null | undefined): string => (v == null ? "–" : `${v} ms`);
const plural = (n: number, word: string): string => `${fmt(n)} ${word}${n === 1 ? "" : "s"}`;
const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function refresh(): Promise<void> {
  let s: Json;
  try {
    s = await api("/admin/api/stats");
  } catch {
    return;
  }
  const now = Date.now();
  const rate = (f: (x: Json) => number): number =>
    previous ? Math.max(0, (f(s) - f(previous.s)) / ((now - previous.at) / 1000)) : 0;
  const pubs = rate((x) => x.publications);
  const dels = rate((x) => x.delivered.sse + x.delivered.ws);
  previous = { at: now, s };
  const c = s.connections;
  const lat = s.delivery_latency;
  const e = s.engine;
  $("node").textContent = `${e.kind} engine · up ${s.uptime_seconds}s`;
  const cards: Array<[string, string, number[] | null, string]> = [
    ["Connections", fmt(c.total), push("conn", c.total), `SSE <b id="conn-sse">${c.sse}</b> · WebSocket <b id="conn-ws">${c.ws}</b>`],
    ["Channels", fmt(s.channels), push("chan", s.channels), `${fmt(s.subscriptions)} subscriptions · ${plural(s.users, "user")}`],
    ["Publications / s", fmt(pubs), push("pubs", pubs), `${fmt(s.publications)} in all`],
    ["Deliveries / s", fmt(dels), push("dels", dels), `${fmt(s.delivered.sse + s.delivered.ws)} in all`],
    ["Delivery latency", ms(lat.p50_ms), null, `p90 ${ms(lat.p90_ms)} · p99 ${ms(lat.p99_ms)} · ${fmt(lat.count)} samples`],
    ["Engine", `${e.state}`, null, `${e.kind} · ${e.ready ? '<span class="ok">ready</span>' : '<span class="err">not ready</span>'} · ${e.reconnects} reconnects`],
    ["Resumes", fmt(s.resumes), null, `${fmt(s.resumes_reset)} reset · ${fmt(s.resets)} reset notices`],
    ["Dropped", fmt(s.slow_consumer_evictions + s.write_timeouts), null, `${s.slow_consumer_evictions} slow consumers · ${s.write_timeouts} write timeouts`],
  ];
  $("cards").innerHTML = cards
    .map(([title, big, sp, sub]) => `<div class="card"><h3>${title}</h3><div class="big">${big}</div><div class="dim">${sub}</div>${sp ? spark(sp) : ""}</div>`)
    .join("");
}

function startPolling(): void {
  stopPolling();
  refresh();
  timer = setInterval(refresh, 1000);
}

function stopPolling(): void {
  if (timer) clearInterval(timer);
  timer = undefined;
}

// ---- channels ----

let searchTimer: ReturnType<typeof setTimeout> | undefined;
$("channel-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadChannels, 200);
});

async function loadChannels(): Promise<void> {
  const q = encodeURIComponent($<HTMLInputElement>("channel-search").value);
  const r = await api(`/admin/api/channels?limit=200&search=${q}`);
  $("channel-total").textContent = `${r.total} channels`;
  $("channel-list").innerHTML = r.channels
    .map((c: Json) => `<tr><td>${esc(c.channel)}</td><td>${c.subscribers}</td><td><button class="act" data-inspect="${esc(c.channel)}">Inspect</button></td></tr>`)
    .join("");
}

$("channel-list").addEventListener("click", (e) => {
  const name = (e.target as HTMLElement).dataset.inspect;
  if (!name) return;
  $<HTMLInputElement>("inspect-channel").value = name;
  tab("inspector");
  void startTail();
});

// ---- inspector ----

let tail: AbortController | undefined;
const logLine = (text: string, cls = ""): void => {
  const log = $("inspect-log");
  const line = document.createElement("div");
  if (cls) line.className = cls;
  line.textContent = text;
  log.appendChild(line);
  while (log.childNodes.length > 500) log.removeChild(log.firstChild!);
  log.scrollTop = log.scrollHeight;
};
const channel = (): string => $<HTMLInputElement>("inspect-channel").value.trim();

/** Tails a channel with the operator's authority: read with fetch, so every event name is seen. */
async function startTail(): Promise<void> {
  tail?.abort();
  const name = channel();
  if (!name) return;
  const ctl = (tail = new AbortController());
  $("inspect-log").textContent = "";
  logLine(`tailing ${name}`, "dim");
  try {
    const res = await fetch(`/admin/api/tail?channel=${encodeURIComponent(name)}`, { signal: ctl.signal });
    if (!res.ok || !res.body) {
      const j = await res.json().catch(() => ({}));
      logLine(`tail: ${j?.error?.message ?? res.status}`, "err");
      return;
    }
    const parser = new SseParser(show, () => {});
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(value);
    }
    logLine("the stream ended", "dim");
  } catch (err) {
    if (!ctl.signal.aborted) logLine(`tail: ${(err as Error).message}`, "err");
  }
}

function show(m: SseMessage): void {
  try {
    const d = JSON.parse(m.data);
    if (d.push === "publication") logLine(`#${d.offset} ${d.event} ${JSON.stringify(d.data)}`);
    else if (m.event !== "herald.connected") logLine(`${m.event} ${m.data}`, "dim");
  } catch {
    logLine(`${m.event} ${m.data}`, "dim");
  }
}

$("tail").addEventListener("click", () => void startTail());
$("history").addEventListener("click", async () => {
  try {
    const r = await api(`/admin/api/history?channel=${encodeURIComponent(channel())}&limit=50`);
    logLine(`history: ${r.publications.length} publications`, "dim");
    for (const p of r.publications) logLine(`#${p.offset} ${p.event} ${JSON.stringify(p.data)}`);
  } catch (err) {
    logLine(`history: ${(err as Error).message}`, "err");
  }
});
$("presence").addEventListener("click", async () => {
  try {
    const r = await api(`/admin/api/presence?channel=${encodeURIComponent(channel())}`);
    logLine(`presence: ${JSON.stringify(r)}`, "dim");
  } catch (err) {
    logLine(`presence: ${(err as Error).message}`, "err");
  }
});
$("publish").addEventListener("click", async () => {
  const out = $("publish-result");
  out.className = "";
  try {
    const data = JSON.parse($<HTMLTextAreaElement>("publish-data").value);
    const event = $<HTMLInputElement>("publish-event").value.trim() || undefined;
    const r = await api("/admin/api/publish", { channel: channel(), event, data });
    out.textContent = `published at offset ${r.offset}`;
    out.className = "ok";
  } catch (err) {
    out.textContent = (err as Error).message;
    out.className = "err";
  }
});

// ---- connections ----

async function findConnections(): Promise<void> {
  const user = $<HTMLInputElement>("conn-user").value.trim();
  const r = await api(`/admin/api/connections?limit=500${user ? `&user=${encodeURIComponent(user)}` : ""}`);
  $("conn-result").textContent = `${r.total} connections`;
  $("conn-list").innerHTML = r.connections
    .map((c: Json) => `<tr><td>${c.conn_id}</td><td>${esc(c.user_id ?? "–")}</td><td><button class="act danger" data-kick="${c.conn_id}">Disconnect</button></td></tr>`)
    .join("");
}

$("conn-find").addEventListener("click", findConnections);
$("conn-list").addEventListener("click", async (e) => {
  const id = (e.target as HTMLElement).dataset.kick;
  if (!id) return;
  const r = await api("/admin/api/disconnect", { conn_id: id });
  $("conn-result").textContent = `disconnected ${r.disconnected}`;
  setTimeout(findConnections, 300);
});
$("conn-kick-all").addEventListener("click", async () => {
  const user = $<HTMLInputElement>("conn-user").value.trim();
  if (!user) {
    $("conn-result").textContent = "name a user first";
    return;
  }
  const r = await api("/admin/api/disconnect", { user });
  $("conn-result").textContent = `disconnected ${r.disconnected} connections of ${user}`;
  setTimeout(findConnections, 300);
});

// ---- start ----

api("/admin/api/session").then(
  (r) => {
    csrf = r.csrf;
    showApp();
  },
  () => showLogin(),
);
