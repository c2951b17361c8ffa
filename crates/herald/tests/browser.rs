//! A real browser against a real server: headless Chromium loads a page whose plain
//! `EventSource` listens on two channels; the server cuts the connection mid-stream; the
//! browser reconnects by itself with `Last-Event-ID`; the page ends holding every message
//! exactly once, in order.
//!
//! The page comes from a tiny HTTP server on another loopback port (so the stream is
//! cross-origin, as in production) and posts its whole state to `POST /report` after every
//! burst of events; the test waits on those reports and on `/api/stats`, never on sleeps.
//!
//! Needs the Debian package `chromium` (`/usr/bin/chromium`). Without it the test is skipped,
//! unless `HERALD_TEST_REQUIRE_BACKENDS=1`, in which case it fails.

mod common;

use common::{require_backends, within, TestServer, WAIT};
use herald_protocol::parse_sse_id;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Deadline for anything that waits on the browser (start-up can be slow on a busy machine).
const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// The reconnection delay. Long enough that the publications made while the browser is away
/// are certainly published before it comes back (so they can only arrive by replay), short
/// enough to keep the test quick.
const CONFIG: &str = r#"
[sse]
retry = "1500ms"
keepalive = "5s"
"#;

/// The page: one plain `EventSource` on two channels, nothing else. It never reconnects by
/// hand; whatever reconnection happens is the browser's own, carrying `Last-Event-ID`.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>herald browser test</title></head>
<body>
<script>
"use strict";
const herald = new URLSearchParams(location.search).get("herald");
const state = {
  seq: 0,
  opens: 0,
  errors: 0,
  readyStatesOnError: [],
  received: [],
  lastEventIds: [],
  resets: [],
  disconnects: [],
  problems: [],
};
let pending = false;
function report() {
  if (pending) return;
  pending = true;
  setTimeout(() => {
    pending = false;
    state.seq += 1;
    fetch("/report", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(state),
    }).catch((e) => {
      state.problems.push("report failed: " + e);
    });
  }, 0);
}
window.addEventListener("error", (e) => {
  state.problems.push("page error: " + e.message);
  report();
});
try {
  const es = new EventSource(herald + "/sse?channel=a&channel=b");
  es.addEventListener("open", () => {
    state.opens += 1;
    report();
  });
  es.addEventListener("error", () => {
    state.errors += 1;
    state.readyStatesOnError.push(es.readyState);
    report();
  });
  es.addEventListener("message", (e) => {
    const m = JSON.parse(e.data);
    state.received.push(m.channel + ":" + m.offset + ":" + JSON.stringify(m.data));
    state.lastEventIds.push(e.lastEventId);
    report();
  });
  es.addEventListener("herald.reset", (e) => {
    state.resets.push(e.data);
    report();
  });
  es.addEventListener("herald.disconnect", (e) => {
    state.disconnects.push(JSON.parse(e.data));
    report();
  });
} catch (e) {
  state.problems.push("EventSource failed: " + e);
}
report();
</script>
</body>
</html>
"#;

// ---------------------------------------------------------------------------------------------
// The page server: a minimal HTTP/1.1 server (one request per connection).

/// Serves `GET /` (the page) and `POST /report` (forwarded, parsed, to `reports`).
async fn serve_page(listener: TcpListener, reports: mpsc::UnboundedSender<Value>) {
    let page = Arc::new(PAGE.to_owned());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let reports = reports.clone();
        let page = page.clone();
        tokio::spawn(async move {
            // A broken request only loses one report; the next one carries the whole state.
            let _ = handle(stream, &page, &reports).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    page: &str,
    reports: &mpsc::UnboundedSender<Value>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let target = request_line.next().unwrap_or("").to_owned();
    let content_length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + content_length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + content_length];
    let path = target.split('?').next().unwrap_or("");

    let (status, content_type, payload) = match (method.as_str(), path) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", page.as_bytes()),
        ("POST", "/report") => match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                let _ = reports.send(v);
                ("204 No Content", "text/plain", &b""[..])
            }
            Err(_) => ("400 Bad Request", "text/plain", &b"bad report"[..]),
        },
        _ => ("404 Not Found", "text/plain", &b"not found"[..]),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(payload).await?;
    stream.shutdown().await
}

/// The page's reports, newest by `seq` kept.
struct Reports {
    rx: mpsc::UnboundedReceiver<Value>,
    latest: Value,
}

