//! Reading history from JetStream: the channel's last message by a direct get, then walking back
//! through `Herald-Prev` for short reads or an ordered consumer for long ones; and the channel's
//! epoch and tip, which publishing continues from.

use crate::codec::{hex, Stored};
use crate::config::MAX_HISTORY;
use crate::engine::{Namespace, NatsEngine, Tip};
use crate::util::{call, scan, unavailable, within};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv::CreateErrorKind;
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_trait::async_trait;
use bytes::Bytes;
use herald_core::{
    now_ms, resume_reset, ChannelName, EngineError, HistoryPage, HistoryQuery, HistoryStore,
    LatestState, Publication,
};
use herald_protocol::{Epoch, StreamPosition};
use std::sync::Arc;

/// Reads spanning at most this many messages walk back from the last one by direct gets;
/// longer ones use an ordered consumer.
const WALK_MAX: u64 = 32;

impl NatsEngine {
    /// The channel's last message in history.
    pub(crate) async fn last(
        &self,
        ns: &Namespace,
        subject: &str,
    ) -> Result<Option<Stored>, EngineError> {
        let got = within(
            self.timeout(),
            "nats history read timed out",
            ns.stream.direct_get_last_for_subject(subject),
        )
        .await?;
        match got {
            Ok(m) => Stored::decode(&m.headers, m.payload, m.sequence)
                .map(Some)
                .ok_or(EngineError::Unavailable("nats history message malformed")),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(unavailable("nats history read failed")(&e)),
        }
    }

    /// The epoch of a channel with nothing in history, created (by exactly one node) if absent.
    /// The key names the namespace's stream too: the entry vouches for that subject only.
    pub(crate) async fn epoch(&self, ns: &Namespace, chan: &str) -> Result<Epoch, EngineError> {
        let key = format!("{}.{chan}", ns.token);
        for _ in 0..3 {
            let got = call(
                self.timeout(),
                "nats epoch read failed",
                self.epochs.get(key.as_str()),
            )
            .await?;
            if let Some(value) = got {
                return std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| Epoch::parse(s).ok())
                    .ok_or(EngineError::Unavailable("nats epoch malformed"));
            }
            let epoch = herald_core::new_epoch();
            let value = Bytes::from(epoch.as_str().to_owned());
            let created = within(
                self.timeout(),
                "nats epoch write timed out",
                self.epochs.create(&key, value),
            )
            .await?;
            match created {
                Ok(_) => return Ok(epoch),
                // Another node created it first; read theirs.
                Err(e) if matches!(e.kind(), CreateErrorKind::AlreadyExists) => {}
                Err(e) => return Err(unavailable("nats epoch write failed")(&e)),
            }
        }
        Err(EngineError::Unavailable("nats epoch contention"))
    }

    /// Where the next publish on the channel continues.
    pub(crate) async fn tip(
        &self,
        ns: &Namespace,
        subject: &str,
        chan: &str,
    ) -> Result<Tip, EngineError> {
        if let Some(s) = self.last(ns, subject).await? {
            return Ok(Tip {
                epoch: s.position.epoch,
                offset: s.position.offset,
                seq: s.seq,
            });
        }
        // History forgot the channel; its latest state keeps its position.
        if let Some(top) = self.latest_top(ns, chan).await? {
            return Ok(Tip {
                epoch: top.epoch,
                offset: top.offset,
                seq: 0,
            });
        }
        Ok(Tip {
            epoch: self.epoch(ns, chan).await?,
            offset: 0,
            seq: 0,
        })
    }

    /// newest run) when older ones are gone.
    async fn collect(
        &self,
        ns: &Namespace,
        channel: &ChannelName,
        subject: &str,
        last: Stored,
        lower: u64,
    ) -> Result<Vec<Arc<Publication>>, EngineError> {
        let now = now_ms();
        let top = last.position.offset;
        let epoch = last.position.epoch.clone();
        // Newest first: accepts the message that continues the run downwards.
        let accept = |have: usize, s: &Stored| {
            s.position.epoch == epoch
                && s.position.offset + have as u64 == top
                && s.position.offset > lower
                && now < s.time_ms.saturating_add(ns.ttl_ms)
        };
        let mut run: Vec<Stored> = Vec::new();
        if top - lower <= WALK_MAX {
            let mut next = Some(last);
            while let Some(s) = next.take() {
                if !accept(run.len(), &s) {
                    break;
                }
                let (prev, done) = (s.prev, s.position.offset == lower + 1);
                run.push(s);
                if prev == 0 || done {
                    break;
                }
                let got = within(
                    self.timeout(),
                    "nats history read timed out",
                    ns.stream.direct_get(prev),
                )
                .await?;
                next = match got {
                    Ok(m) if m.subject.as_str() == subject => {
                        Stored::decode(&m.headers, m.payload, m.sequence)
                    }
                    Ok(_) => None,
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => None,
                    Err(e) => return Err(unavailable("nats history read failed")(&e)),
                };
            }
        } else {
            let scanned = scan(
                &ns.stream,
                subject.to_owned(),
                DeliverPolicy::All,
                Some(last.seq),
                MAX_HISTORY + 1,
                self.timeout(),
            )
            .await?;
            for (seq, m) in scanned.into_iter().rev() {
                let Some(s) = m
                    .headers
                    .as_ref()
                    .and_then(|h| Stored::decode(h, m.payload.clone(), seq))
                else {
                    break;
                };
                if !accept(run.len(), &s) {
                    break;
                }
                let done = s.position.offset == lower + 1;
                run.push(s);
                if done {
                    break;
                }
            }
        }
        Ok(run
            .into_iter()
            .rev()
            .filter_map(|s| s.publication(channel))
            .collect())
    }
}

