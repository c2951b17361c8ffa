//! The CLI's HTTP client commands: `publish` (one POST) and `tail` (an SSE follower that
//! resumes by itself with `Last-Event-ID` after any drop, with capped, jittered backoff).

use anyhow::{bail, Context};
use futures_util::StreamExt;
use herald_protocol::{SseDecoder, SseEvent};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Where the CLI looks for a server by default.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7077";

fn base(server: &str) -> &str {
    server.trim_end_matches('/')
}

/// `herald publish CHANNEL JSON [--event E]`.
pub(crate) async fn publish(
    server: &str,
    channel: &str,
    json: &str,
    event: Option<&str>,
    api_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let data: serde_json::Value =
        serde_json::from_str(json).context("the message is not valid JSON")?;
    let mut body = serde_json::json!({"channel": channel, "data": data});
    if let Some(e) = event {
        body["event"] = e.into();
    }
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/publish", base(server)))
        .json(&body);
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let status = resp.status();
    let text = resp.text().await.context("reading the response")?;
    if status.is_success() {
        println!("{text}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the server answered {status}: {text}");
        Ok(ExitCode::FAILURE)
    }
}

/// `herald tail CHANNEL...`: prints each event's data as one JSON line on stdout.
pub(crate) async fn tail(
    server: &str,
    channels: &[String],
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let mut url = reqwest::Url::parse(&format!("{}/sse", base(server)))
        .with_context(|| format!("{server} is not a URL"))?;
    {
        let mut q = url.query_pairs_mut();
        for c in channels {
            q.append_pair("channel", c);
        }
    }
    let mut last_id = String::new();
    let mut retry = Duration::from_secs(1);
    let mut failures: u32 = 0;
    loop {
        let mut req = client
            .get(url.clone())
            .header("accept", "text/event-stream");
        if !last_id.is_empty() {
            req = req.header("last-event-id", &last_id);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                failures = 0;
                let mut decoder = SseDecoder::new();
                let mut events = Vec::new();
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    decoder.feed(&chunk, &mut events);
                    print_events(&mut events)?;
                    if !decoder.last_event_id().is_empty() {
                        last_id = decoder.last_event_id().to_owned();
                    }
                    if let Some(ms) = decoder.retry_ms() {
                        retry = Duration::from_millis(ms);
                    }
                }
                eprintln!("herald tail: stream ended; resuming.");
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_client_error() && status.as_u16() != 429 {
                    bail!("the server refused the stream ({status}): {text}");
                }
                eprintln!("herald tail: the server answered {status}; retrying.");
                failures += 1;
            }
            Err(e) => {
                eprintln!("herald tail: cannot connect ({e}); retrying.");
                failures += 1;
            }
        }
        // Exponential backoff on repeated failures, capped at 30 s, with jitter.
        let backoff = retry
            .saturating_mul(2u32.saturating_pow(failures.min(5)))
            .min(Duration::from_secs(30));
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 4 + 1));
        tokio::time::sleep(backoff / 2 + jitter).await;
    }
}

fn print_events(events: &mut Vec<SseEvent>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for e in events.drain(..) {
        if e.event == herald_protocol::SSE_EVENT_CONNECTED {
            continue;
        }
        if e.event == "herald.disconnect" {
            eprintln!("herald tail: the server is closing the stream: {}", e.data);
            continue;
        }
        writeln!(out, "{}", e.data).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}
