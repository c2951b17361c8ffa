//! `GET /metrics` against a real node: the exposition passes `promtool check metrics`, a real
//! Prometheus scrapes it and answers with the values the test produced, and each counter the
//! test can provoke moves when provoked (the slow-consumer eviction in `slow.rs`). Needs Debian's `prometheus` package (`promtool`,
//! `prometheus`); without it those parts are skipped, unless `HERALD_TEST_REQUIRE_BACKENDS=1`.

mod common;

use common::{require_backends, within, Sse, TestServer, Ws, WAIT};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

const CONFIG: &str = r#"
[ws]
ping_interval = "200ms"
idle_timeout = "600ms"

[channels.namespaces.closed]
subscribe = "none"
"#;

fn have(bin: &str) -> bool {
    if std::path::Path::new(bin).exists() {
        return true;
    }
    assert!(
        !require_backends(),
        "{bin} is required (HERALD_TEST_REQUIRE_BACKENDS=1): apt-get install -y prometheus"
    );
    eprintln!("skipped: {bin} is missing (apt-get install -y prometheus)");
    false
}

async fn scrape(server: &TestServer) -> String {
    let resp = within(
        WAIT,
        server.http.get(format!("{}/metrics", server.url)).send(),
    )
    .await
    .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    resp.text().await.unwrap()
}

