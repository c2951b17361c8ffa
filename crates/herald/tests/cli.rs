//! The `herald` binary's client and config commands, run as real processes: `publish` against
//! a live server (subscribers on both transports see the message), `tail` printing JSON lines and
//! resuming by itself after the server cuts it, and `check-config` with its precedence rules
//! (defaults ← file ← `HERALD_*` environment ← flags) and its all-problems-at-once report.

mod common;

use common::{within, Sse, TempFile, TestServer, Ws, WAIT};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use common::herald_command as herald;

/// Runs `cmd` to completion (bounded by `WAIT`).
async fn run(cmd: &mut Command) -> Output {
    within(WAIT, cmd.output()).await.expect("run herald")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// publish
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_prints_the_result_and_both_transports_receive_it() {
    let server = TestServer::start("").await;
    let mut sse = Sse::connect(&server, &["news"], None).await;
    let mut ws = Ws::connect(&server).await;
    let reply = ws
        .request(json!({"op": "subscribe", "channel": "news"}))
        .await;
    assert!(reply.get("result").is_some(), "subscribe failed: {reply}");

    let out = run(herald().args([
        "publish",
        "news",
        r#"{"title":"hello","n":[1,2]}"#,
        "--event",
        "tts-completed",
        "--server",
        &server.url,
    ]))
    .await;
    assert!(out.status.success(), "publish failed: {}", stderr(&out));
    let printed: Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("publish printed no JSON ({e}): {:?}", stdout(&out)));
    assert_eq!(printed["channel"], "news", "{printed}");
    assert_eq!(printed["offset"], 1, "{printed}");
    let epoch = printed["epoch"].as_str().expect("epoch is a string");
    assert!(!epoch.is_empty(), "{printed}");

    let event = sse.next().await.expect("an SSE event");
    assert_eq!(event.event, "tts-completed");
    let data: Value = serde_json::from_str(&event.data).expect("event data is JSON");
    assert_eq!(data["channel"], "news");
    assert_eq!(data["event"], "tts-completed");
    assert_eq!(data["offset"], printed["offset"]);
    assert_eq!(data["epoch"], printed["epoch"]);
    assert_eq!(data["data"], json!({"title": "hello", "n": [1, 2]}));
    assert_eq!(event.id, format!("{epoch}-1"));

    let push = ws.next_push().await;
    assert_eq!(push["push"], "publication", "{push}");
    assert_eq!(push["channel"], "news", "{push}");
    assert_eq!(push["event"], "tts-completed", "{push}");
    assert_eq!(push["offset"], printed["offset"], "{push}");
    assert_eq!(push["epoch"], printed["epoch"], "{push}");
    assert_eq!(
        push["data"],
        json!({"title": "hello", "n": [1, 2]}),
        "{push}"
    );
}

#[tokio::test]
async fn publish_without_event_uses_message_and_accepts_a_trailing_slash() {
    let server = TestServer::start("").await;
    let mut sse = Sse::connect(&server, &["plain"], None).await;
    let url = format!("{}/", server.url);
    let out = run(herald().args(["publish", "plain", "42", "--server", &url])).await;
    assert!(out.status.success(), "publish failed: {}", stderr(&out));
    let (event, data) = sse.next_json().await;
    assert_eq!(event, "message");
    assert_eq!(data["data"], 42);
}

