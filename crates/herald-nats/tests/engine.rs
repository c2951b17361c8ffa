//! The NATS engine against a real `nats-server -js`, one server per test, with two engines
//! ("nodes", each with its own hub) sharing it.
//!
//! Tests are skipped when `nats-server` is not on PATH, unless HERALD_TEST_REQUIRE_BACKENDS=1.

use async_nats::jetstream::{self, message::PublishMessage};
use herald_core::{
    outbox, ChannelName, ChannelsConfig, ConnId, EngineError, EngineParts, EventName, HistoryPage,
    HistoryQuery, Hub, LatestState, NamespaceOptions, NodeParts, Outbox, OutboxLimits, Outgoing,
    PresenceEvent, PresenceKind, Publication, PublisherLimits, ResetReason, Retention, Stats,
};
use herald_nats::{NatsEngine, NatsEngineConfig};
use herald_protocol::{Epoch, Member, StreamPosition};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A `nats-server -js` on its own port and store directory; killed and removed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    /// Starts one, or `None` (test skipped) when `nats-server` is not installed.
    fn start() -> Option<Self> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var("HERALD_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1") {
                panic!("nats-server not found and HERALD_TEST_REQUIRE_BACKENDS=1");
            }
            println!("skipped: nats-server not found");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "herald-nats-test-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.run();
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) on the same port and store, and waits until it accepts.
    fn run(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One Herald node: an engine with its own hub and background tasks.
struct Node {
    engine: EngineParts,
    hub: Arc<Hub>,
    token: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn config(url: String, lease: Duration) -> NatsEngineConfig {
    NatsEngineConfig {
        url: url.into(),
        presence_lease: lease,
        ..NatsEngineConfig::default()
    }
}

async fn node_with(server: &Server, channels: &ChannelsConfig, lease: Duration) -> Node {
    let hub = Arc::new(Hub::new(Arc::new(Stats::default())));
    let token = CancellationToken::new();
    let engine = NatsEngine::start(
        config(server.url(), lease),
        &node_parts(hub.clone(), channels),
        token.clone(),
        &TaskTracker::new(),
    )
    .await
    .unwrap();
    Node { engine, hub, token }
}

/// What a node hands its engine.
fn node_parts(hub: Arc<Hub>, channels: &ChannelsConfig) -> NodeParts {
    NodeParts {
        hub,
        channels: Arc::new(channels.clone()),
        stats: Arc::new(Stats::default()),
        publish_limits: PublisherLimits {
            max_data_bytes: 65536,
            idempotency_window: std::time::Duration::from_secs(600),
        },
    }
}

async fn node(server: &Server) -> Node {
    node_with(server, &ChannelsConfig::default(), Duration::from_secs(30)).await
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

const KEEP: Retention = Retention::history(100, Duration::from_secs(600));

async fn publish(
    node: &Node,
    channel: &ChannelName,
    n: u64,
) -> Result<Arc<Publication>, EngineError> {
    let data = RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap();
    node.engine
        .broker
        .publish(channel.clone(), EventName::message(), data, KEEP)
        .await
}

/// Subscribes a fresh outbox to `channel` on `node`, as a session would.
async fn subscribe(node: &Node, channel: &ChannelName) -> Outbox {
    let conn = ConnId::random();
    let (tx, rx) = outbox(
        conn,
        OutboxLimits {
            messages: 10_000,
            bytes: 64 << 20,
        },
    );
    node.hub.subscribe(channel, conn, tx);
    node.engine.broker.subscribe(channel).await.unwrap();
    rx
}

/// Receives until `n` items arrived, or panics at the deadline.
async fn receive(rx: &mut Outbox, n: usize) -> Vec<Outgoing> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        let mut buf = Vec::new();
        tokio::time::timeout_at(deadline, rx.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("received {} of {n} before the deadline", got.len()))
            .unwrap();
        got.extend(buf);
    }
    got
}

fn offsets(items: &[Outgoing]) -> Vec<u64> {
    items
        .iter()
        .map(|item| match item {
            Outgoing::Publication(p) => p.position.offset,
            Outgoing::Presence(_) => panic!("unexpected presence event"),
        })
        .collect()
}

/// Polls `check` until it holds, or panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `channel` on `node`: after `(epoch, offset)`, or the newest `limit` with `None`.
async fn read(
    node: &Node,
    channel: &ChannelName,
    since: Option<(&Epoch, u64)>,
    limit: usize,
) -> HistoryPage {
    let since = since.map(|(e, o)| StreamPosition::new(e.clone(), o));
    node.engine
        .history
        .read(channel, HistoryQuery { since, limit })
        .await
        .unwrap()
}

fn offsets_of(page: &HistoryPage) -> Vec<u64> {
    page.publications
        .iter()
        .map(|p| p.position.offset)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_on_one_node_receives_publications_from_another_in_order() {
    let Some(server) = Server::start() else {
        return;
    };
    let (a, b) = (node(&server).await, node(&server).await);
    let c = ch("chat:room-1");
    let mut rx = subscribe(&a, &c).await;
    let mut epochs = std::collections::HashSet::new();
    for n in 1..=3 {
        let p = publish(&b, &c, n).await.unwrap();
        assert_eq!(p.position.offset, n);
        epochs.insert(p.position.epoch.clone());
    }
    let got = receive(&mut rx, 3).await;
    assert_eq!(offsets(&got), vec![1, 2, 3]);
    for (n, item) in (1..).zip(&got) {
        let Outgoing::Publication(p) = item else {
            unreachable!()
        };
        assert_eq!(p.data.get(), format!("{{\"n\":{n}}}"));
        assert!(epochs.contains(&p.position.epoch));
    }
    assert_eq!(epochs.len(), 1);
    assert!(a.engine.broker.status().ready && a.engine.broker.status().kind == "nats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_on_two_nodes_get_every_offset_exactly_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let (a, b) = (Arc::new(node(&server).await), Arc::new(node(&server).await));
    let c = ch("busy");
    let mut rx = subscribe(&a, &c).await;
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            publish(&node, &c, i).await.unwrap().position.offset
        }));
    }
    let mut assigned = Vec::new();
    for t in tasks {
        assigned.push(t.await.unwrap());
    }
    assigned.sort_unstable();
    assert_eq!(assigned, (1..=400).collect::<Vec<_>>());
    let received: BTreeSet<u64> = offsets(&receive(&mut rx, 400).await).into_iter().collect();
    assert_eq!(received, (1..=400).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_reads_follow_the_memory_engine_semantics() {
    let Some(server) = Server::start() else {
        return;
    };
    let ns = |history_size, ttl_ms| NamespaceOptions {
        history_size,
        history_ttl: Duration::from_millis(ttl_ms),
        ..NamespaceOptions::default()
    };
    let mut channels = ChannelsConfig::default();
    channels.namespaces.insert("small".into(), ns(3, 600_000));
    channels.namespaces.insert("none".into(), ns(0, 600_000));
    channels.namespaces.insert("big".into(), ns(500, 600_000));
    channels.namespaces.insert("brief".into(), ns(10, 1000));
    let lease = Duration::from_secs(30);
    let (a, b) = (
        node_with(&server, &channels, lease).await,
        node_with(&server, &channels, lease).await,
    );
    let x = Epoch::parse("x").unwrap();

    // Reading a channel nobody published to creates its epoch, which the first publish keeps.
    let fresh = ch("fresh");
    let page = read(&a, &fresh, Some((&x, 0)), 10).await;
    assert_eq!(page.reset, Some(ResetReason::EpochChanged));
    let first = publish(&b, &fresh, 1).await.unwrap();
    assert_eq!(first.position, StreamPosition::new(page.top.epoch, 1));

    // Since a position: exactly the publications after it.
    let c = ch("c");
    for n in 1..=10 {
        publish(&b, &c, n).await.unwrap();
    }
    let e = read(&a, &c, None, 0).await.top.epoch;
    let page = read(&a, &c, Some((&e, 4)), 100).await;
    assert_eq!((offsets_of(&page), page.reset), ((5..=10).collect(), None));
    assert_eq!(page.top, StreamPosition::new(e.clone(), 10));
    assert_eq!(
        offsets_of(&read(&a, &c, Some((&e, 4)), 2).await),
        vec![5, 6]
    );
    let page = read(&a, &c, Some((&e, 10)), 100).await;
    assert!(page.publications.is_empty() && page.reset.is_none());
    assert_eq!(offsets_of(&read(&a, &c, None, 3).await), vec![8, 9, 10]);
    // A position in another epoch, or beyond the top, is reset.
    let page = read(&a, &c, Some((&x, 4)), 100).await;
    assert_eq!(page.reset, Some(ResetReason::EpochChanged));
    let page = read(&a, &c, Some((&e, 11)), 100).await;
    assert_eq!(page.reset, Some(ResetReason::EpochChanged));

    // Trimmed history.
    let small = ch("small:s");
    for n in 1..=5 {
        publish(&b, &small, n).await.unwrap();
    }
    let e = read(&a, &small, None, 0).await.top.epoch;
    let page = read(&a, &small, Some((&e, 1)), 100).await;
    assert_eq!(page.reset, Some(ResetReason::BeyondRetention));
    assert_eq!(
        offsets_of(&read(&a, &small, Some((&e, 2)), 100).await),
        vec![3, 4, 5]
    );

    // No history: offsets still advance, nothing is served.
    let none = ch("none:n");
    for n in 1..=3 {
        assert_eq!(publish(&b, &none, n).await.unwrap().position.offset, n);
    }
    let page = read(&a, &none, None, 10).await;
    assert!(page.publications.is_empty());
    let e = page.top.epoch.clone();
    assert_eq!(page.top.offset, 3);
    let page = read(&a, &none, Some((&e, 2)), 10).await;
    assert_eq!(page.reset, Some(ResetReason::BeyondRetention));
    assert_eq!(read(&a, &none, Some((&e, 3)), 10).await.reset, None);

    // A read longer than the direct-get walk goes through a consumer.
    let big = ch("big:b");
    for n in 1..=80 {
        publish(&b, &big, n).await.unwrap();
    }
    let e = read(&a, &big, None, 0).await.top.epoch;
    let page = read(&a, &big, Some((&e, 5)), 1000).await;
    assert_eq!((offsets_of(&page), page.reset), ((6..=80).collect(), None));
    let page = read(&a, &big, None, 50).await;
    assert_eq!(offsets_of(&page), (31..=80).collect::<Vec<_>>());

    // history_ttl: publications expire, the channel's position does not.
    let brief = ch("brief:x");
    let p1 = publish(&b, &brief, 1).await.unwrap();
    publish(&b, &brief, 2).await.unwrap();
    let e = p1.position.epoch.clone();
    assert_eq!(
        offsets_of(&read(&a, &brief, Some((&e, 0)), 10).await),
        vec![1, 2]
    );
    eventually(
        Duration::from_secs(5),
        "brief history to expire",
        || async {
            read(&a, &brief, Some((&e, 0)), 10).await.reset == Some(ResetReason::BeyondRetention)
        },
    )
    .await;
    let p3 = publish(&b, &brief, 3).await.unwrap();
    assert_eq!(p3.position, StreamPosition::new(e.clone(), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_is_shared_and_members_of_a_dead_node_expire_within_the_lease() {
    let Some(server) = Server::start() else {
        return;
    };
    let lease = Duration::from_secs(2);
    let channels = ChannelsConfig::default();
    let (a, b) = (
        node_with(&server, &channels, lease).await,
        node_with(&server, &channels, lease).await,
    );
    let c = ch("lobby");
    let member = |id: &str| Member {
        conn_id: id.to_owned(),
        user_id: None,
        info: None,
        transport: "ws".to_owned(),
    };
    let ids = |members: Vec<Member>| -> BTreeSet<String> {
        members.into_iter().map(|m| m.conn_id).collect()
    };
    let (pa, pb) = (a.engine.presence.clone(), b.engine.presence.clone());
    let joined = Instant::now();
    pa.join(&c, &member("00000000000000aa")).await.unwrap();
    pb.join(&c, &member("00000000000000bb")).await.unwrap();
    assert_eq!(
        ids(pb.members(&c).await.unwrap()),
        ["00000000000000aa".to_owned(), "00000000000000bb".to_owned()].into()
    );
    assert!(pa.members(&ch("elsewhere")).await.unwrap().is_empty());

    // Join events travel over the fan-out subject.
    let mut rx = subscribe(&a, &c).await;
    b.engine
        .broker
        .publish_presence(PresenceEvent::new(
            c.clone(),
            PresenceKind::Join,
            member("00000000000000bb"),
        ))
        .await
        .unwrap();
    match &receive(&mut rx, 1).await[0] {
        Outgoing::Presence(e) => {
            assert_eq!(
                (e.kind, e.member.conn_id.as_str()),
                (PresenceKind::Join, "00000000000000bb")
            );
        }
        Outgoing::Publication(_) => panic!("expected a presence event"),
    }

    // Node B stops refreshing: its member vanishes within the lease; A's stays.
    b.token.cancel();
    eventually(lease * 3, "node B's member to expire", || async {
        !ids(pa.members(&c).await.unwrap()).contains("00000000000000bb")
    })
    .await;
    let until = joined + lease + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(ids(pa.members(&c).await.unwrap()).contains("00000000000000aa"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pa.leave(&c, "00000000000000aa").await.unwrap();
    assert!(pa.members(&c).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_server_and_missed_publications_are_recovered() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let (a, b) = (node(&server).await, node(&server).await);
    let c = ch("resilient");
    let mut rx = subscribe(&a, &c).await;
    let p1 = publish(&b, &c, 1).await.unwrap();
    assert_eq!(offsets(&receive(&mut rx, 1).await), vec![1]);

    // A publication whose fan-out A never saw: appended to history directly.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("HERALD_H_DEFAULT").await.unwrap();
    let subject = format!("herald.h._.{}", hex("resilient"));
    let last = stream
        .direct_get_last_for_subject(subject.as_str())
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Herald-Epoch", p1.position.epoch.as_str());
    headers.insert("Herald-Offset", "2");
    headers.insert("Herald-Event", "message");
    headers.insert("Herald-Time", herald_core::now_ms().to_string());
    headers.insert("Herald-Prev", last.sequence.to_string());
    let message = PublishMessage::build()
        .headers(headers)
        .payload("{\"n\":2}".into())
        .expected_last_subject_sequence(last.sequence);
    js.send_publish(subject, message)
        .await
        .unwrap()
        .await
        .unwrap();
    drop(client);

    server.kill();
    eventually(
        Duration::from_secs(5),
        "both nodes to be unready",
        || async { !a.engine.broker.status().ready && !b.engine.broker.status().ready },
    )
    .await;
    assert!(matches!(
        publish(&b, &c, 3).await,
        Err(EngineError::Unavailable(_))
    ));

    server.run();
    eventually(
        Duration::from_secs(20),
        "both nodes to be ready again",
        || async { a.engine.broker.status().ready && b.engine.broker.status().ready },
    )
    .await;
    assert_eq!(offsets(&receive(&mut rx, 1).await), vec![2]);
    eventually(
        Duration::from_secs(5),
        "the recovery to be counted",
        || async {
            let status = a.engine.broker.status();
            status.reconnects >= 1 && status.counters["recovered_publications"] >= 1
        },
    )
    .await;
    // Ready means the core round trip works; JetStream may need a moment more after a restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    let p3 = loop {
        match publish(&b, &c, 3).await {
            Ok(p) => break p,
            Err(e) => assert!(Instant::now() < deadline, "publish after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        p3.position,
        StreamPosition::new(p1.position.epoch.clone(), 3)
    );
    assert_eq!(offsets(&receive(&mut rx, 1).await), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_what_it_cannot_honour() {
    let Some(server) = Server::start() else {
        return;
    };
    let hub = Arc::new(Hub::new(Arc::new(Stats::default())));
    let mut channels = ChannelsConfig::default();
    channels.namespaces.insert(
        "huge".into(),
        NamespaceOptions {
            history_size: 1_000_000,
            ..NamespaceOptions::default()
        },
    );
    let error = NatsEngine::start(
        config(server.url(), Duration::from_secs(30)),
        &node_parts(hub.clone(), &channels),
        CancellationToken::new(),
        &TaskTracker::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("channels.namespaces.huge.history_size"),
        "{error:#}"
    );

    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{free}");
    let error = NatsEngine::start(
        config(url, Duration::from_secs(30)),
        &node_parts(hub, &ChannelsConfig::default()),
        CancellationToken::new(),
        &TaskTracker::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("cannot connect to NATS"),
        "{error:#}"
    );
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latest_state_is_shared_kept_apart_from_history_and_keeps_the_position() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut channels = ChannelsConfig {
        max_latest_state_channels: 2,
        ..ChannelsConfig::default()
    };
    channels.namespaces.insert(
        "w".to_owned(),
        NamespaceOptions {
            history_size: 1,
            latest_state: LatestState::PerEvent,
            ..NamespaceOptions::default()
        },
    );
    let (a, b) = (
        node_with(&server, &channels, Duration::from_secs(30)).await,
        node_with(&server, &channels, Duration::from_secs(30)).await,
    );
    let keep = Retention {
        latest: channels.namespaces["w"].keep_latest(),
        max_latest_channels: 2,
        ..Retention::history(1, Duration::from_secs(600))
    };
    let c = ch("w:stream");
    let send = |node: &Node, event: &str| {
        let data = RawValue::from_string(format!("\"{event}\"")).unwrap();
        let event = EventName::parse(event).unwrap();
        let c = c.clone();
        let broker = node.engine.broker.clone();
        async move { broker.publish(c, event, data, keep).await.unwrap() }
    };
    // Two nodes publish; each event name's newest is the state, whichever node wrote it.
    for (i, event) in ["queue", "status", "tts", "queue", "status", "tts"]
        .into_iter()
        .enumerate()
    {
        send(if i % 2 == 0 { &a } else { &b }, event).await;
    }
    let state = b.engine.history.latest(&c).await.unwrap();
    assert_eq!(
        offsets_of(&state),
        vec![4, 5, 6],
        "one per name, oldest first"
    );
    assert_eq!(state.top.offset, 6);
    let epoch = state.top.epoch.clone();

    // History forgets the channel (its subject purged, its epoch entry gone): the latest state
    // keeps the position, so the next publication continues the same epoch.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let history = js.get_stream("HERALD_H_77").await.unwrap();
    history.purge().await.unwrap();
    let epochs = js.get_stream("KV_HERALD_EPOCHS").await.unwrap();
    epochs.purge().await.unwrap();
    let page = read(&a, &c, None, 10).await;
    assert_eq!(
        (page.top.epoch.clone(), page.top.offset),
        (epoch.clone(), 6)
    );
    let next = send(&b, "status").await;
    assert_eq!(
        (next.position.epoch.clone(), next.position.offset),
        (epoch, 7)
    );
    assert_eq!(
        offsets_of(&a.engine.history.latest(&c).await.unwrap()),
        vec![4, 6, 7]
    );

    // The bound on channels keeping latest state is shared by the nodes.
    send(&a, "x").await;
    let other = ch("w:other");
    let data = RawValue::from_string("1".into()).unwrap();
    b.engine
        .broker
        .publish(other, EventName::message(), data, keep)
        .await
        .unwrap();
    let third = ch("w:third");
    let data = RawValue::from_string("1".into()).unwrap();
    let refused = a
        .engine
        .broker
        .publish(third, EventName::message(), data, keep)
        .await;
    assert!(
        matches!(refused, Err(EngineError::LimitReached(what)) if what.contains("max_latest")),
        "{refused:?}"
    );
}