/// The value of one sample (`name{labels}` exactly as exposed), or None when absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_exposition_passes_promtool_and_every_family_is_there_from_the_start() {
    let server = TestServer::start(CONFIG).await;
    let text = scrape(&server).await;
    for family in [
        "herald_build_info",
        "herald_connections",
        "herald_connections_accepted_total",
        "herald_connections_closed_total",
        "herald_heartbeat_timeouts_total",
        "herald_channels",
        "herald_subscriptions",
        "herald_refused_total",
        "herald_publications_total",
        "herald_publications_by_event_total",
        "herald_deliveries_total",
        "herald_delivered_total",
        "herald_written_bytes_total",
        "herald_delivery_latency_seconds",
        "herald_slow_consumer_evictions_total",
        "herald_write_timeouts_total",
        "herald_resumes_total",
        "herald_resets_total",
        "herald_engine_ready",
        "herald_engine_state",
        "herald_engine_reconnects_total",
        "herald_http_requests_total",
        "herald_http_request_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is exported from start-up"
        );
    }
    assert_eq!(
        sample(&text, r#"herald_connections{transport="sse"}"#),
        Some(0.0)
    );
    // Some traffic, so labelled families have samples too.
    server.publish("news", Some("created"), json!(1)).await;
    let mut sse = Sse::connect(&server, &["news"], None).await;
    server.publish("news", Some("created"), json!(2)).await;
    sse.next_json().await;
    let text = scrape(&server).await;
    if !have(PROMTOOL) {
        return;
    }
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn each_counter_moves_when_provoked() {
    let server = TestServer::start(CONFIG).await;
    let before = scrape(&server).await;
    let value = |text: &str, series: &str| sample(text, series).unwrap_or(0.0);

    // A refusal: a namespace nobody may subscribe to.
    let (status, _) = server.get("/sse?channel=closed:x").await;
    assert_eq!(status, 403);
    // A resume that cannot be recovered: an epoch that never existed.
    server.publish("feed", None, json!(1)).await;
    let resp = server
        .http
        .get(format!("{}/sse?channel=feed", server.url))
        .header("last-event-id", "zz-1")
        .send()
        .await
        .unwrap();
    let mut sse = Sse::from_response(resp);
    let (event, _) = sse.next_json().await;
    assert_eq!(event, "herald.reset");
    drop(sse);
    // A heartbeat timeout: a WebSocket peer that never answers a ping.
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    raw.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut sink = Vec::new();
    // The server closes it after ws.idle_timeout; reading to the end takes that long.
    let _ = within(WAIT, raw.read_to_end(&mut sink)).await;
    // A publication from a WebSocket client.
    let mut ws = Ws::connect(&server).await;
    let r = ws
        .request(json!({"op": "subscribe", "channel": "feed"}))
        .await;
    assert!(r.get("result").is_some(), "{r}");
    server.publish("feed", Some("tick"), json!(2)).await;
    ws.next_push().await;

    let expected = [
        (r#"herald_refused_total{cause="permission"}"#, 1.0),
        (r#"herald_resumes_total{result="reset"}"#, 1.0),
        (r#"herald_resets_total{reason="epoch_changed"}"#, 1.0),
        (
            r#"herald_connections_closed_total{transport="ws",code="4002"}"#,
            1.0,
        ),
        ("herald_heartbeat_timeouts_total", 1.0),
        (r#"herald_connections_accepted_total{transport="sse"}"#, 1.0),
        (r#"herald_connections_accepted_total{transport="ws"}"#, 2.0),
        (r#"herald_publications_total{source="http"}"#, 2.0),
        (r#"herald_publications_by_event_total{event="tick"}"#, 1.0),
        (r#"herald_delivered_total{transport="ws"}"#, 1.0),
        (
            r#"herald_http_requests_total{route="/api/publish",status="200"}"#,
            2.0,
        ),
    ];
    let moved = |after: &str, series: &str| value(after, series) - value(&before, series);
    // Some counters move just after the effect the test saw (a connection counted as closed
    // when its task ends, a delivery once its write returns): wait for all of them.
    let after = server
        .wait_metrics(|t| expected.iter().all(|(series, by)| moved(t, series) >= *by))
        .await;
    for (series, by) in expected {
        assert!(
            moved(&after, series) >= by,
            "{series} moved by {} (expected {by})\n{after}",
            moved(&after, series)
        );
    }
    assert!(value(&after, r#"herald_written_bytes_total{transport="ws"}"#) > 0.0);
}

/// One instant query to the Prometheus on `port`: its whole JSON answer.
async fn prom_query(http: &reqwest::Client, port: u16, query: &str) -> Option<Value> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let resp = http.get(url).query(&[("query", query)]).send().await.ok()?;
    resp.json().await.ok()
}

/// A real Prometheus scraping a node: the values the test produced come back through its
/// query API.
#[tokio::test]
async fn a_real_prometheus_scrapes_the_values_the_test_produced() {
    if !have(PROMETHEUS) {
        return;
    }
    let server = TestServer::start("").await;
    let dir = std::env::temp_dir().join(format!("herald-prom-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: ['{}']\n",
            server.addr()
        ),
    )
    .unwrap();
    let prom = Command::new(PROMETHEUS)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prometheus");
    struct Stop(std::process::Child, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _stop = Stop(prom, dir);

    // 3 SSE and 2 WebSocket connections, and 10 publications each of them receives.
    let mut sses = Vec::new();
    for _ in 0..3 {
        sses.push(Sse::connect(&server, &["room"], None).await);
    }
    let mut wss = Vec::new();
    for _ in 0..2 {
        let mut ws = Ws::connect(&server).await;
        ws.request(json!({"op": "subscribe", "channel": "room"}))
            .await;
        wss.push(ws);
    }
    for i in 0..10 {
        server.publish("room", None, json!(i)).await;
    }
    for sse in &mut sses {
        for _ in 0..10 {
            sse.next_json().await;
        }
    }
    for ws in &mut wss {
        for _ in 0..10 {
            ws.next_push().await;
        }
    }

    let http = reqwest::Client::new();
    let query = |q: &'static str| {
        let http = http.clone();
        async move {
            let body = prom_query(&http, port, q).await?;
            body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let wanted: [(&'static str, f64); 5] = [
        (r#"herald_connections{transport="sse"}"#, 3.0),
        (r#"herald_connections{transport="ws"}"#, 2.0),
        (r#"herald_delivered_total{transport="sse"}"#, 30.0),
        (r#"herald_delivered_total{transport="ws"}"#, 20.0),
        (r#"herald_publications_total{source="http"}"#, 10.0),
    ];
    loop {
        let mut got = Vec::new();
        for (q, _) in wanted {
            got.push(query(q).await);
        }
        let latency = query("herald_delivery_latency_seconds_count").await;
        if wanted.iter().zip(&got).all(|((_, w), g)| *g == Some(*w)) && latency.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never saw the values: {got:?}, latency samples {latency:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Every query of the Grafana dashboard is valid PromQL to this Prometheus.
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/herald.json")).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$instance", ".*");
            let body = prom_query(&http, port, &expr)
                .await
                .expect("a query answer");
            assert_eq!(
                body["status"], "success",
                "{}: {expr}: {body}",
                panel["title"]
            );
        }
    }
}

/// The Grafana dashboard (`deploy/grafana/herald.json`) queries only metrics Herald exports,
/// and has a panel for every family it exports.
#[tokio::test]
async fn the_grafana_dashboard_uses_exported_metrics_and_shows_every_one() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/herald.json")).unwrap();
    let server = TestServer::start(CONFIG).await;
    let text = scrape(&server).await;
    let families: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let mut used = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("herald_") || word.starts_with("process_")) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s).filter(|base| families.contains(*base)))
                    .unwrap_or(word);
                assert!(
                    families.contains(family),
                    "panel {} queries {word}, which Herald does not export",
                    panel["title"]
                );
                used.insert(family.to_owned());
            }
        }
    }
    let unshown: Vec<&String> = families.difference(&used).collect();
    assert!(unshown.is_empty(), "no panel shows {unshown:?}");
}
