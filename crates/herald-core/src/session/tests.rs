use super::*;
use crate::memory::{MemoryEngine, MemoryEngineConfig, MemoryPresenceStore};
use crate::{ChannelName, Node, Outgoing, Publication};
use crate::{ChannelsConfig, EventName, Hub, NamespaceOptions, Publisher, PublisherLimits, Stats};
use herald_protocol::StreamPosition;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

fn node(history_size: usize) -> Node {
    let options = NamespaceOptions {
        history_size,
        ..NamespaceOptions::default()
    };
    node_with(options, ChannelsConfig::default().max_latest_state_channels).0
}

async fn publish(node: &Node, n: usize) {
    for i in 0..n {
        let data = RawValue::from_string(i.to_string()).unwrap();
        let p = node.publisher.prepare("c", None, data).unwrap();
        node.publisher
            .publish(p, crate::Source::Http)
            .await
            .unwrap();
    }
}

fn offsets(emits: &[Emit]) -> Vec<String> {
    emits
        .iter()
        .map(|e| match e {
            Emit::Publication(p) => p.position.offset.to_string(),
            Emit::Reset { reason, .. } => reason.as_str().to_owned(),
            Emit::Presence(_) => "presence".to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn a_gap_is_filled_from_history_and_duplicates_are_dropped() {
    let node = node(100);
    let (mut s, mut outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("c", None, None, &mut out).await.unwrap();
    publish(&node, 3).await;
    let mut queued = Vec::new();
    outbox.recv(&mut queued).await.unwrap();
    assert_eq!(queued.len(), 3);
    // Deliver only the third: the first two come from history, in order.
    s.accept(queued[2].clone(), &mut out).await;
    assert_eq!(offsets(&out), ["1", "2", "3"]);
    out.clear();
    s.accept(queued[0].clone(), &mut out).await;
    s.accept(queued[2].clone(), &mut out).await;
    assert!(out.is_empty(), "duplicates are dropped");
    s.close().await;
}

#[tokio::test]
async fn a_gap_history_cannot_fill_is_announced_as_a_reset() {
    let node = node(1);
    let (mut s, mut outbox) = Session::new(node.clone(), Transport::Sse, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("c", None, None, &mut out).await.unwrap();
    publish(&node, 3).await;
    let mut queued = Vec::new();
    outbox.recv(&mut queued).await.unwrap();
    s.accept(queued[2].clone(), &mut out).await;
    assert_eq!(offsets(&out), ["beyond_retention", "3"]);
    let Emit::Reset { channels, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(channels[0].position.offset, 2);
    assert_eq!(s.positions().next().unwrap().offset, 3);
    assert_eq!(node.stats.resets.load(Relaxed), 1);
}

#[tokio::test]
async fn a_new_epoch_is_announced_as_a_reset() {
    let node = node(10);
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("c", None, None, &mut out).await.unwrap();
    let foreign = Arc::new(Publication::new(
        ChannelName::parse("c").unwrap(),
        EventName::message(),
        RawValue::from_string("1".into()).unwrap(),
        StreamPosition::new(herald_protocol::Epoch::parse("other").unwrap(), 4),
        0,
    ));
    s.accept(Outgoing::Publication(foreign), &mut out).await;
    assert_eq!(offsets(&out), ["epoch_changed", "4"]);
}

#[tokio::test]
async fn the_channel_limit_is_enforced() {
    let node = node(10);
    let limits = SessionLimits {
        max_channels: 1,
        ..SessionLimits::default()
    };
    let (mut s, _outbox) = Session::new(node, Transport::Ws, limits);
    let mut out = Vec::new();
    s.subscribe("a", None, None, &mut out).await.unwrap();
    assert!(matches!(
        s.subscribe("b", None, None, &mut out).await,
        Err(SessionError::TooManyChannels(1))
    ));
}

async fn publish_to(node: &Node, channel: &str, n: usize) {
    for i in 0..n {
        let data = RawValue::from_string(i.to_string()).unwrap();
        let p = node.publisher.prepare(channel, None, data).unwrap();
        node.publisher
            .publish(p, crate::Source::Http)
            .await
            .unwrap();
    }
}

/// A subscribe, history or publish in flight leaves the session free: deliveries of other
/// channels go on, later requests are served, and what arrives for the channel being joined is
/// held and delivered in order, once, after the reply.
#[tokio::test]
async fn requests_in_flight_do_not_stall_the_connection() {
    use herald_protocol::{Reply, ReplyResult, Request};
    let node = node(100);
    let users = crate::UserLimiter::new(0);
    let mut slot = None;
    let (mut s, mut outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("live", None, None, &mut out).await.unwrap();
    fn ask<'a>(
        req: Request,
        users: &'a Arc<crate::UserLimiter>,
        slot: &'a mut Option<crate::UserGuard>,
    ) -> (Request, RequestContext<'a>) {
        let ctx = RequestContext {
            tokens: None,
            users,
            user_slot: slot,
        };
        (req, ctx)
    }
    let (req, ctx) = ask(
        Request::Subscribe {
            channel: "c".into(),
            since: None,
            token: None,
        },
        &users,
        &mut slot,
    );
    let Handled::Wait(joining) = s.request(req, ctx).await else {
        panic!("a subscribe waits on the engine");
    };
    // While it is in flight: the channel gets publications, and so does one already held.
    publish_to(&node, "c", 2).await;
    publish_to(&node, "live", 1).await;
    let mut queued = Vec::new();
    outbox.recv(&mut queued).await.unwrap();
    for item in queued.drain(..) {
        s.accept(item, &mut out).await;
    }
    // The held channel's publication is delivered now; the joining one's are held.
    assert_eq!(offsets(&out), ["1"]);
    out.clear();
    // A later request is served meanwhile, and a second subscribe of the same channel is
    // refused as a duplicate.
    let (req, ctx) = ask(Request::Ping, &users, &mut slot);
    assert!(matches!(
        s.request(req, ctx).await,
        Handled::Done(Reply::Ok(_))
    ));
    let (req, ctx) = ask(
        Request::Subscribe {
            channel: "c".into(),
            since: None,
            token: None,
        },
        &users,
        &mut slot,
    );
    let Handled::Done(dup) = s.request(req, ctx).await else {
        panic!("a duplicate is refused at once");
    };
    assert_eq!(
        dup.error_code(),
        Some(herald_protocol::ErrorCode::AlreadySubscribed)
    );
    // The engine answers (its read saw both publications); the held ones are dropped as
    // duplicates, and one more published now comes after.
    let done = joining.await;
    publish_to(&node, "c", 1).await;
    let reply = s.complete(done, &mut out).await;
    let Reply::Ok(ReplyResult::Subscribed { position, .. }) = reply else {
        panic!("subscribed: {reply:?}");
    };
    outbox.recv(&mut queued).await.unwrap();
    for item in queued.drain(..) {
        s.accept(item, &mut out).await;
    }
    assert_eq!(offsets(&out), ["3"], "each publication once, in order");
    assert!(position.offset <= 2);
}

/// A subscribe unsubscribed while in flight ends unsubscribed, and leaves nothing in the hub.
#[tokio::test]
async fn a_subscribe_cancelled_in_flight_ends_unsubscribed() {
    let node = node(100);
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    let joining = s.begin_subscribe("c", None, None).unwrap();
    assert_eq!(node.hub.subscribers(&ChannelName::parse("c").unwrap()), 1);
    s.unsubscribe("c").await.unwrap();
    let read = joining.read.await;
    let mut out = Vec::new();
    let e = s
        .finish_subscribe(joining.done, read, &mut out)
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::NotSubscribed(_)));
    assert_eq!(node.hub.subscribers(&ChannelName::parse("c").unwrap()), 0);
    assert_eq!(s.channels().count(), 0);
}

#[test]
fn a_line_break_between_json_tokens_becomes_a_space() {
    let node = node(10);
    let data = RawValue::from_string("{\"a\":\n 1,\r\n\"b\":\"x\\ny\"}".into()).unwrap();
    let (_, _, data) = node
        .publisher
        .prepare("c", None, data)
        .unwrap()
        .into_parts();
    assert_eq!(data.get(), "{\"a\":  1,  \"b\":\"x\\ny\"}");
    let v: serde_json::Value = serde_json::from_str(data.get()).unwrap();
    assert_eq!(v, serde_json::json!({"a": 1, "b": "x\ny"}));
}

/// A node over a memory engine (returned too, for its sweeper) with `options` for every channel.
fn node_with(options: NamespaceOptions, max_latest: usize) -> (Node, Arc<MemoryEngine>) {
    node_over(options, max_latest, MemoryEngineConfig::default())
}

/// [`node_with`] over a memory engine configured with `engine`.
fn node_over(
    options: NamespaceOptions,
    max_latest: usize,
    engine: MemoryEngineConfig,
) -> (Node, Arc<MemoryEngine>) {
    let stats = Arc::new(Stats::default());
    let hub = Arc::new(Hub::new(stats.clone()));
    let engine = Arc::new(MemoryEngine::new(hub.clone(), engine));
    let channels = Arc::new(ChannelsConfig {
        defaults: options,
        max_latest_state_channels: max_latest,
        ..ChannelsConfig::default()
    });
    let publisher = Arc::new(Publisher::new(
        engine.clone(),
        channels.clone(),
        PublisherLimits {
            max_data_bytes: 1024,
            idempotency_window: std::time::Duration::from_secs(600),
        },
        stats.clone(),
    ));
    let node = Node {
        hub,
        broker: engine.clone(),
        history: engine.clone(),
        presence: Arc::new(MemoryPresenceStore::default()),
        publisher,
        channels,
        stats,
        clients: Arc::new(crate::ClientRules {
            user_rates: crate::KeyedBuckets::new(0, 60.0, 1000),
            proxy: None,
        }),
    };
    (node, engine)
}

async fn publish_event(node: &Node, channel: &str, event: &str) -> Arc<Publication> {
    let data = RawValue::from_string(format!("\"{event}\"")).unwrap();
    let p = node.publisher.prepare(channel, Some(event), data).unwrap();
    node.publisher
        .publish(p, crate::Source::Http)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn latest_state_outlives_history_and_the_idle_channel_ttl() {
    let (node, engine) = node_with(
        NamespaceOptions {
            history_size: 10,
            history_ttl: std::time::Duration::from_secs(60),
            latest_state: crate::LatestState::Last,
            ..NamespaceOptions::default()
        },
        10,
    );
    publish_event(&node, "room", "paused").await;
    let last = publish_event(&node, "room", "playing").await;
    // Long after history expired and the idle channel would have been forgotten.
    tokio::time::advance(std::time::Duration::from_secs(3 * 3600)).await;
    engine.sweep();
    assert_eq!(engine.channel_count(), 1, "kept with its latest state");
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Sse, SessionLimits::default());
    let mut out = Vec::new();
    let position = s.subscribe("room", None, None, &mut out).await.unwrap();
    assert_eq!(offsets(&out), ["2"]);
    assert_eq!(position, last.position, "same epoch, current offset");
    // The next publication continues the same epoch: no reset for anyone.
    let next = publish_event(&node, "room", "paused").await;
    assert_eq!(next.position.epoch, last.position.epoch);
    assert_eq!(next.position.offset, 3);
}

#[tokio::test]
async fn per_event_latest_state_resumes_after_a_cut_without_reset_or_duplicates() {
    let (node, _engine) = node_with(
        NamespaceOptions {
            history_size: 1,
            latest_state: crate::LatestState::PerEvent,
            ..NamespaceOptions::default()
        },
        10,
    );
    for event in ["queue", "status", "tts", "queue", "status", "tts"] {
        publish_event(&node, "widget", event).await;
    }
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Sse, SessionLimits::default());
    let mut out = Vec::new();
    let position = s.subscribe("widget", None, None, &mut out).await.unwrap();
    assert_eq!(
        offsets(&out),
        ["4", "5", "6"],
        "one per event name, oldest first"
    );
    assert_eq!(position.offset, 6);
    let Emit::Publication(first) = &out[0] else {
        unreachable!()
    };
    let cut = first.position.clone();
    s.close().await;

    // Cut right after the first push; history holds only offset 6.
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Sse, SessionLimits::default());
    let mut out = Vec::new();
    let position = s
        .subscribe("widget", Some(cut), None, &mut out)
        .await
        .unwrap();
    assert_eq!(
        offsets(&out),
        ["5", "6"],
        "no reset, the other two, no duplicate"
    );
    assert_eq!(position.offset, 6);
    assert_eq!(node.stats.resets.load(Relaxed), 0);
}

#[tokio::test]
async fn channels_keeping_latest_state_are_bounded_and_refusals_counted() {
    let (node, engine) = node_with(
        NamespaceOptions {
            latest_state: crate::LatestState::Last,
            ..NamespaceOptions::default()
        },
        1,
    );
    publish_event(&node, "a", "x").await;
    publish_event(&node, "a", "y").await;
    let data = RawValue::from_string("1".into()).unwrap();
    let p = node.publisher.prepare("b", None, data).unwrap();
    let refused = node
        .publisher
        .publish(p, crate::Source::Http)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("max_latest_state_channels"),
        "{refused}"
    );
    assert_eq!(node.stats.refused.latest_state_channels.load(Relaxed), 1);
    assert_eq!(engine.latest_channel_count(), 1);
}

#[tokio::test]
async fn idempotency_keys_are_bounded_by_the_state_store_and_refusals_counted() {
    let (node, _engine) = node_over(
        NamespaceOptions::default(),
        ChannelsConfig::default().max_latest_state_channels,
        MemoryEngineConfig {
            max_state_keys: 2,
            ..MemoryEngineConfig::default()
        },
    );
    let keyed = |key: &'static str| {
        let node = node.clone();
        async move {
            let data = RawValue::from_string(format!("\"{key}\"")).unwrap();
            let p = node.publisher.prepare("orders", None, data).unwrap();
            let once = node.publisher.once(&p, key).unwrap();
            node.publisher
                .publish_once(p, crate::Source::Http, &once)
                .await
        }
    };
    keyed("k1").await.unwrap();
    keyed("k2").await.unwrap();
    // A repeat of a kept key is still recognised; a new key finds the store full.
    assert!(matches!(
        keyed("k1").await,
        Ok(crate::Published::Repeat { .. })
    ));
    let refused = keyed("k3").await.unwrap_err();
    assert!(
        refused.to_string().contains("engine.max_state_keys"),
        "{refused}"
    );
    assert_eq!(node.stats.refused.state_keys.load(Relaxed), 1);
    assert_eq!(node.stats.refused.latest_state_channels.load(Relaxed), 0);
}

