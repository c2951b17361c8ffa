//! Shared test support: a real `herald serve` process on a free loopback port, and small SSE,
//! WebSocket and HTTP clients that wait on events (with a deadline), never on sleeps.

#![allow(dead_code, unreachable_pub)]

pub mod backends;
pub mod postgres;

use futures_util::{SinkExt, StreamExt};
use herald_protocol::{SseDecoder, SseEvent};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// The default deadline for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than `d`.
pub async fn within<T>(d: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?}"),
    }
}

/// The built `herald` binary.
pub fn herald_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

/// A `herald` command whose environment holds no `HERALD_*` variable from the caller, so the
/// machine running the tests cannot change what is being tested.
pub fn herald_command() -> Command {
    let mut cmd = Command::new(herald_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HERALD_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A temporary file removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("herald-test-{}.toml", fastrand::u64(..)));
        std::fs::write(&path, text).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `herald serve`, killed on drop.
pub struct TestServer {
    pub child: Child,
    pub url: String,
    pub http: reqwest::Client,
    _config: TempFile,
}

impl TestServer {
    /// Starts a server with `config` (TOML) on 127.0.0.1:0.
    pub async fn start(config: &str) -> Self {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts a server with `config` (TOML) listening on `listen`.
    pub async fn start_on(config: &str, listen: &str) -> Self {
        Self::start_with(config, listen, &[], &[]).await
    }

    /// Starts a server with `config` (TOML) listening on `listen`, with extra `serve` flags and
    /// environment variables.
    pub async fn start_with(
        config: &str,
        listen: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let file = TempFile::with(config);
        let mut child = Command::new(herald_bin())
            .args(["serve", "--listen", listen, "--config"])
            .arg(&file.0)
            .args(flags)
            .envs(env.iter().copied())
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = within(WAIT, lines.next_line())
            .await
            .expect("read stdout")
            .expect("herald printed its address");
        let url = line
            .strip_prefix("Listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            url,
            http: reqwest::Client::new(),
            _config: file,
        }
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }

    /// host:port.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// POSTs JSON text with the JSON content type; returns status and body.
    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GETs a path; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Publishes and returns the publish result; fails the test unless 200.
    pub async fn publish(&self, channel: &str, event: Option<&str>, data: Value) -> Value {
        let mut body = json!({"channel": channel, "data": data});
        if let Some(e) = event {
            body["event"] = e.into();
        }
        let (status, v) = self.post("/api/publish", &body.to_string()).await;
        assert_eq!(status, 200, "publish failed: {v}");
        v
    }

    pub async fn stats(&self) -> Value {
        let (status, v) = self.get("/api/stats").await;
        assert_eq!(status, 200);
        v
    }

    /// Polls `/api/stats` until `pred` holds (bounded by `WAIT`).
    /// Polls `GET /metrics` until `pred` holds of its text; returns that text.
    pub async fn wait_metrics(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self
                .http
                .get(format!("{}/metrics", self.url))
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics text");
            if pred(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the metrics never matched:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never showed {what}: {s}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }
}

/// An SSE connection read with Herald's spec-following decoder.
pub struct Sse {
    pub decoder: SseDecoder,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    events: VecDeque<SseEvent>,
    pub headers: reqwest::header::HeaderMap,
    pub raw: Vec<u8>,
    /// The stream's hello (the `herald.connected` event's data), once read.
    pub hello: Option<Value>,
}

/// Builds `/sse?channel=..&channel=..`.
pub fn sse_url(server: &TestServer, channels: &[&str]) -> String {
    let q: Vec<String> = channels
        .iter()
        .map(|c| format!("channel={}", urlencode(c)))
        .collect();
    format!("{}/sse?{}", server.url, q.join("&"))
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Sse {
    /// Opens a stream; fails the test unless the server answers 200.
    pub async fn connect(server: &TestServer, channels: &[&str], last_id: Option<&str>) -> Self {
        let mut req = server.http.get(sse_url(server, channels));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = within(WAIT, req.send()).await.expect("SSE request");
        assert_eq!(resp.status(), 200, "SSE refused: {:?}", resp.text().await);
        Self::from_response(resp)
    }

    pub fn from_response(resp: reqwest::Response) -> Self {
        Self {
            decoder: SseDecoder::new(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            events: VecDeque::new(),
            raw: Vec::new(),
            hello: None,
        }
    }

    /// The next event, or None when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let chunk = within(WAIT, self.body.next()).await?.ok()?;
            self.raw.extend_from_slice(&chunk);
            let mut out = Vec::new();
            self.decoder.feed(&chunk, &mut out);
            self.keep(out);
        }
    }

    /// Queues decoded events, setting the stream's hello (`herald.connected`) aside.
    fn keep(&mut self, events: Vec<SseEvent>) {
        for e in events {
            if e.event == "herald.connected" && self.hello.is_none() {
                self.hello = Some(serde_json::from_str(&e.data).expect("hello is JSON"));
            } else {
                self.events.push_back(e);
            }
        }
    }

    /// The next event's data as JSON; fails the test at end of stream.
    pub async fn next_json(&mut self) -> (String, Value) {
        let e = self.next().await.expect("stream ended");
        (
            e.event,
            serde_json::from_str(&e.data).expect("event data is JSON"),
        )
    }

    /// Reads until a chunk containing `needle` arrives (for comments, which fire no event).
    pub async fn wait_raw(&mut self, needle: &[u8]) {
        let start = self.raw.len();
        loop {
            if self.raw[start..].windows(needle.len()).any(|w| w == needle) {
                return;
            }
            let chunk = within(WAIT, self.body.next())
                .await
                .expect("stream ended")
                .expect("stream error");
            self.raw.extend_from_slice(&chunk);
            let mut out = Vec::new();
            self.decoder.feed(&chunk, &mut out);
            self.keep(out);
        }
    }

    /// Drains until end of stream; returns the events seen on the way.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking Herald's JSON protocol.
pub struct Ws {
    pub inner: WsStream,
    next_id: u64,
    pushes: VecDeque<Value>,
    /// The connection's hello (`{"push":"connected",...}`), once read.
    pub hello: Option<Value>,
}

impl Ws {
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_url(&server.ws_url()).await
    }

    /// Connects to `url` (a `/ws` URL with a query, say); fails the test unless it upgrades.
    pub async fn connect_url(url: &str) -> Self {
        let (inner, _) = within(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WS connect");
        Self::from_stream(inner)
    }

    /// Wraps a connection opened some other way (a request with extra headers, say).
    pub fn from_stream(inner: WsStream) -> Self {
        Self {
            inner,
            next_id: 1,
            pushes: VecDeque::new(),
            hello: None,
        }
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.inner
            .send(Message::Text(text.into()))
            .await
            .expect("WS send");
    }

    /// The next JSON text frame as sent, the hello included; panics on close.
    pub async fn next_json_raw(&mut self) -> Value {
        loop {
            match within(WAIT, self.inner.next()).await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON frame"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next JSON text frame (pushes and replies alike, the hello set aside); panics on
    /// close.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match within(WAIT, self.inner.next()).await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON frame");
                    if v["push"] == "connected" && self.hello.is_none() {
                        self.hello = Some(v);
                        continue;
                    }
                    return v;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends a request (adding an id) and returns its reply; pushes seen meanwhile are kept.
    pub async fn request(&mut self, mut req: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = id.into();
        self.send_text(&req.to_string()).await;
        loop {
            let v = self.next_json().await;
            if v.get("push").is_some() {
                self.pushes.push_back(v);
                continue;
            }
            assert_eq!(v["id"], id, "reply for another request: {v}");
            return v;
        }
    }

    /// The next push.
    pub async fn next_push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        let v = self.next_json().await;
        assert!(v.get("push").is_some(), "unexpected reply {v}");
        v
    }

    /// Reads until the server closes; returns the close code (None if no close frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match within(WAIT, self.inner.next()).await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Whether the machine's environment demands that optional backends exist.
pub fn require_backends() -> bool {
    std::env::var("HERALD_TEST_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// Runs `npm test` in one of the repository's npm workspaces (`sdk/js`, `admin`) against this
/// build of Herald (`HERALD_BIN`). Skipped without npm, unless `HERALD_TEST_REQUIRE_BACKENDS=1`;
/// the first run installs the workspace's packages with `npm ci` from the committed lockfile.
pub fn npm_test(workspace: &str, herald: &str) {
    use std::process::Command;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if Command::new("npm").arg("--version").output().is_err() {
        let why = "npm is missing (Node.js 20 or later builds and tests the JavaScript parts)";
        assert!(
            !require_backends(),
            "{why} (HERALD_TEST_REQUIRE_BACKENDS=1)"
        );
        eprintln!("skipped: {why}");
        return;
    }
    if !root.join("node_modules/playwright-core").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&root)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci failed: {status}");
    }
    let status = Command::new("npm")
        .args(["test", "--workspace", workspace])
        .current_dir(&root)
        .env("HERALD_BIN", herald)
        .status()
        .expect("run npm test");
    assert!(status.success(), "npm test in {workspace} failed: {status}");
}

/// What a follower received, per channel: (offset, data) in arrival order.
pub type Followed = std::collections::BTreeMap<String, Vec<(u64, Value)>>;

/// Each channel's offset a follower must reach before it returns; `None` until known.
pub type Targets = tokio::sync::watch::Receiver<Option<std::collections::HashMap<String, u64>>>;

fn followed_all(got: &Followed, targets: &Targets) -> bool {
    targets.borrow().as_ref().is_some_and(|t| {
        t.iter().all(|(c, top)| {
            got.get(c)
                .and_then(|v| v.last())
                .is_some_and(|(o, _)| o >= top)
        })
    })
}

/// Follows `channels` over SSE, reconnecting with `Last-Event-ID` to whatever node `url`
/// names, until every channel reached its target. Every resume must be recovered (the hello's
/// `recovered` all true) and no reset may come.
pub async fn follow_sse(
    url: tokio::sync::watch::Receiver<String>,
    channels: &[&str],
    targets: Targets,
) -> Followed {
    let http = reqwest::Client::new();
    let mut got = Followed::new();
    let mut last_id = String::new();
    let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    let mut resumes = 0;
    loop {
        if followed_all(&got, &targets) {
            return got;
        }
        let base = url.borrow().clone();
        let mut req = http.get(format!("{base}/sse?{}", query.join("&")));
        if !last_id.is_empty() {
            req = req.header("last-event-id", &last_id);
        }
        let Ok(resp) = req.send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut decoder = SseDecoder::new();
        let mut hello = true;
        loop {
            if followed_all(&got, &targets) {
                return got;
            }
            let chunk = match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(chunk))) => chunk,
                Ok(_) => break,
            };
            let mut events = Vec::new();
            decoder.feed(&chunk, &mut events);
            for e in events {
                let v: Value = serde_json::from_str(&e.data).expect("JSON");
                match e.event.as_str() {
                    "herald.connected" => {
                        if hello && !last_id.is_empty() {
                            resumes += 1;
                            assert!(
                                v["recovered"]
                                    .as_array()
                                    .is_some_and(|r| r.iter().all(|b| b == true)),
                                "SSE resume #{resumes} not recovered: {v}"
                            );
                        }
                        hello = false;
                    }
                    "herald.reset" => panic!("SSE reset after a restart: {v}"),
                    _ => {
                        let channel = v["channel"].as_str().expect("channel").to_owned();
                        let offset = v["offset"].as_u64().expect("offset");
                        got.entry(channel)
                            .or_default()
                            .push((offset, v["data"].clone()));
                    }
                }
            }
            if !decoder.last_event_id().is_empty() {
                last_id = decoder.last_event_id().to_owned();
            }
        }
    }
}
