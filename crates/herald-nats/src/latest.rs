//! Latest state (`latest_state`) on NATS: stream `{PREFIX}_LATEST`, one subject per channel and
//! event name (`{prefix}.l.{ns}.{chanhex}.{eventhex}`, or `…._` for `last`), each keeping its one
//! newest message for as long as the stream lives, apart from history. Messages carry the
//! publication's headers (epoch, offset, event, time), so a channel whose history and epoch
//! entry have expired continues from its latest state's position.
//!
//! A write follows the history append: it replaces the subject's message only when that holds
//! an older offset (or another epoch), conditional on its sequence, so two nodes publishing at
//! once cannot leave the older publication as the state. Channels keeping latest state are
//! counted in the key-value bucket `{PREFIX}_LATEST_CHANNELS` (one key per channel), checked
//! before a channel's first state is written: a bound the nodes share, which nodes adding
//! channels at the same instant can pass by one each.

use crate::codec::{self, hex, Stored};
use crate::engine::{Namespace, NatsEngine};
use crate::util::{call, unavailable, within};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use herald_core::{
    now_ms, ChannelName, EngineError, EventName, LatestState, Retention, LATEST_STATE_BOUND,
    MAX_LATEST_EVENTS,
};
use herald_protocol::StreamPosition;
use std::collections::BTreeMap;

/// Conditional writes tried per publication before giving up under contention.
const MAX_ATTEMPTS: usize = 10;

/// Most channels a node remembers having counted.
const COUNTED_CACHE: usize = 65_536;

impl NatsEngine {
    fn latest_filter(&self, ns: &Namespace, chan: &str) -> String {
        format!("{}.l.{}.{chan}.*", self.config.prefix, ns.token)
    }

    fn latest_subject(
        &self,
        ns: &Namespace,
        chan: &str,
        mode: LatestState,
        event: &EventName,
    ) -> String {
        let token = match mode {
            LatestState::PerEvent => hex(event.as_str()),
            _ => "_".to_owned(),
        };
        format!("{}.l.{}.{chan}.{token}", self.config.prefix, ns.token)
    }

    /// The channel's latest-state messages, one per subject, oldest offset first, expired ones
    /// included (the caller decides).
    pub(crate) async fn latest_entries(
        &self,
        ns: &Namespace,
        chan: &str,
    ) -> Result<Vec<Stored>, EngineError> {
        let filter = self.latest_filter(ns, chan);
        let mut newest: BTreeMap<String, Stored> = BTreeMap::new();
        let mut seq = 1;
        // A bounded walk: a channel keeps at most MAX_LATEST_EVENTS subjects (a few more while
        // a name beyond them is being replaced).
        for _ in 0..2 * MAX_LATEST_EVENTS {
            let next = self
                .latest_stream
                .direct_get_next_for_subject(&filter, Some(seq));
            let m = match within(self.timeout(), "nats latest state read timed out", next).await? {
                Ok(m) => m,
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break,
                Err(e) => return Err(unavailable("nats latest state read failed")(&e)),
            };
            seq = m.sequence + 1;
            if let Some(s) = Stored::decode(&m.headers, m.payload, m.sequence) {
                newest.insert(m.subject.to_string(), s);
            }
        }
        let mut out: Vec<Stored> = newest.into_values().collect();
        out.sort_by_key(|s| s.position.offset);
        Ok(out)
    }

    /// Where a channel with nothing in history stands, when it keeps latest state.
    pub(crate) async fn latest_top(
        &self,
        ns: &Namespace,
        chan: &str,
    ) -> Result<Option<StreamPosition>, EngineError> {
        if ns.latest == LatestState::Off {
            return Ok(None);
        }
        Ok(self
            .latest_entries(ns, chan)
            .await?
            .pop()
            .map(|s| s.position))
    }

