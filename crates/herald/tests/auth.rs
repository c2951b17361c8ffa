//! Who may call the HTTP API, and when the node refuses to run open.

mod common;

use common::{herald_bin, Sse, TempFile, TestServer};
use serde_json::{json, Value};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

const KEYS: &str = r#"
[channels.namespaces.news]
subscribe = "public"

[[auth.api_keys]]
name = "old"
key = "old-key-0123456789abcdef"

[[auth.api_keys]]
name = "new"
key = "new-key-0123456789abcdef"
"#;

async fn publish_with(server: &TestServer, auth: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = server
        .http
        .post(format!("{}/api/publish", server.url))
        .json(&json!({"channel": "news:today", "data": 1}));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("publish");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, resp.json().await.expect("JSON body"), challenge)
}

#[tokio::test]
async fn with_keys_the_api_needs_one_of_them_and_subscribers_are_unaffected() {
    let server = TestServer::start(KEYS).await;
    let mut sse = Sse::connect(&server, &["news:today"], None).await;
    sse.wait_raw(b"id: ").await;
    // Once secrets are configured, a namespace not marked public is closed to anonymous clients.
    let closed = server
        .http
        .get(common::sse_url(&server, &["orders"]))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 401);

    let (status, body, challenge) = publish_with(&server, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"herald\""));
    let (status, body, _) = publish_with(&server, Some("Bearer not-a-configured-key")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );

    // Both keys are valid at once (rotation).
    for key in ["old-key-0123456789abcdef", "new-key-0123456789abcdef"] {
        let (status, body, _) = publish_with(&server, Some(&format!("Bearer {key}"))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(sse.next_json().await.1["data"], 1);
    }
    let stats = server
        .http
        .get(format!("{}/api/stats", server.url))
        .bearer_auth("new-key-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    assert_eq!(server.get("/api/stats").await.0, 401);
    assert_eq!(server.get("/health/ready").await.0, 200);

    // The CLI sends the key it is given.
    let out = tokio::process::Command::new(herald_bin())
        .args(["publish", "news:today", "2", "--server", &server.url])
        .env("HERALD_API_KEY", "old-key-0123456789abcdef")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sse.next_json().await.1["data"], 2);
    let out = tokio::process::Command::new(herald_bin())
        .args(["publish", "news:today", "3", "--server", &server.url])
        .env_remove("HERALD_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
}

/// Runs `herald check-config` on `config`.
async fn check_config(config: &str) -> std::process::Output {
    let file = TempFile::with(config);
    tokio::process::Command::new(herald_bin())
        .args(["check-config", "--config"])
        .arg(&file.0)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_are_redacted_and_bad_keys_are_reported() {
    let out = check_config(KEYS).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("0123456789abcdef"), "{text}");
    assert!(text.contains("name = \"new\""), "{text}");

    let out = check_config("[[auth.api_keys]]\nname = \"a\"\nkey = \"short\"\n[[auth.api_keys]]\nname = \"a\"\nkey = \"another-long-enough-key\"\n").await;
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("shorter than 16 characters"), "{text}");
    assert!(text.contains("used twice"), "{text}");
}

#[tokio::test]
async fn a_public_address_without_authentication_is_refused_unless_allowed() {
    let out = tokio::process::Command::new(herald_bin())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--allow-insecure"), "{text}");

    // Allowed on purpose: it starts, and says loudly that it is open.
    let mut child = tokio::process::Command::new(herald_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--allow-insecure"])
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = common::within(common::WAIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("Listening on http://0.0.0.0:"), "{line}");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = common::within(common::WAIT, stderr.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(warning.contains("INSECURE"), "{warning}");
    let _ = child.start_kill();
}

/// What `herald serve` with `config` logs at start-up (up to the moment it listens), at the
/// warning level.
async fn startup_log(config: &str) -> String {
    use tokio::io::AsyncReadExt;
    let file = TempFile::with(config);
    let mut child = tokio::process::Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file.0)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = common::within(common::WAIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("Listening on "), "{line}");
    // Start-up warnings are written before that line; once the process is gone, its stderr
    // ends, so reading to the end neither blocks nor misses any.
    child.start_kill().unwrap();
    let mut log = String::new();
    let mut stderr = child.stderr.take().unwrap();
    common::within(common::WAIT, stderr.read_to_string(&mut log))
        .await
        .unwrap();
    log
}

#[tokio::test]
async fn tokens_without_api_keys_are_told_at_start_up_that_the_api_answers_loopback_only() {
    const WARNING: &str = "No API keys (auth.api_keys): the HTTP API answers loopback callers only";
    let tokens = "[auth.token]\nhmac_secrets = [\"startup-warning-secret-0123456789abcdef\"]\n";
    let log = startup_log(tokens).await;
    assert!(log.contains(WARNING), "{log}");
    assert!(log.contains("reverse proxy"), "{log}");
    // Telegram login alone (it needs the HMAC secret to sign) warns the same way.
    let telegram = format!("{tokens}[auth.telegram]\nbot_token = \"123456:startup-warning-bot\"\n");
    assert!(startup_log(&telegram).await.contains(WARNING));
    // With keys there is nothing to warn about.
    let log = startup_log(&format!("{tokens}{KEYS}")).await;
    assert!(!log.contains(WARNING), "{log}");
}
