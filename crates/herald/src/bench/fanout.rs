//! `herald bench fanout`: N subscribers over C channels, M messages of S bytes published at a
//! rate (or as fast as the server accepts, within a delivery window), every message carrying
//! its sequence number and send time. Reports delivered vs expected (lost, duplicated,
//! reordered), delivered msg/s and end-to-end latency.
//!
//! Several nodes of one cluster can be measured together: give `--url` more than once (or a
//! comma-separated list) and subscriber i connects to URL i mod N, while every publication goes
//! to the first URL; give `--server-pid` once per node to sum their CPU time.

use super::fanout_reads::{micros, read_loop, Counters};
use super::report::{self, Latencies};
use super::wire::{self, Endpoint, Subscriber, Target, Transport};
use anyhow::{bail, Context};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Options of a fan-out run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FanoutArgs {
    /// Which server to measure and how to report.
    #[command(flatten)]
    pub(crate) server: super::ServerArgs,
    /// Subscriber transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub(crate) transport: Transport,
    /// Number of subscribers.
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Number of channels; subscriber i listens to channel i mod C.
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Messages to publish in total (spread evenly over the channels).
    #[arg(long, default_value_t = 1000)]
    pub(crate) messages: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub(crate) size: usize,
    /// Publications per second in total; 0 publishes as fast as the server accepts.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Concurrent publishing connections.
    #[arg(long, default_value_t = 4)]
    pub(crate) publishers: usize,
    /// Most messages per subscriber published but not yet delivered (flow control).
    #[arg(long, default_value_t = 200)]
    pub(crate) window: u64,
    /// Concurrent connection attempts while subscribing.
    #[arg(long, default_value_t = 200)]
    pub(crate) connect_concurrency: usize,
    /// Give up waiting for stragglers after this long without progress.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: Duration,
}

pub(crate) fn channel_name(target: Target, c: usize) -> String {
    match target {
        Target::Herald | Target::Ceiling | Target::Nchan => format!("bench_{c}"),
    }
}

/// Opens `n` subscribers with bounded concurrency.
pub(crate) async fn open_subscribers(
    ep: &Endpoint,
    n: usize,
    channels: usize,
    transport: Transport,
    target: Target,
    concurrency: usize,
    quiet: bool,
) -> (Vec<(usize, Subscriber)>, usize) {
    open_subscribers_on(
        std::slice::from_ref(ep),
        n,
        channels,
        transport,
        target,
        concurrency,
        quiet,
    )
    .await
}

/// Opens `n` subscribers with bounded concurrency, subscriber i on endpoint i mod N.
async fn open_subscribers_on(
    eps: &[Endpoint],
    n: usize,
    channels: usize,
    transport: Transport,
    target: Target,
    concurrency: usize,
    quiet: bool,
) -> (Vec<(usize, Subscriber)>, usize) {
    let bar = report::progress(n as u64, "connecting", quiet);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let ep = eps[i % eps.len()].clone();
        let sem = sem.clone();
        let channel = channel_name(target, i % channels.max(1));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            (
                i,
                wire::subscribe(&ep, i, transport, target, &channel).await,
            )
        }));
    }
    let mut subs = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((i, Ok(s))) => subs.push((i, s)),
            Ok((i, Err(e))) => {
                if failed == 0 {
                    eprintln!("subscriber {i} failed: {e:#}");
                }
                failed += 1;
            }
            Err(_) => failed += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    (subs, failed)
}

