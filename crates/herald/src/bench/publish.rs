//! `herald bench publish`: HTTP publish requests per second from K concurrent keep-alive
//! connections, with a lean raw HTTP/1.1 client so the generator is not the limit.

use super::report::{self, Latencies};
use super::wire::{self, Endpoint, Target};
use super::ServerArgs;
use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options of a publish run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PublishArgs {
    /// Which server to measure and how to report.
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// How long to publish.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub(crate) size: usize,
    /// Channels to publish to (round robin).
    #[arg(long, default_value_t = 100)]
    pub(crate) channels: usize,
    /// Give every publish its own `idempotency_key` (Herald only).
    #[arg(long)]
    pub(crate) idempotency_keys: bool,
}

async fn read_response(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<u16> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head")?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .context("status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                if stream.read_buf(buf).await? == 0 {
                    bail!("closed mid-response");
                }
            }
            buf.advance(end + 4 + len);
            return Ok(status);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("closed before a response");
        }
    }
}

/// Runs a publish measurement.
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<serde_json::Value> {
    let ep = Endpoint::parse(args.server.url())?;
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Latencies::new(16));
    let deadline = Instant::now() + args.duration;
    let meter = report::CpuMeter::start(args.server.server_pid());
    let start = Instant::now();
    let pad = "x".repeat(args.size.saturating_sub(20).max(1));
    let mut tasks = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let ep = ep.clone();
        let ok = ok.clone();
        let errors = errors.clone();
        let latencies = latencies.clone();
        let pad = pad.clone();
        let target = args.server.target;
        let channels = args.channels.max(1);
        let keyed = args.idempotency_keys;
        tasks.push(tokio::spawn(async move {
            let mut stream = wire::tcp(&ep, w).await?;
            let mut buf = BytesMut::with_capacity(4096);
            let mut samples = Vec::with_capacity(64);
            let mut i = 0usize;
            while Instant::now() < deadline {
                let channel = format!("bench_{}", (w + i * 7) % channels);
                let data = format!(r#"{{"q":{i},"p":"{pad}"}}"#);
                let (path, body) = match target {
                    Target::Herald | Target::Ceiling if keyed => (
                        "/api/publish".to_owned(),
                        format!(
                            r#"{{"channel":"{channel}","data":{data},"idempotency_key":"w{w}-{i}"}}"#
                        ),
                    ),
                    Target::Herald | Target::Ceiling => (
                        "/api/publish".to_owned(),
                        format!(r#"{{"channel":"{channel}","data":{data}}}"#),
                    ),
                    Target::Nchan => (format!("/pub?id={channel}"), data),
                };
                let req = format!(
                    "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    ep.host,
                    body.len()
                );
                let t = Instant::now();
                stream.write_all(req.as_bytes()).await?;
                let status = read_response(&mut stream, &mut buf).await?;
                samples.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                if (200..300).contains(&status) {
                    ok.fetch_add(1, Relaxed);
                } else {
                    errors.fetch_add(1, Relaxed);
                }
                if samples.len() == 64 {
                    latencies.record(w, &samples);
                    samples.clear();
                }
                i += 1;
            }
            latencies.record(w, &samples);
            anyhow::Ok(())
        }));
    }
    let mut failures = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failures += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu, server_cpu) = meter.stop();
    let n = ok.load(Relaxed);
    Ok(json!({
        "mode": "publish",
        "target": args.server.target,
        "concurrency": args.concurrency,
        "payload_bytes": args.size,
        "accepted": n,
        "errors": errors.load(Relaxed),
        "failed_connections": failures,
        "seconds": secs,
        "publishes_per_sec": n as f64 / secs.max(1e-9),
        "latency": report::latency_json(&latencies.merged()),
        "generator_cpu_seconds": cpu,
        "server_cpu_seconds": server_cpu,
        "ok": failures == 0 && errors.load(Relaxed) == 0,
    }))
}
