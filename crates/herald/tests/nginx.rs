//! Herald behind a real nginx (Debian's `nginx-light`) with exactly the location block README
//! shows (`deploy/nginx/herald.conf`): SSE streams flow while open, `Last-Event-ID` resumes
//! through the proxy, WebSocket upgrades pass, and per-address limits count the address nginx
//! forwards, while a forged `X-Forwarded-For` gains nothing.

mod common;

use common::{require_backends, within, Sse, TestServer, Ws, WAIT};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";
const BLOCK: &str = include_str!("../../../deploy/nginx/herald.conf");
const README: &str = include_str!("../../../README.md");

/// A running nginx in a directory of its own, stopped (by its PID) when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// nginx in front of `herald` (`host:port`) with README's block, connecting to Herald from
    /// 127.0.0.2 (so the test's own direct requests, from 127.0.0.1, are an untrusted peer), and
    /// `/api/` passed through with `X-Forwarded-For` for the key-less API check. None when nginx
    /// is missing (a failure under `HERALD_TEST_REQUIRE_BACKENDS=1`).
    async fn start(herald: &str) -> Option<Self> {
        if !std::path::Path::new(NGINX).is_file() {
            assert!(
                !require_backends(),
                "nginx is required (HERALD_TEST_REQUIRE_BACKENDS=1) but {NGINX} is missing"
            );
            eprintln!("skipped: {NGINX} not found (Debian package nginx-light)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("herald-nginx-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            r#"
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream herald {{ server {herald}; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_bind 127.0.0.2;
{BLOCK}
        location /api/ {{
            proxy_pass http://herald;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Self { child, port, dir };
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(nginx)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// An HTTP client whose connections come from `visitor` (a 127.0.0.0/8 address), as if from
/// another machine: nginx appends it to `X-Forwarded-For`.
fn visitor(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse().unwrap()))
        .build()
        .unwrap()
}

/// An SSE request through nginx as a browser page sends it, from `visitor`, with a claimed
/// `X-Forwarded-For` (which nginx keeps on the left) and an optional `Last-Event-ID`.
async fn events(
    nginx: &Nginx,
    visitor_ip: &str,
    claimed: Option<&str>,
    last_id: Option<&str>,
) -> reqwest::Response {
    events_at(nginx, "/realtime/events", visitor_ip, claimed, last_id).await
}

/// The same request at `path` (`/realtime/events`, or the Herald client's `/realtime/sse`).
async fn events_at(
    nginx: &Nginx,
    path: &str,
    visitor_ip: &str,
    claimed: Option<&str>,
    last_id: Option<&str>,
) -> reqwest::Response {
    let mut req = visitor(visitor_ip)
        .get(nginx.url(&format!("{path}?channel=news")))
        .header("accept", "text/event-stream")
        .header("origin", nginx.origin());
    if let Some(c) = claimed {
        req = req.header("x-forwarded-for", c);
    }
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    within(WAIT, req.send()).await.unwrap()
}

async fn stream(
    nginx: &Nginx,
    visitor_ip: &str,
    claimed: Option<&str>,
    last_id: Option<&str>,
) -> Sse {
    let resp = events(nginx, visitor_ip, claimed, last_id).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let mut sse = Sse::from_response(resp);
    sse.wait_raw(b"herald.connected").await;
    sse
}

async fn status_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn readme_shows_exactly_the_block_this_test_runs() {
    let shown = README
        .split("<!-- deploy/nginx/herald.conf -->\n```nginx\n")
        .nth(1)
        .and_then(|rest| {
            rest.split("```\n<!-- end deploy/nginx/herald.conf -->")
                .next()
        })
        .expect("README.md shows deploy/nginx/herald.conf between its markers");
    assert_eq!(shown, BLOCK);
}

#[tokio::test]
async fn herald_behind_nginx_streams_resumes_upgrades_and_limits_forwarded_addresses() {
    let server = TestServer::start(
        "[server]\ntrusted_proxies = [\"127.0.0.2\"]\nmax_connections_per_ip = 1\n[channels.defaults]\nhistory_size = 10\n",
    )
    .await;
    let herald = server.url.trim_start_matches("http://").to_owned();
    let Some(nginx) = Nginx::start(&herald).await else {
        return;
    };

    // An SSE event arrives while the stream stays open (nginx does not hold it back).
    let mut sse = stream(&nginx, "127.0.0.11", None, None).await;
    server.publish("news", None, json!("one")).await;
    let event = sse.next().await.expect("an event while the stream is open");
    assert_eq!(
        serde_json::from_str::<Value>(&event.data).unwrap()["data"],
        "one"
    );
    let id = event.id.clone();
    drop(sse);
    // Resume through the proxy: exactly what was missed.
    server.publish("news", None, json!("two")).await;
    server.publish("news", None, json!("three")).await;
    // At the seed's path, and at the Herald client's own (`url: "/realtime"` reads
    // /realtime/sse), query and all.
    for (path, visitor_ip) in [
        ("/realtime/events", "127.0.0.12"),
        ("/realtime/sse", "127.0.0.14"),
    ] {
        let resp = events_at(&nginx, path, visitor_ip, None, Some(&id)).await;
        assert_eq!(resp.status(), 200, "{path}: {:?}", resp.text().await);
        let mut resumed = Sse::from_response(resp);
        for want in ["two", "three"] {
            let e = resumed.next().await.unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&e.data).unwrap()["data"],
                want,
                "{path}"
            );
        }
    }

    // WebSocket through the proxy, from a browser page on nginx's origin.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{}/realtime/ws", nginx.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", nginx.origin().parse().unwrap());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.13:0".parse().unwrap()).unwrap();
    let tcp = socket
        .connect(format!("127.0.0.1:{}", nginx.port).parse().unwrap())
        .await
        .unwrap();
    let (inner, _) = within(
        WAIT,
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp)),
    )
    .await
    .expect("WebSocket through nginx");
    let mut ws = Ws::from_stream(inner);
    let reply = ws
        .request(json!({"op": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(reply["result"]["channel"], "news", "{reply}");
    server.publish("news", None, json!("four")).await;
    assert_eq!(ws.next_push().await["data"], "four");

    // Per-address limits count the address nginx forwards: one connection per address here.
    let held = stream(&nginx, "127.0.0.20", None, None).await;
    let again = events(&nginx, "127.0.0.20", None, None).await;
    assert_eq!(status_of(again).await, (429, "rate_limited".to_owned()));
    // A different address claimed on the left of the header changes nothing.
    let claimed = events(&nginx, "127.0.0.20", Some("203.0.113.7"), None).await;
    assert_eq!(status_of(claimed).await, (429, "rate_limited".to_owned()));
    let other = stream(&nginx, "127.0.0.21", None, None).await;
    // A forged header straight to Herald, from a peer it does not trust, is ignored: this
    // caller is not counted as 127.0.0.20 (which is at its limit).
    let direct = within(
        WAIT,
        visitor("127.0.0.1")
            .get(format!("{}/sse?channel=news", server.url))
            .header("x-forwarded-for", "127.0.0.20")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(direct.status(), 200);
    drop(direct);
    // A forged 127.0.0.1 through nginx gains nothing: the visitor is counted by its own
    // address, not exempted as a caller on this machine ...
    let forged = stream(&nginx, "127.0.0.30", Some("127.0.0.1"), None).await;
    let forged_again = events(&nginx, "127.0.0.30", Some("127.0.0.1"), None).await;
    assert_eq!(
        status_of(forged_again).await,
        (429, "rate_limited".to_owned())
    );
    // ... and the key-less API, which answers callers on this machine, does not answer it.
    let api = within(
        WAIT,
        visitor("127.0.0.30")
            .post(nginx.url("/api/publish"))
            .header("x-forwarded-for", "127.0.0.1")
            .json(&json!({"channel": "news", "data": "forged"}))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(status_of(api).await, (403, "forbidden".to_owned()));
    drop((held, other, forged, ws));
}