fn person(user: &str) -> crate::Identity {
    crate::Identity {
        user: Arc::from(user),
        info: Some(Arc::from(
            RawValue::from_string(format!("{{\"name\":\"{user}\"}}")).unwrap(),
        )),
        subscribe: crate::Grants::default(),
        publish: crate::Grants::default(),
        expires_at: None,
        session_start: None,
    }
}

/// A session of `user` (anonymous with None) subscribed to `channel`.
async fn member_of(
    node: &Node,
    channel: &str,
    user: Option<&str>,
) -> Result<Session, SessionError> {
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    if let Some(u) = user {
        s.authenticate(person(u)).await.unwrap();
    }
    s.subscribe(channel, None, None, &mut Vec::new()).await?;
    Ok(s)
}

/// The presence pushes queued so far: (join or leave, user, whether it names a connection).
async fn presence_pushes(outbox: &mut crate::Outbox) -> Vec<(String, String, bool)> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(20), outbox.recv(&mut buf)).await;
    buf.into_iter()
        .filter_map(|o| match o {
            Outgoing::Presence(e) => Some((
                format!("{:?}", e.kind),
                e.member.user_id.clone().unwrap_or_default(),
                !e.member.conn_id.is_empty(),
            )),
            Outgoing::Publication(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn presence_by_user_joins_with_the_first_tab_and_leaves_after_the_last() {
    let (node, _engine) = node_with(
        NamespaceOptions {
            presence: crate::PresenceMode::Users,
            ..NamespaceOptions::default()
        },
        10,
    );
    let (mut watcher, mut seen) =
        Session::new(node.clone(), Transport::Sse, SessionLimits::default());
    watcher
        .subscribe("room", None, None, &mut Vec::new())
        .await
        .unwrap();
    assert!(
        presence_pushes(&mut seen).await.is_empty(),
        "anonymous: no join"
    );
    let tab1 = member_of(&node, "room", Some("alice")).await.unwrap();
    let tab2 = member_of(&node, "room", Some("alice")).await.unwrap();
    let mut bob = member_of(&node, "room", Some("bob")).await.unwrap();
    let join = |u: &str| ("Join".to_owned(), u.to_owned(), false);
    let leave = |u: &str| ("Leave".to_owned(), u.to_owned(), false);
    assert_eq!(
        presence_pushes(&mut seen).await,
        vec![join("alice"), join("bob")],
        "people, not tabs"
    );
    let listed = crate::roster::presence_result(
        &ChannelName::parse("room").unwrap(),
        crate::PresenceMode::Users,
        node.presence
            .members(&ChannelName::parse("room").unwrap())
            .await
            .unwrap(),
    );
    let listed = serde_json::to_value(&listed).unwrap();
    assert_eq!(
        listed,
        serde_json::json!({"channel": "room", "anonymous": 1, "users": [
            {"user_id": "alice", "info": {"name": "alice"}, "connections": 2},
            {"user_id": "bob", "info": {"name": "bob"}, "connections": 1},
        ]})
    );
    tab1.close().await;
    assert!(
        presence_pushes(&mut seen).await.is_empty(),
        "alice still has a tab"
    );
    tab2.close().await;
    bob.unsubscribe("room").await.unwrap();
    assert_eq!(
        presence_pushes(&mut seen).await,
        vec![leave("alice"), leave("bob")]
    );
}

#[tokio::test]
async fn a_full_channel_refuses_subscribers_until_one_leaves() {
    let (node, _engine) = node_with(
        NamespaceOptions {
            max_subscribers: 2,
            ..NamespaceOptions::default()
        },
        10,
    );
    let first = member_of(&node, "room", None).await.unwrap();
    let _second = member_of(&node, "room", Some("b")).await.unwrap();
    let refused = member_of(&node, "room", Some("c")).await.err().unwrap();
    assert_eq!(refused.code(), herald_protocol::ErrorCode::ChannelFull);
    assert!(refused.to_string().contains("at most 2"), "{refused}");
    assert_eq!(node.stats.refused.channel_full.load(Relaxed), 1);
    assert_eq!(
        node.hub.subscribers(&ChannelName::parse("room").unwrap()),
        2
    );
    first.close().await;
    member_of(&node, "room", Some("c")).await.unwrap();
}

#[test]
fn a_session_stays_small() {
    // Every idle connection holds one; BENCHMARKS' idle memory per connection assumes this.
    assert!(
        std::mem::size_of::<Session>() <= 240,
        "Session grew to {} bytes",
        std::mem::size_of::<Session>()
    );
}
