//! `herald bench idle`: open N connections, hold them (answering heartbeats), and report the
//! server's resident memory per connection; `herald bench connect` reports how fast they open.

use super::fanout::{channel_name, open_subscribers};
use super::report;
use super::wire::{self, Endpoint, Transport};
use super::ServerArgs;
use anyhow::Context;
use bytes::Buf;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// Options of an idle or connect run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IdleArgs {
    /// Which server to measure and how to report.
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Connection transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub(crate) transport: Transport,
    /// Number of connections.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// Channels the connections spread over.
    #[arg(long, default_value_t = 100)]
    pub(crate) channels: usize,
    /// Concurrent connection attempts.
    #[arg(long, default_value_t = 200)]
    pub(crate) connect_concurrency: usize,
    /// How long to hold the connections once all are open (idle mode).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) hold: Duration,
}

async fn server_rss(args: &IdleArgs) -> anyhow::Result<u64> {
    if let Some(pid) = args.server.server_pid() {
        return report::rss_bytes(&pid.to_string()).context("reading the server's RSS");
    }
    let stats: serde_json::Value = reqwest::get(format!(
        "{}/api/stats",
        args.server.url().trim_end_matches('/')
    ))
    .await
    .context("GET /api/stats")?
    .json()
    .await
    .context("reading /api/stats")?;
    stats["memory"]["rss_bytes"]
        .as_u64()
        .context("/api/stats has no memory.rss_bytes; pass --server-pid")
}

async fn open_all(
    ep: &Endpoint,
    args: &IdleArgs,
) -> (Vec<(usize, super::wire::Subscriber)>, usize) {
    open_subscribers(
        ep,
        args.connections,
        args.channels.max(1),
        args.transport,
        args.server.target,
        args.connect_concurrency,
        args.server.json,
    )
    .await
}

/// Opens connections, holds them, reports RSS per connection. Each connection answers the
/// server's heartbeats from the moment it is open, so however long opening all of them takes,
/// none is closed as silent.
pub(crate) async fn idle(args: IdleArgs) -> anyhow::Result<serde_json::Value> {
    let ep = Endpoint::parse(args.server.url())?;
    let before = server_rss(&args).await?;
    let start = Instant::now();
    let n = args.connections;
    let bar = report::progress(n as u64, "connecting", args.server.json);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    // Each connection reports once whether it opened; the channel holds at most `n` booleans.
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<bool>();
    let reported_failure = Arc::new(AtomicBool::new(false));
    let mut holders = Vec::with_capacity(n);
    for i in 0..n {
        let ep = ep.clone();
        let permits = permits.clone();
        let opened_tx = opened_tx.clone();
        let reported_failure = reported_failure.clone();
        let channel = channel_name(args.server.target, i % args.channels.max(1));
        let (transport, target) = (args.transport, args.server.target);
        holders.push(tokio::spawn(async move {
            let opened = {
                let _permit = permits.acquire_owned().await;
                wire::subscribe(&ep, i, transport, target, &channel).await
            };
            match opened {
                Ok(sub) => {
                    let _ = opened_tx.send(true);
                    hold(sub).await
                }
                Err(e) => {
                    if !reported_failure.swap(true, Relaxed) {
                        eprintln!("subscriber {i} failed: {e:#}");
                    }
                    let _ = opened_tx.send(false);
                    false
                }
            }
        }));
    }
    drop(opened_tx);
    // Counted rather than waited to close: a connection that opened keeps its sender while it
    // is held.
    let (mut open, mut failed) = (0usize, 0usize);
    while open + failed < n {
        match opened_rx.recv().await {
            Some(true) => open += 1,
            Some(false) => failed += 1,
            // Only if every task ended without reporting (a panic): count the rest as failed.
            None => failed = n - open,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(args.hold).await;
    let after = server_rss(&args).await?;
    // A connection that failed to open, or that the server closed, has finished its task.
    let still_open = holders.iter().filter(|h| !h.is_finished()).count();
    for h in &holders {
        h.abort();
    }
    let per_conn = if open > 0 {
        after.saturating_sub(before) as f64 / open as f64
    } else {
        0.0
    };
    Ok(json!({
        "mode": "idle",
        "target": args.server.target,
        "transport": args.transport,
        "connections": args.connections,
        "connected": open,
        "connect_failures": failed,
        "still_open_after_hold": still_open,
        "connect_seconds": connect_secs,
        "connects_per_sec": open as f64 / connect_secs.max(1e-9),
        "hold_seconds": args.hold.as_secs_f64(),
        "server_rss_before_bytes": before,
        "server_rss_after_bytes": after,
        "server_rss_per_connection_bytes": per_conn,
        "ok": failed == 0 && still_open == open,
    }))
}

/// Holds one open connection: answers pings, discards everything else. Returns when the server
/// closes it (or the connection fails); the run aborts it otherwise.
async fn hold(mut sub: wire::Subscriber) -> bool {
    let mut frames = Vec::new();
    loop {
        if sub.transport == Transport::Ws {
            if wire::next_ws_frames(&mut sub.buf, &mut frames).is_err() {
                return false;
            }
            for (op, payload) in frames.drain(..) {
                if op == 0x9 {
                    let pong = wire::client_frame(0xA, &payload);
                    if sub.stream.write_all(&pong).await.is_err() {
                        return false;
                    }
                } else if op == 0x8 {
                    return false;
                }
            }
        } else {
            let n = sub.buf.len();
            sub.buf.advance(n);
        }
        match sub.stream.read_buf(&mut sub.buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// Opens connections as fast as allowed and reports the rate.
pub(crate) async fn connect(args: IdleArgs) -> anyhow::Result<serde_json::Value> {
    let ep = Endpoint::parse(args.server.url())?;
    let start = Instant::now();
    let (subs, failed) = open_all(&ep, &args).await;
    let secs = start.elapsed().as_secs_f64();
    let open = subs.len();
    drop(subs);
    Ok(json!({
        "mode": "connect",
        "target": args.server.target,
        "transport": args.transport,
        "connections": args.connections,
        "connected": open,
        "connect_failures": failed,
        "seconds": secs,
        "connects_per_sec": open as f64 / secs.max(1e-9),
        "ok": failed == 0,
    }))
}