impl Reports {
    /// Waits (up to `BROWSER_WAIT`) until the latest report satisfies `pred`; returns it.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            if pred(&self.latest) {
                return self.latest.clone();
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(v)) => {
                    if v["seq"].as_u64() > self.latest["seq"].as_u64() {
                        self.latest = v;
                    }
                }
                Ok(None) => panic!("page server stopped while waiting for {what}"),
                Err(_) => panic!(
                    "the page never reported {what} within {BROWSER_WAIT:?}; last report: {}",
                    self.latest
                ),
            }
        }
    }
}

fn received(report: &Value) -> Vec<String> {
    report["received"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The browser.

/// A headless Chromium in its own process group, with a fresh profile directory. Killed
/// (the whole group, by id) and cleaned up on drop; its log is printed if the test failed.
struct Browser {
    child: Child,
    pgid: u32,
    dir: PathBuf,
}

impl Browser {
    async fn launch(url: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("herald-chromium-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("create profile dir");
        let log = std::fs::File::create(dir.join("chromium.log")).expect("create log");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-proxy-server",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--mute-audio",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromium");
        let pgid = child.id().expect("chromium is running");
        Self { child, pgid, dir }
    }

    fn signal_group(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{}", self.pgid)])
            .stderr(Stdio::null())
            .status();
    }

    /// Ends the browser: SIGTERM to its group, then SIGKILL if it lingers.
    async fn close(mut self) {
        self.signal_group("-TERM");
        if tokio::time::timeout(WAIT, self.child.wait()).await.is_err() {
            self.signal_group("-KILL");
            let _ = within(WAIT, self.child.wait()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Anything of the group still alive (helpers outliving the browser) goes now.
        self.signal_group("-KILL");
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.join("chromium.log")) {
                // Chromium complains at length about the missing D-Bus; skip that noise.
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains("dbus")).collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("--- chromium log (last lines) ---\n{}", tail.join("\n"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------

/// What the page should hold for one channel.
#[derive(Debug)]
struct Expected {
    channel: &'static str,
    /// `channel:offset:payload`, in publication order.
    entries: Vec<String>,
    /// The channel's epoch and latest offset, as the publish API reported them.
    epoch: String,
    offset: u64,
}

impl Expected {
    fn new(channel: &'static str) -> Self {
        Self {
            channel,
            entries: Vec::new(),
            epoch: String::new(),
            offset: 0,
        }
    }
}

/// Publishes `n` messages on each channel, interleaved, recording what the page should hold.
async fn publish_round(server: &TestServer, round: &str, n: usize, expected: &mut [Expected]) {
    for i in 1..=n {
        for e in expected.iter_mut() {
            let channel = e.channel;
            let payload = json!(format!("{channel}-{round}-{i}"));
            let r = server.publish(channel, None, payload.clone()).await;
            let offset = r["offset"].as_u64().expect("publish returns an offset");
            let epoch = r["epoch"].as_str().expect("publish returns an epoch");
            assert!(offset > e.offset, "offsets grow: {r}");
            assert!(e.epoch.is_empty() || e.epoch == epoch, "epoch kept: {r}");
            e.entries.push(format!("{channel}:{offset}:{payload}"));
            e.epoch = epoch.to_owned();
            e.offset = offset;
        }
    }
}

fn channel_of(entry: &str) -> &str {
    entry.split(':').next().unwrap_or("")
}

/// What the page holds for `channel`, in arrival order.
fn only(list: &[String], channel: &str) -> Vec<String> {
    list.iter()
        .filter(|e| channel_of(e) == channel)
        .cloned()
        .collect()
}

fn count_on(report: &Value, channel: &str) -> usize {
    received(report)
        .iter()
        .filter(|e| channel_of(e) == channel)
        .count()
}

/// Asserts the page holds exactly `expected` for each channel (same order, nothing missing,
/// nothing twice) and nothing else.
fn assert_holds(report: &Value, expected: &[Expected]) {
    let got = received(report);
    for e in expected {
        assert_eq!(
            only(&got, e.channel),
            e.entries,
            "channel {}: the page must hold every message exactly once, in order",
            e.channel
        );
    }
    let total: usize = expected.iter().map(|e| e.entries.len()).sum();
    assert_eq!(got.len(), total, "the page holds extra messages: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_event_source_resumes_after_server_cut_without_loss_or_duplicates() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            !require_backends(),
            "HERALD_TEST_REQUIRE_BACKENDS=1 but {CHROMIUM} is missing: apt-get install -y chromium"
        );
        println!("skipped: chromium not installed");
        return;
    }

    let server = TestServer::start(CONFIG).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let page_addr = listener.local_addr().expect("page addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let page_server = tokio::spawn(serve_page(listener, tx));
    let mut reports = Reports {
        rx,
        latest: json!({"seq": 0}),
    };

    let page_url = format!(
        "http://{page_addr}/?herald={}",
        common::urlencode(&server.url)
    );
    let browser = Browser::launch(&page_url).await;

    // 1. The page is up and its EventSource is open on both channels.
    reports
        .wait("an open EventSource", |r| r["opens"].as_u64() >= Some(1))
        .await;
    server
        .wait_stats("one SSE connection holding two subscriptions", |s| {
            s["connections"]["sse"] == 1 && s["subscriptions"] == 2
        })
        .await;

    // 2. Live messages.
    let mut expected = [Expected::new("a"), Expected::new("b")];
    publish_round(&server, "live", 5, &mut expected).await;
    let r = reports
        .wait("the first 10 messages", |r| received(r).len() >= 10)
        .await;
    assert_holds(&r, &expected);

    // 3. The server cuts the stream mid-way (reconnect allowed).
    let resumes_before = server.stats().await["resumes"]
        .as_u64()
        .expect("stats.resumes");
    let (status, body) = server.post("/api/disconnect", r#"{"channel":"a"}"#).await;
    assert_eq!((status, &body["disconnected"]), (200, &json!(1)), "{body}");
    server
        .wait_stats("the browser's stream closed", |s| {
            s["connections"]["sse"] == 0
        })
        .await;

    // 4. Publications while the browser is away: they can only reach it by replay.
    publish_round(&server, "offline", 5, &mut expected).await;
    let s = server.stats().await;
    assert_eq!(
        s["connections"]["sse"], 0,
        "the browser came back before the offline publications were done \
         (retry delay too short for this machine?): {s}"
    );

    // 5. The browser reconnects by itself, with Last-Event-ID: both channels resume.
    let r = reports
        .wait("the 10 offline messages after reconnecting", |r| {
            received(r).len() >= 20
        })
        .await;
    assert_holds(&r, &expected);
    let s = server
        .wait_stats("both channels resumed from Last-Event-ID", |s| {
            s["resumes"].as_u64() >= Some(resumes_before + 2)
        })
        .await;
    assert_eq!(s["resumes"], resumes_before + 2, "{s}");
    assert_eq!(s["connections"]["sse"], 1, "{s}");
    assert_eq!(s["subscriptions"], 2, "{s}");
    assert_eq!(s["resets"], 0, "resume needed no reset: {s}");

    // 6. Live again on the resumed stream.
    publish_round(&server, "after", 2, &mut expected).await;
    let r = reports
        .wait("all 24 messages", |r| {
            count_on(r, "a") >= 12 && count_on(r, "b") >= 12
        })
        .await;

    // Every message exactly once, in order, per channel.
    assert_holds(&r, &expected);
    assert_eq!(r["resets"], json!([]), "no herald.reset may arrive: {r}");
    assert_eq!(r["problems"], json!([]), "the page hit errors: {r}");
    // One server-initiated end, announced, with reconnection allowed...
    let disconnects = r["disconnects"].as_array().expect("disconnects");
    assert_eq!(disconnects.len(), 1, "{r}");
    assert_eq!(disconnects[0]["reconnect"], true, "{r}");
    // ...followed by exactly one reconnection, made by the browser itself (the page only ever
    // creates one EventSource; an `error` with readyState CONNECTING is the browser retrying).
    assert_eq!(r["opens"], 2, "{r}");
    let states = r["readyStatesOnError"]
        .as_array()
        .expect("readyStatesOnError");
    assert!(
        !states.is_empty() && states.iter().all(|s| s == 0),
        "the browser must be reconnecting (readyState 0) on every error: {r}"
    );
    // The last event id the browser holds names both channels' latest positions: exactly
    // what it sent back as Last-Event-ID when it reconnected, only further along.
    let last_id = r["lastEventIds"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(Value::as_str)
        .expect("a last event id")
        .to_owned();
    let positions = parse_sse_id(&last_id, 2).expect("the page's last event id parses");
    for (p, e) in positions.iter().zip(&expected) {
        assert_eq!(
            (p.epoch.as_str(), p.offset),
            (e.epoch.as_str(), e.offset),
            "channel {}: {last_id}",
            e.channel
        );
    }
    println!(
        "browser held {} messages after {} open(s), {} error event(s); last id {last_id}",
        received(&r).len(),
        r["opens"],
        r["errors"]
    );

    browser.close().await;
    page_server.abort();
}
