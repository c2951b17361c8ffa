//! Micro-benchmark of the publish hot path inside one process: assign an offset, append to
//! history, fan out one shared publication to N outboxes, drain them, and encode the WebSocket
//! and SSE bytes once. Prints nanoseconds per publication and per delivery, so a regression in
//! the engine shows up without sockets or a second process.
//!
//! Run: `cargo run --release -p herald-core --example hot_path [SUBSCRIBERS] [PUBLICATIONS]`

use herald_core::memory::{MemoryEngine, MemoryEngineConfig};
use herald_core::{
    outbox, Broker, ChannelName, ConnId, EventName, Hub, OutboxLimits, Outgoing, Retention, Stats,
};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let subscribers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let publications: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let stats = Arc::new(Stats::default());
    let lag = OutboxLimits {
        messages: publications + 1,
        bytes: usize::MAX,
    };
    let hub = Arc::new(Hub::with_lag(stats.clone(), lag));
    let engine = MemoryEngine::new(hub.clone(), MemoryEngineConfig::default());
    let channel = ChannelName::parse("bench").expect("valid name");
    let mut outboxes = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let conn = ConnId::random();
        let (tx, rx) = outbox(conn, lag);
        hub.subscribe(&channel, conn, tx);
        outboxes.push(rx);
    }
    let retention = Retention::history(100, Duration::from_secs(60));
    let payload = format!(r#"{{"q":1,"p":"{}"}}"#, "x".repeat(80));
    let start = Instant::now();
    let mut encoded = 0usize;
    for _ in 0..publications {
        let data = RawValue::from_string(payload.clone()).expect("valid JSON");
        let p = engine
            .publish(channel.clone(), EventName::message(), data, retention)
            .await
            .expect("publish");
        encoded += p.json().len() + p.sse().len();
    }
    let publish = start.elapsed();
    let drain_start = Instant::now();
    let mut buf = Vec::new();
    let mut delivered = 0usize;
    for rx in &mut outboxes {
        rx.recv(&mut buf).await.expect("open");
        for item in buf.drain(..) {
            if let Outgoing::Publication(p) = item {
                delivered += p.json().len().min(1);
            }
        }
    }
    let drain = drain_start.elapsed();
    let deliveries = (subscribers * publications) as f64;
    println!(
        "subscribers={subscribers} publications={publications} delivered={delivered} encoded_bytes={encoded}"
    );
    println!(
        "publish+fan-out: {:.1} ns per delivery, {:.1} µs per publication",
        publish.as_nanos() as f64 / deliveries,
        publish.as_nanos() as f64 / 1000.0 / publications as f64
    );
    println!(
        "drain: {:.1} ns per delivery",
        drain.as_nanos() as f64 / deliveries
    );
}
