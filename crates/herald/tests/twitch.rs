//! The Twitch connector against a fake Twitch written from the spec: what SSE widgets of an
//! OBS scene receive (each event once, in order; current stats to a late widget) through
//! duplicate message ids, a `session_reconnect` in the middle of a burst, a revocation, a
//! silent socket, a 401 from Helix and a restart.

mod common;
#[path = "common/twitch.rs"]
mod fake;

use common::{Sse, TempFile, TestServer, WAIT};
use fake::FakeTwitch;
use serde_json::{json, Value};
use std::time::Duration;

const CHANNEL: &str = "twitch:kai";

fn config(fake: &FakeTwitch, token_file: &std::path::Path, poll: &str) -> String {
    format!(
        r#"
[channels.namespaces.twitch]
latest_state = "per_event"
history_size = 1000
history_ttl = "10m"

[[connectors.twitch]]
name = "kai"
client_id = "cid"
client_secret = "csecret"
broadcaster_id = "1337"
broadcaster_login = "kai"
access_token = "access-0"
refresh_token = "refresh-0"
token_file = "{}"
poll_interval = "{poll}"
keepalive_timeout = "10s"
eventsub_url = "{}"
helix_url = "{}/helix"
oauth_url = "{}/oauth2"
"#,
        token_file.display(),
        fake.ws,
        fake.http,
        fake.http
    )
}

/// An overlay page: its SSE connection, and the last stats it showed.
struct Widget {
    sse: Sse,
    stats: Value,
}

impl Widget {
    async fn open(server: &TestServer) -> Self {
        Self {
            sse: Sse::connect(server, &[CHANNEL], None).await,
            stats: Value::Null,
        }
    }

    /// The next alert (a publication other than `stats`), noting stats on the way.
    async fn next_alert(&mut self) -> (String, Value) {
        loop {
            let (event, v) = common::within(WAIT, self.sse.next_json()).await;
            if event == "stats" {
                self.stats = v["data"].clone();
            } else if !event.starts_with("herald.") {
                return (event, v["data"].clone());
            }
        }
    }

    /// Waits until the stats shown are `want`.
    async fn stats_become(&mut self, want: Value) {
        common::within(WAIT, async {
            while self.stats != want {
                let (event, v) = self.sse.next_json().await;
                if event == "stats" {
                    self.stats = v["data"].clone();
                }
            }
        })
        .await;
    }
}

fn follow(user: &str) -> Value {
    json!({"user_id": "9", "user_login": user, "user_name": user,
        "broadcaster_user_id": "1337", "broadcaster_user_login": "kai",
        "broadcaster_user_name": "Kai", "followed_at": "2026-12-05T10:00:00Z"})
}

fn token_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herald-twitch-{:016x}.json", fastrand::u64(..)))
}

async fn start(fake: &FakeTwitch, tokens: &std::path::Path, poll: &str) -> TestServer {
    let server = TestServer::start(&config(fake, tokens, poll)).await;
    server
        .wait_stats("the Twitch connector connected", |s| {
            s["connectors"][0]["state"] == "connected"
        })
        .await;
    server
}