#[tokio::test]
async fn publish_rejects_invalid_json_before_sending_anything() {
    let server = TestServer::start("").await;
    let out =
        run(herald().args(["publish", "news", "{title: nope}", "--server", &server.url])).await;
    assert!(!out.status.success(), "invalid JSON was accepted");
    let err = stderr(&out);
    assert!(err.contains("not valid JSON"), "unclear message: {err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(server.stats().await["publications"], 0);
}

#[tokio::test]
async fn publish_to_an_invalid_channel_reports_the_server_error_code() {
    let server = TestServer::start("").await;
    let out = run(herald().args(["publish", "bad name", "{}", "--server", &server.url])).await;
    assert!(!out.status.success(), "an invalid channel was accepted");
    let err = stderr(&out);
    assert!(err.contains("bad_channel"), "no error code in: {err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(server.stats().await["publications"], 0);
}

// ---------------------------------------------------------------------------------------------
// tail
// ---------------------------------------------------------------------------------------------

/// A running `herald tail`, killed on drop; stderr is collected for failure messages.
struct Tail {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Tail {
    fn spawn(server: &TestServer, channels: &[&str]) -> Self {
        let mut child = herald()
            .arg("tail")
            .args(channels)
            .args(["--server", &server.url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald tail");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            _child: child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line, parsed as JSON.
    async fn next(&mut self) -> Value {
        let line = match tokio::time::timeout(WAIT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "tail printed no line ({other:?}); its stderr:\n{}",
                self.stderr()
            ),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
    }
}

fn sse_conns(s: &Value) -> u64 {
    s["connections"]["sse"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn tail_prints_one_json_line_per_event_of_every_channel() {
    let server = TestServer::start("").await;
    let mut tail = Tail::spawn(&server, &["donations:s1", "queue:s1"]);
    // Without a Last-Event-ID the stream starts live: publish only once it is subscribed.
    server
        .wait_stats("the tail subscribed", |s| {
            sse_conns(s) == 1 && s["subscriptions"] == 2
        })
        .await;

    let first = server
        .publish("donations:s1", Some("tts-completed"), json!({"id": 1}))
        .await;
    server
        .publish("elsewhere", None, json!("not for the tail"))
        .await;
    server
        .publish("queue:s1", None, json!({"len": 3, "text": "a\nb"}))
        .await;

    let line = tail.next().await;
    assert_eq!(line["channel"], "donations:s1", "{line}");
    assert_eq!(line["event"], "tts-completed", "{line}");
    assert_eq!(line["offset"], 1, "{line}");
    assert_eq!(line["epoch"], first["epoch"], "{line}");
    assert_eq!(line["data"], json!({"id": 1}), "{line}");
    let line = tail.next().await;
    assert_eq!(line["channel"], "queue:s1", "{line}");
    assert_eq!(line["event"], "message", "{line}");
    assert_eq!(line["offset"], 1, "{line}");
    // A newline inside the payload stays inside one JSON line.
    assert_eq!(line["data"], json!({"len": 3, "text": "a\nb"}), "{line}");
}

#[tokio::test]
async fn tail_rejects_an_invalid_channel_and_exits() {
    let server = TestServer::start("").await;
    let out = run(herald().args(["tail", "ok", "bad name", "--server", &server.url])).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad_channel"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

/// The server cuts the tail (`/api/disconnect` on one of its channels); messages published on
/// both channels while it is away arrive after it resumes by itself, each exactly once, in order.
#[tokio::test]
async fn tail_resumes_after_a_server_disconnect_without_loss_or_duplicates() {
    const ROUNDS: u64 = 3;
    const PER_CHANNEL: u64 = 3;
    let server = TestServer::start("[sse]\nretry = \"300ms\"\n").await;
    let channels = ["alpha", "beta:1"];
    let mut tail = Tail::spawn(&server, &channels);
    server
        .wait_stats("the tail subscribed", |s| {
            sse_conns(s) == 1 && s["subscriptions"] == 2
        })
        .await;

    // What each channel should show, in order: (offset, data).
    let mut expected: BTreeMap<&str, Vec<(u64, Value)>> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    let mut publish = |ch: &'static str, data: Value| {
        let list = expected.entry(ch).or_default();
        list.push((list.len() as u64 + 1, data.clone()));
        (ch, data)
    };
    let mut record = |line: Value| {
        let ch = line["channel"].as_str().expect("channel").to_owned();
        let offset = line["offset"].as_u64().expect("offset");
        seen.entry(ch)
            .or_default()
            .push((offset, line["data"].clone()));
    };

    // Live first.
    for ch in channels {
        let (ch, data) = publish(ch, json!({"round": 0, "n": 0}));
        server.publish(ch, None, data).await;
    }
    for _ in 0..channels.len() {
        record(tail.next().await);
    }

    let mut away_rounds = 0;
    for round in 1..=ROUNDS {
        let resumes = server.stats().await["resumes"].as_u64().unwrap();
        let (status, body) = server
            .post("/api/disconnect", &json!({"channel": "alpha"}).to_string())
            .await;
        assert_eq!((status, &body["disconnected"]), (200, &json!(1)), "{body}");
        // (Under heavy load the tail may already be back: then this round is not "away".)
        server
            .wait_stats("the tail's stream closed", |s| {
                sse_conns(s) == 0 || s["resumes"].as_u64().unwrap() >= resumes + 2
            })
            .await;
        // Publish on both channels, interleaved, while the tail waits to reconnect.
        for n in 1..=PER_CHANNEL {
            for ch in channels {
                let (ch, data) = publish(ch, json!({"round": round, "n": n}));
                server.publish(ch, None, data).await;
            }
        }
        if sse_conns(&server.stats().await) == 0 {
            away_rounds += 1;
        }
        // It comes back on its own, resuming both channels from its Last-Event-ID.
        server
            .wait_stats("the tail resumed both channels", |s| {
                sse_conns(s) == 1 && s["resumes"].as_u64().unwrap() >= resumes + 2
            })
            .await;
        for _ in 0..PER_CHANNEL * channels.len() as u64 {
            record(tail.next().await);
        }
    }
    assert!(
        away_rounds > 0,
        "the tail reconnected before any publication every time; nothing was resumed"
    );

    // A final marker: any duplicate or stray line would come before it.
    let (ch, data) = publish("alpha", json!("end"));
    server.publish(ch, None, data).await;
    loop {
        let line = tail.next().await;
        let end = line["data"] == "end";
        record(line);
        if end {
            break;
        }
    }

    let expected: BTreeMap<String, Vec<(u64, Value)>> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(seen, expected, "tail stderr:\n{}", tail.stderr());
    let err = tail.stderr();
    // Each drop was a clean, announced end of stream, never a failed connection attempt.
    assert!(
        err.contains("herald tail: stream ended; resuming."),
        "{err}"
    );
    assert!(
        !err.contains("cannot connect") && !err.contains("answered"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

fn toml_of(out: &Output) -> toml::Value {
    toml::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("check-config did not print TOML ({e}):\n{}", stdout(out)))
}

#[tokio::test]
async fn check_config_prints_the_effective_config_as_toml() {
    let file = TempFile::with(
        "[server]\nmax_connections = 12\n[sse]\nretry = \"300ms\"\n[channels.namespaces.chat]\nhistory_size = 5\n",
    );
    let out = run(herald().arg("check-config").arg("--config").arg(&file.0)).await;
    assert!(
        out.status.success(),
        "check-config failed: {}",
        stderr(&out)
    );
    let config = toml_of(&out);
    assert_eq!(config["server"]["max_connections"].as_integer(), Some(12));
    assert_eq!(config["sse"]["retry"].as_str(), Some("300ms"));
    assert_eq!(
        config["channels"]["namespaces"]["chat"]["history_size"].as_integer(),
        Some(5)
    );
    // Defaults fill in everything the file leaves out.
    assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:7077"));
    assert_eq!(config["sse"]["keepalive"].as_str(), Some("15s"));
    assert_eq!(config["engine"]["kind"].as_str(), Some("memory"));

    // The output is itself a valid configuration that means the same thing.
    let again = TempFile::with(&stdout(&out));
    let out2 = run(herald().arg("check-config").arg("--config").arg(&again.0)).await;
    assert!(out2.status.success(), "{}", stderr(&out2));
    assert_eq!(stdout(&out2), stdout(&out));
}

#[tokio::test]
async fn check_config_without_a_file_prints_the_defaults() {
    let out = run(herald().arg("check-config")).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let config = toml_of(&out);
    assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:7077"));
}

#[tokio::test]
async fn check_config_lists_every_problem_at_once_and_exits_2() {
    let file =
        TempFile::with("[server]\nlistn = \"x\"\n[bogus]\na = 1\n[sse]\nkeepalive = \"0s\"\n");
    let out = run(herald().arg("check-config").arg("--config").arg(&file.0)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    for needle in ["server.listn", "bogus", "sse.keepalive"] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}

#[tokio::test]
async fn check_config_reports_semantic_problems_with_exit_code_2() {
    let file = TempFile::with(
        "[sse]\nkeepalive = \"0s\"\n[ws]\nping_interval = \"90s\"\n[connection]\nmax_channels = 0\n",
    );
    let out = run(herald().arg("check-config").arg("--config").arg(&file.0)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "sse.keepalive",
        "ws.ping_interval",
        "connection.max_channels",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}

#[tokio::test]
async fn check_config_fails_on_a_missing_file() {
    let path = std::env::temp_dir().join(format!("herald-missing-{}.toml", fastrand::u64(..)));
    let out = run(herald().arg("check-config").arg("--config").arg(&path)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[tokio::test]
async fn environment_variables_set_config_keys() {
    let out = run(herald()
        .arg("check-config")
        .env("HERALD_SERVER__MAX_CONNECTIONS", "7")
        .env("HERALD_SSE__RETRY", "750ms"))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).lines().any(|l| l == "max_connections = 7"),
        "{}",
        stdout(&out)
    );
    let config = toml_of(&out);
    assert_eq!(config["server"]["max_connections"].as_integer(), Some(7));
    assert_eq!(config["sse"]["retry"].as_str(), Some("750ms"));
}

#[tokio::test]
async fn unknown_or_invalid_environment_keys_are_problems() {
    let out = run(herald()
        .arg("check-config")
        .env("HERALD_SERVER__LISTN", "x")
        .env("HERALD_BOGUS", "1"))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("server.listn") && err.contains("bogus"),
        "{err}"
    );

    let out = run(herald()
        .arg("check-config")
        .env("HERALD_SERVER__MAX_CONNECTIONS", "many"))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out)
            .to_ascii_lowercase()
            .contains("max_connections"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn flags_win_over_environment_which_wins_over_the_file() {
    let file = TempFile::with("[server]\nlisten = \"127.0.0.1:9000\"\n");
    let listen = |out: &Output| {
        assert!(out.status.success(), "{}", stderr(out));
        toml_of(out)["server"]["listen"]
            .as_str()
            .expect("server.listen")
            .to_owned()
    };

    let out = run(herald().arg("check-config").arg("--config").arg(&file.0)).await;
    assert_eq!(listen(&out), "127.0.0.1:9000");

    let out = run(herald()
        .arg("check-config")
        .arg("--config")
        .arg(&file.0)
        .env("HERALD_SERVER__LISTEN", "127.0.0.1:9500"))
    .await;
    assert_eq!(listen(&out), "127.0.0.1:9500");

    let out = run(herald()
        .args(["check-config", "--listen", "127.0.0.1:9999", "--config"])
        .arg(&file.0)
        .env("HERALD_SERVER__LISTEN", "127.0.0.1:9500"))
    .await;
    assert_eq!(listen(&out), "127.0.0.1:9999");
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l == r#"listen = "127.0.0.1:9999""#),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn the_config_file_can_come_from_herald_config() {
    let file = TempFile::with("[server]\nmax_connections = 3\n");
    let out = run(herald().arg("check-config").env("HERALD_CONFIG", &file.0)).await;
    let config = toml_of(&out);
    assert_eq!(config["server"]["max_connections"].as_integer(), Some(3));
}