#[async_trait]
impl HistoryStore for NatsEngine {
    /// As the memory engine: `since: None` gives the newest `limit` publications; `since: Some`
    /// those after it, or a reset. Reading a channel without an epoch creates it.
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let ns = self.namespace(channel);
        let chan = hex(channel.as_str());
        let subject = self.history_subject(ns, &chan);
        let Some(last) = self.last(ns, &subject).await? else {
            let top = match self.latest_top(ns, &chan).await? {
                Some(top) => top,
                None => StreamPosition::new(self.epoch(ns, &chan).await?, 0),
            };
            let reset = query
                .since
                .as_ref()
                .and_then(|s| resume_reset(s, &top.epoch, top.offset, top.offset + 1));
            return Ok(HistoryPage {
                publications: Vec::new(),
                top,
                reset,
            });
        };
        let top = last.position.clone();
        let lower = match &query.since {
            None => top.offset - (query.limit.min(ns.retained) as u64).min(top.offset),
            Some(since) => {
                // With `oldest` 0 only the epoch and range checks can fire.
                if let Some(reset) = resume_reset(since, &top.epoch, top.offset, 0) {
                    return Ok(HistoryPage {
                        publications: Vec::new(),
                        top,
                        reset: Some(reset),
                    });
                }
                since.offset
            }
        };
        let mut publications = if lower == top.offset || ns.retained == 0 {
            Vec::new()
        } else {
            self.collect(ns, channel, &subject, last, lower).await?
        };
        let mut reset = None;
        if let Some(since) = &query.since {
            let oldest = publications
                .first()
                .map_or(top.offset + 1, |p| p.position.offset);
            reset = resume_reset(since, &top.epoch, top.offset, oldest);
            if reset.is_some() {
                publications.clear();
            } else {
                publications.truncate(query.limit);
            }
        }
        Ok(HistoryPage {
            publications,
            top,
            reset,
        })
    }

    async fn latest(&self, channel: &ChannelName) -> Result<HistoryPage, EngineError> {
        let ns = self.namespace(channel);
        let chan = hex(channel.as_str());
        let subject = self.history_subject(ns, &chan);
        let entries = if ns.latest == LatestState::Off {
            Vec::new()
        } else {
            self.latest_entries(ns, &chan).await?
        };
        let top = match self.last(ns, &subject).await? {
            Some(last) => last.position,
            None => match entries.last() {
                Some(s) => s.position.clone(),
                None => StreamPosition::new(self.epoch(ns, &chan).await?, 0),
            },
        };
        let publications = Self::live_latest(ns, entries)
            .into_iter()
            .filter(|s| s.position.epoch == top.epoch && s.position.offset <= top.offset)
            .filter_map(|s| s.publication(channel))
            .collect();
        Ok(HistoryPage {
            publications,
            top,
            reset: None,
        })
    }
}
