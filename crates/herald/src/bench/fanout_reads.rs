//! The subscriber side of `herald bench fanout`: the counters every subscriber feeds, and the
//! loop that reads one subscriber's stream, checks each message's sequence number and records
//! its latency.

use super::report::Latencies;
use super::wire::{self, Subscriber, Transport};
use bytes::Buf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) out_of_order: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) last_delivery_us: AtomicU64,
    pub(crate) first_publish_us: AtomicU64,
    /// Subscriber streams the server ended before the run did, and of those, the ones ended as
    /// slow consumers (WebSocket close code 4001, or SSE's `herald.disconnect` with that code):
    /// a loss they explain was announced, not silent.
    pub(crate) closed_by_server: AtomicU64,
    pub(crate) closed_slow_consumer: AtomicU64,
}

/// The bench's clock: microseconds since the run started.
pub(crate) fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) async fn read_loop(
    mut sub: Subscriber,
    index: usize,
    counters: Arc<Counters>,
    latencies: Arc<Latencies>,
    stop: CancellationToken,
    start: Instant,
) {
    let mut last_seq = 0u64;
    let mut frames = Vec::new();
    let mut samples: Vec<u64> = Vec::with_capacity(256);
    loop {
        let now = micros(start);
        let mut n = 0u64;
        let mut ooo = 0u64;
        let mut dup = 0u64;
        let mut on_marker = |q: u64, t: u64| {
            n += 1;
            // A jump forward is a gap (counted as lost at the end); going back is out of order.
            if q > last_seq {
                last_seq = q;
            } else {
                ooo += 1;
                if q == last_seq {
                    dup += 1;
                }
            }
            samples.push(now.saturating_sub(t));
        };
        match sub.transport {
            Transport::Ws => {
                if wire::next_ws_frames(&mut sub.buf, &mut frames).is_err() {
                    return;
                }
                for (op, payload) in frames.drain(..) {
                    match op {
                        0x1 | 0x2 => wire::markers(&payload, &mut on_marker),
                        0x9 => {
                            let pong = wire::client_frame(0xA, &payload);
                            if sub.stream.write_all(&pong).await.is_err() {
                                return;
                            }
                        }
                        0x8 => {
                            count_close(&counters, &payload);
                            return;
                        }
                        _ => {}
                    }
                }
            }
            Transport::Sse => {
                if let Some(end) = memchr::memrchr(b'\n', &sub.buf) {
                    wire::markers(&sub.buf[..=end], &mut on_marker);
                    if let Some(at) =
                        memchr::memmem::find(&sub.buf[..=end], b"event: herald.disconnect")
                    {
                        if memchr::memmem::find(&sub.buf[at..=end], b"\"code\":4001").is_some() {
                            counters.closed_slow_consumer.fetch_add(1, Relaxed);
                        }
                    }
                    sub.buf.advance(end + 1);
                }
            }
        }
        if n > 0 {
            counters.delivered.fetch_add(n, Relaxed);
            counters.out_of_order.fetch_add(ooo, Relaxed);
            counters.duplicated.fetch_add(dup, Relaxed);
            counters.last_delivery_us.fetch_max(now, Relaxed);
            latencies.record(index, &samples);
        }
        samples.clear();
        if sub.buf.capacity() - sub.buf.len() < 4096 {
            sub.buf.reserve(64 * 1024);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            r = sub.stream.read_buf(&mut sub.buf) => match r {
                Ok(0) | Err(_) => {
                    counters.closed_by_server.fetch_add(1, Relaxed);
                    return;
                }
                Ok(_) => {}
            }
        }
    }
}

/// Counts a WebSocket close frame from the server; 4001 is Herald's slow-consumer eviction.
fn count_close(counters: &Counters, payload: &[u8]) {
    counters.closed_by_server.fetch_add(1, Relaxed);
    if payload.len() >= 2 && u16::from_be_bytes([payload[0], payload[1]]) == 4001 {
        counters.closed_slow_consumer.fetch_add(1, Relaxed);
    }
}
