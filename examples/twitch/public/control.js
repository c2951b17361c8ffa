// The control panel: each button asks the fake Twitch's control API to make something happen,
// and the list below shows every notification the fake sent (Herald publishes each one once).
const $ = (sel) => document.querySelector(sel);
const config = await fetch("/config.json").then((r) => r.json());
$('[data-testid="channel"]').textContent = config.channel;

if (!config.twitch) {
  $('[data-testid="real-note"]').hidden = false;
  for (const el of document.querySelectorAll("#fire, #helix, #delivery, #log")) el.hidden = true;
} else {
  const value = (name) => $(`[name="${name}"]`).value.trim();
  const checked = (name) => $(`[name="${name}"]`).checked;
  const number = (name) => Number(value(name)) || undefined;

  /** The body each button sends. */
  const bodies = {
    follow: () => ({ user: value("user") || undefined }),
    subscribe: () => ({ user: value("user") || undefined, tier: value("tier") }),
    gift: () => ({ user: value("user") || undefined, total: number("total"), anonymous: checked("gift-anonymous") }),
    cheer: () => ({ user: value("user") || undefined, bits: number("bits"), message: value("message") || undefined, anonymous: checked("cheer-anonymous") }),
    raid: () => ({ user: value("user") || undefined, viewers: Number(value("viewers")) }),
  };

  async function control(action, body = {}) {
    const res = await fetch(`${config.twitch}/control/${action}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(json.error ?? `${action} answered ${res.status}`);
    refresh();
    return json;
  }

  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => {
      const action = button.dataset.action;
      control(action, bodies[action]?.() ?? {}).catch((e) => alert(e.message));
    });
  }

  const form = $('[data-testid="stats-form"]');
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(form);
    control("stats", {
      live: f.get("live") === "on",
      viewers: Number(f.get("viewers")),
      followers: Number(f.get("followers")),
      subs: Number(f.get("subs")),
    }).catch((err) => alert(err.message));
  });

  async function refresh() {
    const state = await fetch(`${config.twitch}/control/state`).then((r) => r.json());
    if (!form.contains(document.activeElement)) {
      // The form shows what Helix reports, unless it is being edited.
      form.live.checked = state.live;
      for (const k of ["viewers", "followers", "subs"]) form[k].value = state[k];
    }
    const sockets = state.sessions.reduce((n, s) => n + s.sockets, 0);
    $('[data-testid="fake-state"]').textContent =
      `Helix: ${state.live ? "live" : "offline"}, ${state.viewers} viewers, ${state.followers} followers, ${state.subs} subs · ` +
      `EventSub: ${sockets} socket${sockets === 1 ? "" : "s"}, ${state.subscriptions_created} subscriptions created · ` +
      `token refreshes: ${state.token_refreshes}`;
    $('[data-testid="sent"]').replaceChildren(
      ...state.sent
        .slice(-30)
        .reverse()
        .map((s) => {
          const li = document.createElement("li");
          li.textContent = `${new Date(s.at).toLocaleTimeString()} ${s.type} (message ${s.message_id.slice(0, 8)}…)`;
          return li;
        }),
    );
  }
  refresh();
  setInterval(refresh, 2000);
}
