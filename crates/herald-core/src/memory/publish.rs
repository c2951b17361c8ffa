//! Publishing on the embedded engine: the offset is taken under the channel's lock, then the
//! publication is kept and fanned out there (memory only) or queued to the writer (with a
//! data directory). An idempotency key is checked and recorded under the same lock, so two
//! publishes with one key are ordered like any two publishes of the channel.

use super::channel::{ChannelState, Gone};
use super::engine::{MemoryEngine, STOPPED};
use super::journal::{Entry, StateValue};
use super::writer::{lock, Op, Then};
use crate::{
    ChannelName, EngineError, EventName, LatestState, Once, OnceRecord, Outgoing, Publication,
    Published, Retention,
};
use herald_protocol::StreamPosition;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The state-store scope of idempotency keys; the key is `CHANNEL\nKEY`.
pub(super) const ONCE_SCOPE: &str = "publish";

/// What an idempotency key says, read under the channel's lock.
enum Seen {
    /// Not published within the window.
    Fresh,
    /// Published, at this position.
    Repeat(Published),
    /// Published with another body.
    Conflict,
    /// Published, but still being written: wait for its outcome.
    Pending,
}

fn record(p: &Publication, once: &Once) -> StateValue {
    let window = u64::try_from(once.window.as_millis()).unwrap_or(u64::MAX);
    StateValue {
        bytes: OnceRecord::text(p, once).into_bytes().into(),
        expires_ms: Some(crate::now_ms().saturating_add(window)),
    }
}

impl MemoryEngine {
    fn seen(&self, st: &ChannelState, key: &(String, String), once: &Once) -> Seen {
        let now_ms = crate::now_ms();
        let map = lock(&self.state);
        let Some(v) = map
            .get(key)
            .filter(|v| v.expires_ms.is_none_or(|e| e > now_ms))
        else {
            return Seen::Fresh;
        };
        let text = std::str::from_utf8(&v.bytes).unwrap_or_default();
        let Some(record) = OnceRecord::parse(text) else {
            return Seen::Fresh;
        };
        // Only a journal leaves a recorded offset above the channel's top, until its commit.
        if self.writer.is_some()
            && record.position.epoch == st.epoch
            && record.position.offset > st.top
        {
            return Seen::Pending;
        }
        match record.answer(once) {
            Ok(repeat) => Seen::Repeat(repeat),
            Err(_) => Seen::Conflict,
        }
    }

    /// Publishes, at most once per `once` key when given.
    pub(super) async fn publish_with(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
        once: Option<&Once>,
    ) -> Result<Published, EngineError> {
        let key = once.map(|o| (ONCE_SCOPE.to_owned(), format!("{}\n{}", channel, o.key)));
        let permit = match &self.writer {
            Some(w) => Some(w.admit().await?),
            None => None,
        };
        let slot = self.slot(&channel)?;
        // Holding the channel's lock from here to the offset: a key is checked and recorded
        // in one step. A repeat of one still being written waits for its outcome first.
        let rx = {
            let mut st = loop {
                let wait = {
                    let st = lock(&slot);
                    let (Some(o), Some(k)) = (once, &key) else {
                        break st;
                    };
                    match self.seen(&st, k, o) {
                        Seen::Fresh => break st,
                        Seen::Repeat(p) => return Ok(p),
                        Seen::Conflict => return Err(EngineError::Conflict),
                        Seen::Pending => {
                            let (reply, rx) = oneshot::channel();
                            if let Some(w) = &self.writer {
                                w.push(Op {
                                    entry: None,
                                    then: Then::Barrier(reply),
                                })?;
                            }
                            rx
                        }
                    }
                };
                let _ = wait.await;
            };
            if let Some(k) = &key {
                let map = lock(&self.state);
                if !map.contains_key(k) && map.len() >= self.config.max_state_keys {
                    return Err(EngineError::LimitReached(crate::STATE_KEYS_BOUND));
                }
            }
            let now = Instant::now();
            self.prepare(&channel, &mut st, retention, now)?;
            st.next += 1;
            let position = StreamPosition::new(st.epoch.clone(), st.next);
            let p = Arc::new(Publication::new(
                channel,
                event,
                data,
                position,
                crate::now_ms(),
            ));
            let kept = match (once, key) {
                (Some(o), Some(k)) => Some((k, record(&p, o))),
                _ => None,
            };
            let (Some(w), Some(permit)) = (&self.writer, permit) else {
                st.keep(
                    &p,
                    retention,
                    now + retention.ttl,
                    now,
                    &mut Gone::default(),
                );
                // Under the channel's lock: delivery order equals offset order.
                self.hub
                    .fan_out(&p.channel, &Outgoing::Publication(p.clone()));
                if let Some((k, v)) = kept {
                    lock(&self.state).insert(k, v);
                }
                return Ok(Published::New(p));
            };
            let ms = |d: Duration| p.time_ms + u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let entry = Entry::Publication {
                publication: p.clone(),
                history: (retention.size > 0).then(|| ms(retention.ttl)),
                latest: (retention.latest.mode != LatestState::Off)
                    .then(|| (retention.latest.mode, retention.latest.ttl.map(ms))),
                once: kept
                    .as_ref()
                    .map(|((scope, k), v)| (scope.clone(), k.clone(), v.clone())),
            };
            let (reply, rx) = oneshot::channel();
            w.push(Op {
                entry: Some(entry),
                then: Then::Publish {
                    slot: slot.clone(),
                    generation: st.generation,
                    publication: p,
                    retention,
                    expires: now + retention.ttl,
                    reply,
                    once: kept.as_ref().map(|(k, _)| (self.state.clone(), k.clone())),
                    _permit: permit,
                },
            })?;
            // A repeat arriving now finds the key pending until the commit.
            if let Some((k, v)) = kept {
                lock(&self.state).insert(k, v);
            }
            st.waiting += 1;
            rx
        };
        rx.await.unwrap_or(Err(STOPPED)).map(Published::New)
    }
}