    /// Counts `channel` among the channels keeping latest state, or refuses past the bound.
    pub(crate) async fn count_latest(
        &self,
        channel: &ChannelName,
        chan: &str,
        retention: Retention,
    ) -> Result<(), EngineError> {
        if crate::engine::lock(&self.latest_counted).contains(channel) {
            return Ok(());
        }
        let key = chan.to_owned();
        let known = call(
            self.timeout(),
            "nats latest count read failed",
            self.latest_channels.get(key.as_str()),
        )
        .await?;
        if known.is_none() {
            let info = call(
                self.timeout(),
                "nats latest count read failed",
                self.latest_channels_stream.get_info(),
            )
            .await?;
            if info.state.messages >= retention.max_latest_channels as u64 {
                return Err(EngineError::LimitReached(LATEST_STATE_BOUND));
            }
            call(
                self.timeout(),
                "nats latest count write failed",
                self.latest_channels
                    .put(key.as_str(), Bytes::from_static(b"1")),
            )
            .await?;
        }
        let mut counted = crate::engine::lock(&self.latest_counted);
        if counted.len() >= COUNTED_CACHE {
            counted.clear();
        }
        counted.insert(channel.clone());
        Ok(())
    }

    /// Records the publication at `position` as latest state, unless a newer one of the same
    /// subject got there first.
    pub(crate) async fn keep_latest(
        &self,
        ns: &Namespace,
        chan: &str,
        position: &StreamPosition,
        event: &EventName,
        time_ms: u64,
        payload: Bytes,
    ) -> Result<(), EngineError> {
        let subject = self.latest_subject(ns, chan, ns.latest, event);
        for _ in 0..MAX_ATTEMPTS {
            let got = within(
                self.timeout(),
                "nats latest state read timed out",
                self.latest_stream.direct_get_last_for_subject(&subject),
            )
            .await?;
            let expected = match got {
                Ok(m) => match Stored::decode(&m.headers, m.payload, m.sequence) {
                    Some(s)
                        if s.position.epoch == position.epoch
                            && s.position.offset >= position.offset =>
                    {
                        return Ok(());
                    }
                    _ => m.sequence,
                },
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => 0,
                Err(e) => return Err(unavailable("nats latest state read failed")(&e)),
            };
            let message = PublishMessage::build()
                .headers(codec::headers(position, event, time_ms))
                .payload(payload.clone())
                .expected_last_subject_sequence(expected);
            let append = async { self.js.send_publish(subject.clone(), message).await?.await };
            match within(self.timeout(), "nats latest state write timed out", append).await? {
                Ok(_) => {
                    if expected == 0 && ns.latest == LatestState::PerEvent {
                        self.trim_latest_names(ns, chan).await?;
                    }
                    return Ok(());
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {}
                Err(e) => return Err(unavailable("nats latest state write failed")(&e)),
            }
        }
        Err(EngineError::Unavailable("nats latest state contention"))
    }

    /// After a new event name: the names beyond [`MAX_LATEST_EVENTS`] published longest ago
    /// give way.
    async fn trim_latest_names(&self, ns: &Namespace, chan: &str) -> Result<(), EngineError> {
        let entries = self.latest_entries(ns, chan).await?;
        let excess = entries.len().saturating_sub(MAX_LATEST_EVENTS);
        for s in entries.into_iter().take(excess) {
            let subject = self.latest_subject(ns, chan, LatestState::PerEvent, &s.event);
            let purge = async { self.latest_stream.purge().filter(subject).await };
            call(self.timeout(), "nats latest state trim failed", purge).await?;
        }
        Ok(())
    }

    /// The latest state to serve: not expired by `latest_state_ttl`.
    pub(crate) fn live_latest(ns: &Namespace, entries: Vec<Stored>) -> Vec<Stored> {
        let now = now_ms();
        entries
            .into_iter()
            .filter(|s| {
                ns.latest_ttl_ms
                    .is_none_or(|ttl| now < s.time_ms.saturating_add(ttl))
            })
            .collect()
    }
}