/// Runs a fan-out measurement.
pub(crate) async fn run(args: FanoutArgs) -> anyhow::Result<serde_json::Value> {
    let urls: Vec<String> = args
        .server
        .urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    if urls.is_empty() {
        bail!("--url is empty");
    }
    let eps = urls
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channels = args.channels.max(1);
    let start = Instant::now();
    let (subs, failed) = open_subscribers_on(
        &eps,
        args.subscribers,
        channels,
        args.transport,
        args.server.target,
        args.connect_concurrency,
        args.server.json,
    )
    .await;
    let connect_secs = start.elapsed().as_secs_f64();
    let mut per_channel = vec![0u64; channels];
    for (i, _) in &subs {
        per_channel[i % channels] += 1;
    }
    let per_channel_msgs = args.messages / channels as u64;
    let expected: u64 = per_channel.iter().map(|n| n * per_channel_msgs).sum();

    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Latencies::new(16));
    let stop = CancellationToken::new();
    let meter = report::CpuMeter::start(None);
    let server_pids: Vec<String> = args.server.server_pids.iter().map(u32::to_string).collect();
    let server_cpu_before: Vec<Option<f64>> =
        server_pids.iter().map(|p| report::cpu_seconds(p)).collect();
    let t0 = Instant::now();
    let mut readers = Vec::with_capacity(subs.len());
    for (i, sub) in subs {
        let counters = counters.clone();
        let latencies = latencies.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(read_loop(
            sub, i, counters, latencies, stop, start,
        )));
    }

    // Publishers: channel c belongs to publisher c mod K, so each channel's sequence is sent in
    // order by one task. They run on a thread and runtime of their own: sharing the readers'
    // runtime, a publish waited behind thousands of reader tasks, so the pace "as fast as the
    // server accepts" depended on how busy the generator was.
    let k = args.publishers.clamp(1, channels.max(1));
    let subs_total = per_channel.iter().sum::<u64>().max(1);
    let round_trips = Arc::new(Latencies::new(k));
    let plans: Vec<PublishPlan> = (0..k)
        .map(|p| PublishPlan {
            url: urls[0].clone(),
            target: args.server.target,
            mine: (0..channels).filter(|c| c % k == p).collect(),
            per_channel_msgs,
            size: args.size,
            rate: if args.rate > 0.0 {
                args.rate / k as f64
            } else {
                0.0
            },
            window: args.window,
            subs_on: per_channel.clone(),
            subs_total,
            channels,
            counters: counters.clone(),
            round_trips: round_trips.clone(),
            start,
        })
        .collect();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("bench-publish".into())
        .spawn(move || {
            let _ = done_tx.send(publish_all(plans, k));
        })
        .context("starting the publisher thread")?;
    let bar = report::progress(expected, "delivering", args.server.json);
    done_rx.await.context("publisher thread")??;
    // Wait for deliveries to finish (or stall).
    let mut last = counters.delivered.load(Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = counters.delivered.load(Relaxed);
        bar.set_position(now);
        if now >= expected {
            break;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > args.drain_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let (cpu, _) = meter.stop();
    // Per server process; the total is known only when every process could be read.
    let server_cpu_each: Vec<Option<f64>> = server_pids
        .iter()
        .zip(&server_cpu_before)
        .map(|(p, before)| before.zip(report::cpu_seconds(p)).map(|(a, b)| b - a))
        .collect();
    let server_cpu: Option<f64> = if server_cpu_each.is_empty() {
        None
    } else {
        server_cpu_each.iter().copied().sum()
    };

    let delivered = counters.delivered.load(Relaxed);
    let ooo = counters.out_of_order.load(Relaxed);
    let dup = counters.duplicated.load(Relaxed);
    let unique = delivered.saturating_sub(ooo);
    let lost = expected.saturating_sub(unique);
    let first = counters.first_publish_us.load(Relaxed);
    let last = counters.last_delivery_us.load(Relaxed);
    let span = (last.saturating_sub(first)) as f64 / 1e6;
    let rate = if span > 0.0 {
        delivered as f64 / span
    } else {
        0.0
    };
    let h = latencies.merged();
    let mut result = json!({
        "mode": "fanout",
        "target": args.server.target,
        "transport": args.transport,
        "subscribers": args.subscribers,
        "channels": channels,
        "payload_bytes": args.size,
        "messages": per_channel_msgs * channels as u64,
        "rate": args.rate,
        "connected": args.subscribers - failed,
        "connect_failures": failed,
        "connect_seconds": connect_secs,
        "expected": expected,
        "delivered": delivered,
        "lost": lost,
        "duplicated": dup,
        "reordered": ooo.saturating_sub(dup),
        "publish_errors": counters.publish_errors.load(Relaxed),
        // Publications the server accepted: fewer than `messages` when the run stopped early
        // because the server ended a subscriber's stream (`lost` then counts the rest too).
        "published": counters.published.load(Relaxed),
        "closed_by_server": counters.closed_by_server.load(Relaxed),
        "closed_slow_consumer": counters.closed_slow_consumer.load(Relaxed),
        "delivered_per_sec": rate,
        "latency": report::latency_json(&h),
        "publish_round_trip": report::latency_json(&round_trips.merged()),
        "seconds": wall,
        "generator_cpu_seconds": cpu,
        "server_cpu_seconds": server_cpu,
        "ok": lost == 0 && ooo == 0 && failed == 0,
    });
    // Only multi-node runs carry these, so single-node output is unchanged.
    if urls.len() > 1 || server_pids.len() > 1 {
        result["nodes"] = json!(urls.len());
        result["urls"] = json!(urls);
        result["server_cpu_seconds_per_process"] = json!(server_cpu_each);
    }
    Ok(result)
}

struct PublishPlan {
    url: String,
    target: Target,
    mine: Vec<usize>,
    per_channel_msgs: u64,
    size: usize,
    rate: f64,
    window: u64,
    subs_on: Vec<u64>,
    subs_total: u64,
    channels: usize,
    counters: Arc<Counters>,
    /// Each publish request's round trip, sent to answered.
    round_trips: Arc<Latencies>,
    start: Instant,
}

/// Runs every publisher to the end on a current-thread runtime of the calling thread.
fn publish_all(plans: Vec<PublishPlan>, k: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the publishers' runtime")?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(k)
            .build()
            .context("building the HTTP client")?;
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|plan| tokio::spawn(publish_loop(client.clone(), plan)))
            .collect();
        for t in tasks {
            t.await.context("publisher task")??;
        }
        Ok(())
    })
}

