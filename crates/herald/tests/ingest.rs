//! Signed webhooks (`POST /ingest/SOURCE`) as a sender delivers them: a signed delivery is
//! published where its templates say, a retried one publishes once, and every kind of bad
//! delivery gets its status, counted.

mod common;

use common::{Sse, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "a shared secret of the donation platform";

const CONFIG: &str = r#"
[server]
max_body = "4KiB"

[[connectors.webhook]]
name = "donations"
secret = "a shared secret of the donation platform"
signature_header = "x-platform-signature"
signature_prefix = "sha256="
timestamp_header = "x-platform-timestamp"
tolerance = "5m"
channel = "donations:{streamer.login}"
event = "donation"
data = "donation"
id = "delivery_id"
"#;

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn sign(timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    server: &TestServer,
    source: &str,
    body: &str,
    ts: i64,
    sig: &str,
) -> (u16, Value) {
    let resp = server
        .http
        .post(format!("{}/ingest/{source}", server.url))
        .header("content-type", "application/json")
        .header("x-platform-timestamp", ts.to_string())
        .header("x-platform-signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .expect("delivery");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn signed_deliveries_publish_once_and_bad_ones_are_refused_and_counted() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["donations:kai"], None).await;
    let body = json!({
        "delivery_id": "d-1",
        "streamer": {"login": "kai"},
        "donation": {"amount": 5, "message": "hi"},
    })
    .to_string();
    let ts = now();
    let (status, first) = deliver(&server, "donations", &body, ts, &sign(ts, &body)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["channel"], "donations:kai");
    let (event, p) = sse.next_json().await;
    assert_eq!(event, "donation");
    assert_eq!(p["data"], json!({"amount": 5, "message": "hi"}));

    // The platform retries (a lost answer): nothing is published again.
    let ts2 = now();
    let (status, again) = deliver(&server, "donations", &body, ts2, &sign(ts2, &body)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["offset"], first["offset"]);

    // Refusals: each with its status, none published.
    let (status, v) = deliver(&server, "donations", &body, ts, "sha256=00ff").await;
    assert_eq!((status, code(&v)), (401, "unauthorized"), "{v}");
    let old = now() - 3600;
    let (status, v) = deliver(&server, "donations", &body, old, &sign(old, &body)).await;
    assert_eq!((status, code(&v)), (401, "unauthorized"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timestamp"),
        "{v}"
    );
    let (status, v) = deliver(&server, "nobody", &body, ts, &sign(ts, &body)).await;
    assert_eq!((status, code(&v)), (404, "not_found"), "{v}");
    let big =
        json!({"delivery_id": "d-2", "streamer": {"login": "kai"}, "donation": "x".repeat(5000)})
            .to_string();
    let (status, _) = deliver(&server, "donations", &big, ts, &sign(ts, &big)).await;
    assert_eq!(status, 413);
    let no_login = json!({"delivery_id": "d-3", "donation": 1}).to_string();
    let (status, v) = deliver(&server, "donations", &no_login, ts, &sign(ts, &no_login)).await;
    assert_eq!((status, code(&v)), (422, "bad_request"), "{v}");

    // The next good delivery is the next publication: nothing slipped in between.
    let body3 =
        json!({"delivery_id": "d-4", "streamer": {"login": "kai"}, "donation": {"amount": 7}})
            .to_string();
    let (status, _) = deliver(&server, "donations", &body3, ts, &sign(ts, &body3)).await;
    assert_eq!(status, 200);
    let (_, p) = sse.next_json().await;
    assert_eq!(p["data"]["amount"], 7);
    assert_eq!(p["offset"], 2);

    let stats = server.stats().await;
    let counts = &stats["ingest"]["sources"]["donations"];
    assert_eq!(counts["published"], 2, "{stats}");
    assert_eq!(counts["duplicate"], 1);
    assert_eq!(counts["bad_signature"], 1);
    assert_eq!(counts["stale"], 1);
    assert_eq!(counts["bad_body"], 1);
    assert_eq!(counts["too_large"], 1);
    assert_eq!(stats["ingest"]["unknown_source"], 1);
    assert_eq!(stats["publications_by_source"]["webhook"], 2);
    let metrics = server
        .wait_metrics(|m| {
            m.contains(
                r#"herald_ingest_deliveries_total{source="donations",outcome="duplicate"} 1"#,
            )
        })
        .await;
    assert!(
        metrics.contains(r#"herald_ingest_deliveries_total{source="",outcome="unknown_source"} 1"#)
    );
}

/// `herald check-config` with a bad source of every kind names every problem in one run and
/// exits 2, before anything connects anywhere.
#[tokio::test]
async fn check_config_reports_every_bad_source_at_once() {
    let file = common::TempFile::with(
        r#"
[[connectors.webhook]]
name = "donations"
secret = "short"
signature_header = "x-signature"
channel = "donations:{streamer"

[[connectors.postgres]]
name = "app"
url = "mysql://app@127.0.0.1/app"

[[connectors.redis]]
name = "workers"
url = "http://127.0.0.1:6379"

[[connectors.twitch]]
name = "tw"
client_id = ""
client_secret = "s"
broadcaster_id = "streamer"
broadcaster_login = "streamer"
access_token = "a"
refresh_token = "r"
channel = "twitch:streamer"
events = ["channel.follow", "channel.nonsense"]
"#,
    );
    let out = common::within(
        common::WAIT,
        common::herald_command()
            .arg("check-config")
            .arg("--config")
            .arg(&file.0)
            .output(),
    )
    .await
    .expect("run herald check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "no config printed on failure");
    for needle in [
        "connectors.webhook[0].secret must be at least 16 characters",
        "connectors.webhook[0].channel",
        "connectors.postgres[0].url is not a Postgres URL",
        "connectors.redis[0].url is not a Redis URL",
        "connectors.redis[0] needs patterns, a stream, or both",
        "connectors.twitch[0].client_id must not be empty",
        "connectors.twitch[0].broadcaster_id must be the numeric user id",
        "connectors.twitch[0].events: \"channel.nonsense\"",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}
