//! One channel's state in the embedded engine: epoch, offsets, the history ring and latest
//! state, and the retention rules applied to them.

use crate::{KeepLatest, LatestState, Publication, Retention, MAX_LATEST_EVENTS};
use herald_protocol::{Epoch, StreamPosition};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct ChannelState {
    pub(super) epoch: Epoch,
    /// Newest committed offset: what reads and positions show.
    pub(super) top: u64,
    /// Newest offset handed out; above `top` while publications wait for their commit.
    pub(super) next: u64,
    /// Bumped when a failed write hands the offsets above `top` back: publications queued
    /// under an older generation fail without being written.
    pub(super) generation: u32,
    /// Publications waiting for their commit.
    pub(super) waiting: u32,
    pub(super) ring: VecDeque<(Instant, Arc<Publication>)>,
    pub(super) touched: Instant,
    /// Latest state. Boxed: most channels keep none.
    pub(super) latest: Option<Box<Latest>>,
    /// Counted in the engine's channels keeping latest state.
    pub(super) latest_counted: bool,
    /// The epoch is in the journal (always, without one).
    pub(super) durable: bool,
    /// An entry making the epoch durable is queued.
    pub(super) durable_queued: bool,
}

/// A channel's latest state, oldest first, each with its expiry (`None`: until replaced) and
/// the mode it was kept with.
#[derive(Debug, Default)]
pub(super) struct Latest(pub(super) Vec<(Option<Instant>, LatestState, Arc<Publication>)>);

/// What left a channel's memory, for the journal to drop too.
#[derive(Debug, Default)]
pub(super) struct Gone {
    /// History at or below this offset left.
    pub(super) through: Option<u64>,
    /// Latest-state entries at these offsets left.
    pub(super) latest: Vec<u64>,
}

impl Gone {
    pub(super) fn is_empty(&self) -> bool {
        self.through.is_none() && self.latest.is_empty()
    }
}

impl ChannelState {
    pub(super) fn new(epoch: Epoch, top: u64, durable: bool) -> Self {
        Self {
            epoch,
            top,
            next: top,
            generation: 0,
            waiting: 0,
            ring: VecDeque::new(),
            touched: Instant::now(),
            latest: None,
            latest_counted: false,
            durable,
            durable_queued: false,
        }
    }

    pub(super) fn trim_expired(&mut self, now: Instant, gone: &mut Gone) {
        while let Some((exp, p)) = self.ring.front() {
            if *exp > now {
                break;
            }
            gone.through = Some(p.position.offset);
            self.ring.pop_front();
        }
        if let Some(latest) = &mut self.latest {
            latest.0.retain(|(exp, _, p)| {
                let keep = exp.is_none_or(|e| e > now);
                if !keep {
                    gone.latest.push(p.position.offset);
                }
                keep
            });
        }
    }

    /// Whether the channel keeps latest state (after [`Self::trim_expired`]).
    pub(super) fn keeps_latest(&self) -> bool {
        self.latest.as_ref().is_some_and(|l| !l.0.is_empty())
    }

    /// Whether publications wait for their commit.
    pub(super) fn pending(&self) -> bool {
        self.waiting > 0
    }

    /// Records `p` as latest state per `keep`, noting in `gone` what it replaced.
    pub(super) fn keep_latest(
        &mut self,
        keep: KeepLatest,
        p: &Arc<Publication>,
        expires: Option<Instant>,
        gone: &mut Gone,
    ) {
        let latest = &mut self.latest.get_or_insert_with(Box::default).0;
        let mut drop = |q: &Arc<Publication>| gone.latest.push(q.position.offset);
        if keep.mode == LatestState::Last {
            latest.iter().for_each(|(_, _, q)| drop(q));
            latest.clear();
        }
        latest.retain(|(_, _, q)| {
            let keep = q.event != p.event;
            if !keep {
                drop(q);
            }
            keep
        });
        if latest.len() >= MAX_LATEST_EVENTS {
            // Oldest first: the name published longest ago gives way.
            drop(&latest.remove(0).2);
        }
        latest.push((expires, keep.mode, p.clone()));
    }

    /// Keeps the committed publication `p` per `retention` (its history entry expiring at
    /// `expires`) and makes it the channel's newest offset. Notes in `gone` what it pushed out.
    pub(super) fn keep(
        &mut self,
        p: &Arc<Publication>,
        retention: Retention,
        expires: Instant,
        now: Instant,
        gone: &mut Gone,
    ) {
        self.top = p.position.offset;
        self.touched = now;
        if retention.size > 0 {
            self.ring.push_back((expires, p.clone()));
            while self.ring.len() > retention.size {
                if let Some((_, q)) = self.ring.pop_front() {
                    gone.through = Some(q.position.offset);
                }
            }
        }
        if retention.latest.mode != LatestState::Off {
            let expires = retention.latest.ttl.map(|t| now + t);
            self.keep_latest(retention.latest, p, expires, gone);
        }
    }

    pub(super) fn position(&self) -> StreamPosition {
        StreamPosition::new(self.epoch.clone(), self.top)
    }
}