async fn publish_loop(client: reqwest::Client, p: PublishPlan) -> anyhow::Result<()> {
    let pad_len = p.size.saturating_sub(40).max(1);
    let pad = "x".repeat(pad_len);
    let period = (p.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / p.rate));
    let mut next_at = tokio::time::Instant::now();
    let avg_subs = p.subs_total as f64 / p.channels as f64;
    for seq in 1..=p.per_channel_msgs {
        for &c in &p.mine {
            if p.subs_on[c] == 0 {
                continue;
            }
            // A run in which the server closed a subscriber has failed (its messages count as
            // lost, and `closed_by_server` says why): stop publishing rather than wait on a
            // backlog that closed subscriber will never drain.
            if p.counters.closed_by_server.load(Relaxed) > 0 {
                return Ok(());
            }
            // Flow control: keep the average backlog per subscriber under the window.
            loop {
                if p.counters.closed_by_server.load(Relaxed) > 0 {
                    return Ok(());
                }
                let published = p.counters.published.load(Relaxed) as f64;
                let delivered = p.counters.delivered.load(Relaxed) as f64;
                let backlog = published * avg_subs - delivered;
                if backlog <= (p.window as f64) * p.subs_total as f64 {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if let Some(period) = period {
                tokio::time::sleep_until(next_at).await;
                next_at += period;
            }
            let now = micros(p.start);
            let sent = Instant::now();
            let _ = p
                .counters
                .first_publish_us
                .compare_exchange(0, now, Relaxed, Relaxed);
            let data = format!(r#"{{"q":{seq},"t":{now},"p":"{pad}"}}"#);
            let channel = channel_name(p.target, c);
            let req = match p.target {
                Target::Herald | Target::Ceiling => client
                    .post(format!("{}/api/publish", p.url))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"channel":"{channel}","data":{data}}}"#)),
                Target::Nchan => client
                    .post(format!("{}/pub?id={channel}", p.url))
                    .body(data),
            };
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    p.round_trips.record(c, &[took]);
                }
                Ok(r) => {
                    if p.counters.publish_errors.fetch_add(1, Relaxed) == 0 {
                        eprintln!("publish failed: {}", r.status());
                    }
                    continue;
                }
                Err(e) => {
                    if p.counters.publish_errors.fetch_add(1, Relaxed) == 0 {
                        eprintln!("publish failed: {e}");
                    }
                    continue;
                }
            }
            p.counters.published.fetch_add(1, Relaxed);
        }
    }
    Ok(())
}