#[tokio::test]
async fn widgets_get_each_event_once_in_order_and_a_late_widget_the_current_stats() {
    let fake = FakeTwitch::start("access-0", "refresh-0").await;
    fake.set_stats(true, 42, 100, 5);
    // The token has less than a minute left: it is refreshed before it expires, with no 401.
    fake.expires_in(30);
    let tokens = token_file();
    // One poll at start; every later change of the stats comes from an event.
    let server = start(&fake, &tokens, "60s").await;
    fake.created(7).await;
    let mut widget = Widget::open(&server).await;
    widget
        .stats_become(json!({"live": true, "viewers": 42, "followers": 100, "subs": 5}))
        .await;

    fake.notify("channel.follow", "m1", follow("ann"));
    fake.notify(
        "channel.subscribe",
        "m2",
        json!({"user_login": "bob", "tier": "1000", "is_gift": false}),
    );
    // Twitch delivers at least once: the same message id again.
    fake.notify("channel.follow", "m1", follow("ann"));
    fake.notify(
        "channel.cheer",
        "m3",
        json!({"is_anonymous": false, "user_login": "cy", "bits": 100, "message": "gg"}),
    );
    fake.revoke("channel.cheer");
    assert_eq!(
        widget.next_alert().await,
        ("channel.follow".to_owned(), follow("ann"))
    );
    assert_eq!(widget.next_alert().await.0, "channel.subscribe");
    let (event, data) = widget.next_alert().await;
    assert_eq!(
        (event.as_str(), &data["bits"]),
        ("channel.cheer", &json!(100))
    );
    // The follow and the subscription count before the next poll.
    widget
        .stats_become(json!({"live": true, "viewers": 42, "followers": 101, "subs": 6}))
        .await;
    // A widget opened now gets the current stats at once.
    let mut late = Widget::open(&server).await;
    late.stats_become(json!({"live": true, "viewers": 42, "followers": 101, "subs": 6}))
        .await;
    fake.notify(
        "stream.offline",
        "m4",
        json!({"broadcaster_user_login": "kai"}),
    );
    assert_eq!(widget.next_alert().await.0, "stream.offline");
    widget
        .stats_become(json!({"live": false, "viewers": 0, "followers": 101, "subs": 6}))
        .await;
    let stats = server
        .wait_stats("the revocation counted", |s| {
            s["connectors"][0]["events"]["revocations"] == 1
        })
        .await;
    let c = &stats["connectors"][0];
    assert_eq!(c["events"]["published"], 4, "{c}");
    assert_eq!(c["events"]["duplicate"], 1, "{c}");
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .contains("channel.cheer revoked"),
        "{c}"
    );
    server
        .wait_metrics(|m| {
            m.contains(r#"herald_connector_events_total{kind="twitch",name="kai",outcome="revocations"} 1"#)
                && m.contains(r#"herald_publications_total{source="twitch"}"#)
        })
        .await;
    assert_eq!(fake.refreshes(), (1, 0), "(refreshes, 401s)");
    let _ = std::fs::remove_file(&tokens);
}

#[tokio::test]
async fn a_session_reconnect_mid_burst_loses_and_doubles_nothing() {
    let fake = FakeTwitch::start("access-0", "refresh-0").await;
    let tokens = token_file();
    let server = start(&fake, &tokens, "1s").await;
    fake.created(7).await;
    let mut widget = Widget::open(&server).await;
    let follow_n = |n: u32| follow(&format!("user{n}"));
    for n in 1..=5 {
        fake.notify("channel.follow", &format!("b{n}"), follow_n(n));
    }
    let old = fake.ask_reconnect();
    // The old socket still delivers until the new one is welcomed.
    for n in 6..=8 {
        fake.notify_on(old, "channel.follow", &format!("b{n}"), follow_n(n));
    }
    fake.socket_count(old + 2).await;
    let new = old + 1;
    // Both sockets of a hand-off may deliver the same message.
    fake.notify_on(new, "channel.follow", "b8", follow_n(8));
    for n in 9..=12 {
        fake.notify_on(new, "channel.follow", &format!("b{n}"), follow_n(n));
    }
    for n in 1..=12 {
        let (event, data) = widget.next_alert().await;
        assert_eq!(event, "channel.follow");
        assert_eq!(
            data["user_login"],
            format!("user{n}"),
            "out of order or lost"
        );
    }
    // Subscriptions carried over: none created again; the old socket was closed by Herald.
    common::within(WAIT, async {
        while !fake.closed(old) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(fake.creates(), 7);
    let stats = server.stats().await;
    assert_eq!(stats["connectors"][0]["events"]["published"], 12);
    assert_eq!(stats["connectors"][0]["events"]["duplicate"], 1);
    assert_eq!(stats["connectors"][0]["reconnects"], 1);
    // Nothing more arrives: no double.
    fake.notify_on(new, "stream.online", "b13", json!({"type": "live"}));
    assert_eq!(widget.next_alert().await.0, "stream.online");
    let _ = std::fs::remove_file(&tokens);
}

#[tokio::test]
async fn a_silent_socket_a_401_and_a_restart_recover_without_a_new_login() {
    let fake = FakeTwitch::start("access-0", "refresh-0").await;
    let tokens = token_file();
    let _cleanup = TempFile(tokens.clone());
    let mut server = start(&fake, &tokens, "1s").await;
    fake.created(7).await;

    // A 401 on Helix: the token is refreshed, the rotated pair written to the token file.
    fake.expire_access_token();
    common::within(WAIT, async {
        loop {
            let saved = std::fs::read_to_string(&tokens).unwrap_or_default();
            let saved: Value = serde_json::from_str(&saved).unwrap_or_default();
            if fake.refreshes().0 == 1 && saved["refresh_token"] == fake.refresh_token() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(fake.refreshes().1 >= 1, "Helix never answered 401");

    // A socket that goes silent is taken for dead after the keepalive timeout: Herald
    // connects again and subscribes anew on the new session.
    let sockets = fake.sockets();
    fake.silence();
    common::within(Duration::from_secs(30), fake.socket_count(sockets + 1)).await;
    fake.created(14).await;
    let mut widget = Widget::open(&server).await;
    fake.notify(
        "channel.raid",
        "r1",
        json!({"from_broadcaster_user_login": "zed", "viewers": 7}),
    );
    assert_eq!(widget.next_alert().await.1["viewers"], 7);
    let stats = server.stats().await;
    assert!(stats["connectors"][0]["reconnects"].as_u64().unwrap() >= 1);

    // A restart: the configured refresh token was rotated away, and the access token stops
    // working too; the token file carries the connector on.
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    fake.expire_access_token();
    server = start(&fake, &tokens, "1s").await;
    fake.created(21).await;
    assert_eq!(fake.refreshes().0, 2);
    let mut widget = Widget::open(&server).await;
    fake.notify("channel.cheer", "r2", json!({"bits": 5}));
    assert_eq!(widget.next_alert().await.1["bits"], 5);
}
