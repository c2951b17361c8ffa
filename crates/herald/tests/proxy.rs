//! The app in the loop: a namespace's publish and subscribe proxies, against a small real HTTP
//! backend that checks Herald's signature and allows, rewrites, refuses or never answers.

mod common;

use common::{within, Sse, TestServer, Ws, WAIT};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "proxy-test-secret-0123456789abcdefghij";

/// What the backend saw.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    bad_signatures: AtomicUsize,
}

/// The app's backend: one request per connection, answered by what it asks.
async fn backend() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer(conn, s.clone()));
        }
    });
    (url, seen)
}

async fn answer(mut conn: TcpStream, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = conn.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::trim))
            .map(str::to_owned)
    };
    let length: usize = header("content-length").unwrap().parse().unwrap();
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    seen.calls.fetch_add(1, Relaxed);
    let timestamp: u64 = header("x-herald-timestamp").unwrap().parse().unwrap();
    let expected = herald_server::signature(SECRET.as_bytes(), timestamp, body);
    if header("x-herald-signature").as_deref() != Some(expected.as_str()) {
        seen.bad_signatures.fetch_add(1, Relaxed);
    }
    let call: Value = serde_json::from_slice(body).unwrap();
    if call["channel"] == "chat:down" {
        let _ = conn
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    let reply = match (
        call["op"].as_str().unwrap(),
        call["channel"].as_str().unwrap(),
    ) {
        ("subscribe", "chat:private") => json!({"result": "refuse", "reason": "members only"}),
        ("subscribe", _) => json!({"result": "allow"}),
        _ => match call["data"]["text"].as_str().unwrap_or("") {
            // Never answers: Herald's timeout must refuse it.
            "hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "rewrite me" => {
                json!({"result": "allow", "data": {"text": "rewritten", "by": call["user"]}})
            }
            t if t.contains("spam") => json!({"result": "refuse", "reason": "no spam here"}),
            _ => json!({"result": "allow"}),
        },
    };
    let reply = reply.to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
}

#[tokio::test]
async fn the_app_allows_rewrites_and_refuses_and_a_hanging_app_delays_nothing_else() {
    let (url, seen) = backend().await;
    let server = TestServer::start(&format!(
        r#"
[proxy]
secret = "{SECRET}"
timeout = "1500ms"

[channels.namespaces.chat]
publish = "public"
publish_proxy = "{url}/publish"
subscribe_proxy = "{url}/subscribe"
"#
    ))
    .await;
    let mut sse = Sse::connect(&server, &["chat:room"], None).await;
    let mut ws = Ws::connect(&server).await;
    let r = ws
        .request(json!({"op": "subscribe", "channel": "chat:room"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let publish =
        |text: &str| json!({"op": "publish", "channel": "chat:room", "data": {"text": text}});

    // Allowed as sent, allowed with the app's data, refused with the app's reason.
    let r = ws.request(publish("hello")).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = ws.request(publish("rewrite me")).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = ws.request(publish("buy spam")).await;
    assert_eq!(r["error"]["code"], "refused", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no spam here"),
        "{r}"
    );
    assert_eq!(sse.next_json().await.1["data"], json!({"text": "hello"}));
    assert_eq!(
        sse.next_json().await.1["data"],
        json!({"text": "rewritten", "by": null})
    );

    // A publish the app never answers: the connection keeps receiving and answering meanwhile
    // (both come before the publish's own reply, which waits out the proxy's timeout).
    ws.send_text(
        &json!({"id": 900, "op": "publish", "channel": "chat:room", "data": {"text": "hang"}})
            .to_string(),
    )
    .await;
    server
        .publish("chat:room", None, json!({"text": "from the api"}))
        .await;
    let (mut delivered, mut answered) = (false, false);
    let mut hung = None;
    while hung.is_none() {
        let v = ws.next_json().await;
        if v["push"] == "publication" && v["data"]["text"] == "rewritten" {
            continue;
        }
        if v["push"] == "publication" {
            assert_eq!(v["data"]["text"], "from the api", "{v}");
            delivered = true;
            ws.send_text(r#"{"id":901,"op":"ping"}"#).await;
        } else if v["id"] == 901 {
            answered = true;
        } else if v["id"] == 900 {
            hung = Some(v);
        }
    }
    assert!(
        delivered && answered,
        "delivery and ping came after the hung publish's reply"
    );
    let hung = hung.unwrap();
    assert_eq!(hung["error"]["code"], "unavailable", "{hung}");
    assert!(
        hung["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{hung}"
    );
    assert_eq!(sse.next_json().await.1["data"]["text"], "from the api");

    // The subscribe proxy decides room access, over both transports.
    let (status, body) = server.get("/sse?channel=chat:private").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("refused")),
        "{body}"
    );
    let r = ws
        .request(json!({"op": "subscribe", "channel": "chat:private"}))
        .await;
    assert_eq!(r["error"]["code"], "refused", "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("members only"));

    // A backend that fails: SSE is told to try later (a browser retries that), not refused.
    let mut down = Sse::connect(&server, &["chat:down"], None).await;
    let ended = down.until_end().await;
    let last = ended.last().expect("a disconnect event");
    assert_eq!(last.event, "herald.disconnect");
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(
        (v["code"].clone(), v["reconnect"].clone()),
        (json!(4005), json!(true))
    );

    let refused = within(WAIT, server.stats()).await["refused"].clone();
    assert_eq!(refused["proxy_refused"], 3, "{refused}");
    assert_eq!(refused["proxy_failed"], 2, "{refused}");
    assert_eq!(seen.bad_signatures.load(Relaxed), 0);
    assert!(seen.calls.load(Relaxed) >= 8);
}

#[tokio::test]
async fn a_proxy_without_a_secret_is_refused_at_start_up() {
    let config = common::TempFile::with(
        "[channels.namespaces.chat]\npublish_proxy = \"http://127.0.0.1:9/p\"\nsubscribe_proxy = \"ftp://x\"\n",
    );
    let out = tokio::process::Command::new(common::herald_bin())
        .args(["check-config", "--config"])
        .arg(&config.0)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("proxy.secret is required"), "{text}");
    assert!(
        text.contains("subscribe_proxy must be an http:// URL"),
        "{text}"
    );
}
