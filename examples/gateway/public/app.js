// The gateway's page: one Herald connection carrying the shared job progress channel, the
// user's own alerts and the user's own AI answers. The token comes from the app's backend.
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const param = new URLSearchParams(location.search).get("user");
const user = /^[A-Za-z0-9_-]{1,64}$/.test(param ?? "") ? param : "alice";
const JOB = "job_123";

$("user").textContent = user;
$("alerts-channel").textContent = `alerts:${user}`;
$("answers-channel").textContent = `answers:${user}`;

async function postJson(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(json.error ?? `${path} answered ${res.status}`);
  return json;
}

const { herald } = await fetch("/api/config").then((r) => r.json());
const client = new Herald.HeraldClient({
  url: herald,
  // Asked on every connect and before the token expires.
  getToken: () =>
    fetch(`/api/token?user=${encodeURIComponent(user)}`)
      .then((r) => r.json())
      .then((j) => j.token),
});
window.gateway = { client, user };

client.on("state", (s) => {
  document.body.dataset.state = s.state;
  $("state").textContent = s.state + (s.reason && s.state !== "connected" ? ` (${s.reason})` : "");
});

const subscribed = (section) => ({
  onSubscribed: () => (document.getElementById(section).dataset.subscribed = "true"),
});

// ---- job progress: one channel every user may read ----

let run = null;
const steps = new Map();

function showStep(data) {
  if (data.run !== run) {
    // A new run of the job (or the first message this page sees).
    run = data.run;
    steps.clear();
    $("job-run").textContent = `run ${run}`;
  }
  steps.set(data.step, data);
  const progress = Math.round(Math.max(...[...steps.values()].map((s) => s.progress)) * 100);
  $("progress").value = progress;
  $("progress").setAttribute("value", String(progress));
  $("progress-text").textContent = `${progress}%`;
  $("job-status").textContent = data.status;
  // Pub/sub messages and stream entries reach Herald by two paths: list them by step.
  $("steps").replaceChildren(
    ...[...steps.values()]
      .sort((a, b) => a.step - b.step)
      .map((s) => {
        const li = document.createElement("li");
        li.value = s.step;
        li.dataset.step = s.step;
        li.dataset.pub = JSON.stringify(s);
        li.innerHTML = `${Math.round(s.progress * 100)}% ${html(s.message)} <small>via ${
          s.path === "stream" ? "the jobs stream (lossless)" : "Redis PUBLISH (at most once)"
        }</small>`;
        return li;
      }),
  );
}

const job = client.subscribe(`job_progress:${JOB}`, {
  ...subscribed("job"),
  onReset: () => ($("job-status").textContent = "some progress messages were lost; the next one shows where the job is"),
});
job.on("job_progress", showStep);
job.on("job_done", showStep);

$("start-job").addEventListener("click", async () => {
  try {
    const r = await postJson("/api/jobs", { job: JOB });
    $("job-status").textContent = `started run ${r.run}`;
  } catch (e) {
    $("job-status").textContent = `could not start: ${e.message}`;
  }
});

// ---- alerts: alerts:USER, readable by USER only ----

const alerts = client.subscribe(`alerts:${user}`, subscribed("alerts"));
alerts.on("alert", (data) => {
  const li = document.createElement("li");
  li.dataset.text = data.text;
  li.innerHTML = `${html(data.text)} <small>${new Date(data.at).toLocaleTimeString()}</small>`;
  $("alerts").prepend(li);
});

$("alert-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  await postJson("/api/alerts", { user: form.user.value, text: form.text.value });
  form.text.value = "";
});

$("peek-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const other = e.target.user.value.trim();
  const result = $("peek-result");
  result.className = "";
  result.dataset.code = "";
  if (other === user) return void (result.textContent = "that is your own channel");
  result.textContent = "asking Herald…";
  const peek = client.subscribe(`alerts:${other}`, {
    onSubscribed: () => {
      result.textContent = `subscribed to alerts:${other}`;
      peek.unsubscribe();
    },
    onError: (err) => {
      result.className = "refused";
      result.dataset.code = err.code;
      result.textContent = `refused: ${err.code}: ${err.message}`;
      peek.unsubscribe();
    },
  });
});

// ---- AI answers: answers:USER, shown by the page that asked ----

let asking = null;
const answer = $("answer");

const answers = client.subscribe(`answers:${user}`, {
  ...subscribed("ask"),
  // Everything this user's channel brought, whichever tab asked.
  onPublication: () => (answer.dataset.received = String(Number(answer.dataset.received ?? 0) + 1)),
  onReset: () => asking && ($("answer-status").textContent = "part of the answer was lost; ask again"),
});
answers.on("chunk", (data) => {
  if (data.id !== asking?.id) return; // another tab's question
  const span = document.createElement("span");
  span.dataset.index = data.index;
  span.textContent = data.text;
  answer.append(span);
  asking.text += data.text;
  answer.dataset.state = "streaming";
  answer.dataset.count = String(answer.children.length);
  $("answer-status").textContent = `${answer.children.length} chunks…`;
});
answers.on("done", (data) => {
  if (data.id !== asking?.id) return;
  const whole = answer.children.length === data.chunks && asking.text === data.text;
  answer.dataset.state = whole ? "complete" : "incomplete";
  answer.dataset.total = String(data.chunks);
  $("answer-status").textContent = whole ? `complete: ${data.chunks} chunks` : "incomplete: some chunks are missing";
});
answers.on("failed", (data) => {
  if (data.id !== asking?.id) return;
  answer.dataset.state = "failed";
  $("answer-status").textContent = `failed: ${data.error}`;
});

$("ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = `ask-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  asking = { id, text: "" };
  answer.replaceChildren();
  answer.dataset.state = "waiting";
  answer.dataset.id = id;
  delete answer.dataset.count;
  delete answer.dataset.total;
  delete answer.dataset.expected;
  $("answer-status").textContent = "asking…";
  try {
    const r = await postJson("/api/ask", { user, id, prompt: e.target.prompt.value });
    answer.dataset.expected = String(r.chunks);
  } catch (err) {
    answer.dataset.state = "failed";
    $("answer-status").textContent = `could not ask: ${err.message}`;
  }
});

function html(text) {
  const div = document.createElement("div");
  div.textContent = String(text);
  return div.innerHTML;
}

client.connect();
