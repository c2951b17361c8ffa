//! Measures the two field-standard Redis clients on the two operations the engine lives on:
//! running the publish script (EVALSHA, many in flight on one multiplexed connection) and
//! receiving pub/sub messages. `scripts/bench_redis_clients.sh` starts a private Redis and
//! runs this; BENCHMARKS.md records the result and the choice it led to.
//!
//! Usage: `client_choice REDIS_URL [SCRIPT_CALLS] [MESSAGES]`

use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A script shaped like the engine's publish: bump the offset, append to a stream, publish.
const LUA: &str = r#"
local t = redis.call('HINCRBY', KEYS[1], 't', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', 100, t .. '-0', 'd', ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return t
"#;
const IN_FLIGHT: usize = 64;
const PAYLOAD: &str = r#"{"text":"a 100-byte message body, about the size of a chat line or an alert in a widget..."}"#;

fn report(client: &str, what: &str, n: usize, took: Duration, latencies: &mut [u64]) {
    latencies.sort_unstable();
    let p = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"client\":\"{client}\",\"case\":\"{what}\",\"n\":{n},\"per_second\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        n as f64 / took.as_secs_f64(),
        p(0.50),
        p(0.99)
    );
}

async fn fred_scripts(url: &str, calls: usize) -> anyhow::Result<()> {
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(url)?).build()?;
    client.init().await?;
    let script = Arc::new(fred::types::scripts::Script::from_lua(LUA));
    script.load(&client).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let (client, script) = (client.clone(), script.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..calls).step_by(IN_FLIGHT) {
                let keys = vec![
                    format!("cc:f:{{{i}}}:m"),
                    format!("cc:f:{{{i}}}:h"),
                    "cc:f:p".to_owned(),
                ];
                let t = Instant::now();
                let _: i64 = script.evalsha(&client, keys, vec![PAYLOAD]).await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, fred::error::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    report("fred", "publish-script", calls, started.elapsed(), &mut lat);
    client.quit().await?;
    Ok(())
}

async fn redis_rs_scripts(url: &str, calls: usize) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let conn = client.get_multiplexed_async_connection().await?;
    let script = Arc::new(redis::Script::new(LUA));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let (mut conn, script) = (conn.clone(), script.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..calls).step_by(IN_FLIGHT) {
                let t = Instant::now();
                let _: i64 = script
                    .key(format!("cc:r:{{{i}}}:m"))
                    .key(format!("cc:r:{{{i}}}:h"))
                    .key("cc:r:p")
                    .arg(PAYLOAD)
                    .invoke_async(&mut conn)
                    .await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, redis::RedisError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    report(
        "redis",
        "publish-script",
        calls,
        started.elapsed(),
        &mut lat,
    );
    Ok(())
}

/// Publishes `n` messages from a separate connection and times their arrival.
async fn publish_all(url: &str, channel: &str, n: usize) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let conn = client.get_multiplexed_async_connection().await?;
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let mut conn = conn.clone();
        let channel = channel.to_owned();
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(IN_FLIGHT) {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(PAYLOAD)
                    .query_async(&mut conn)
                    .await?;
            }
            Ok::<_, redis::RedisError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn fred_pubsub(url: &str, n: usize) -> anyhow::Result<()> {
    let sub = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    let mut rx = sub.message_rx();
    sub.subscribe("cc:fan:f").await?;
    let started = Instant::now();
    let publisher = tokio::spawn({
        let url = url.to_owned();
        async move { publish_all(&url, "cc:fan:f", n).await }
    });
    let mut got = 0;
    let mut lagged = 0;
    while got + lagged < n as u64 {
        match rx.recv().await {
            Ok(_) => got += 1,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => lagged += k,
            Err(e) => anyhow::bail!("{e}"),
        }
    }
    let took = started.elapsed();
    publisher.await??;
    report("fred", "pubsub-receive", got as usize, took, &mut []);
    if lagged > 0 {
        println!("{{\"client\":\"fred\",\"case\":\"pubsub-lagged\",\"n\":{lagged}}}");
    }
    sub.quit().await?;
    Ok(())
}

async fn redis_rs_pubsub(url: &str, n: usize) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("cc:fan:r").await?;
    let mut stream = pubsub.into_on_message();
    let started = Instant::now();
    let publisher = tokio::spawn({
        let url = url.to_owned();
        async move { publish_all(&url, "cc:fan:r", n).await }
    });
    let mut got = 0;
    while got < n {
        if stream.next().await.is_none() {
            anyhow::bail!("pub/sub stream ended");
        }
        got += 1;
    }
    let took = started.elapsed();
    publisher.await??;
    report("redis", "pubsub-receive", got, took, &mut []);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let calls: usize = args.next().map_or(Ok(50_000), |a| a.parse())?;
    let messages: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    for _ in 0..3 {
        fred_scripts(&url, calls).await?;
        redis_rs_scripts(&url, calls).await?;
        fred_pubsub(&url, messages).await?;
        redis_rs_pubsub(&url, messages).await?;
    }
    Ok(())
}
