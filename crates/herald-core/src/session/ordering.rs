//! Ordering: what reaches the client of each channel is every offset once, in order, or a
//! reset that says it cannot be. Replays after a resume, and filters what fan-out queued
//! (drops duplicates, fills gaps from history, announces what history no longer holds).

use super::state::{Session, MAX_HELD, MAX_REPLAY};
use super::types::Emit;
use crate::{ChannelName, HistoryPage, HistoryQuery, Outgoing, ResetReason};
use herald_protocol::{ResetChannel, StreamPosition};
use std::sync::atomic::Ordering::Relaxed;

impl Session {
    /// Emits a resume page; returns the position reached.
    pub(super) fn replay(
        &self,
        channel: &ChannelName,
        page: HistoryPage,
        out: &mut Vec<Emit>,
    ) -> StreamPosition {
        match page.reset {
            Some(reason) => {
                self.node.stats.reset(reason);
                self.node.stats.resume_resets.fetch_add(1, Relaxed);
                out.push(Emit::Reset {
                    reason,
                    channels: vec![ResetChannel {
                        channel: channel.to_string(),
                        position: page.top.clone(),
                    }],
                });
                page.top
            }
            None => {
                let position = match page.publications.last() {
                    Some(p) => p.position.clone(),
                    None => page.top,
                };
                out.extend(page.publications.into_iter().map(Emit::Publication));
                position
            }
        }
    }
    /// Filters one queued item into what the client must see: drops duplicates and items for
    /// channels no longer subscribed, fills gaps from history, and announces what cannot be
    /// recovered.
    pub async fn accept(&mut self, item: Outgoing, out: &mut Vec<Emit>) {
        let p = match item {
            Outgoing::Presence(e) => {
                if self.subs.iter().any(|s| s.channel == e.channel) {
                    out.push(Emit::Presence(e));
                }
                return;
            }
            Outgoing::Publication(p) => p,
        };
        let Some(i) = self.subs.iter().position(|s| s.channel == p.channel) else {
            // A subscribe in flight holds what arrives for its channel until it finishes.
            if let Some(joining) = self.joining(&p.channel) {
                if joining.held.len() >= MAX_HELD {
                    joining.held.clear();
                }
                joining.held.push(p);
            }
            return;
        };
        let cur = &self.subs[i].position;
        if p.position.epoch == cur.epoch {
            if p.position.offset <= cur.offset {
                return;
            }
            if p.position.offset == cur.offset + 1 {
                // Same epoch: only the offset moves (no reference count traffic per delivery).
                self.subs[i].position.offset = p.position.offset;
                out.push(Emit::Publication(p));
                return;
            }
        }
        // A gap, or a new epoch: fill from history when possible, else announce a reset.
        let since = cur.clone();
        let missing = usize::try_from(p.position.offset.saturating_sub(since.offset))
            .unwrap_or(MAX_REPLAY)
            .min(MAX_REPLAY);
        let page = self
            .node
            .history
            .read(
                &p.channel,
                HistoryQuery {
                    since: Some(since),
                    limit: missing,
                },
            )
            .await;
        let same_epoch = p.position.epoch == self.subs[i].position.epoch;
        let mut next = self.subs[i].position.offset + 1;
        let mut fill = Vec::new();
        if let Ok(page) = page {
            if same_epoch && page.reset.is_none() {
                for q in page.publications {
                    if q.position.offset == next && next < p.position.offset {
                        fill.push(Emit::Publication(q));
                        next += 1;
                    }
                }
            }
        }
        let filled = same_epoch && next == p.position.offset;
        if filled {
            out.extend(fill);
        }
        if !filled {
            let reason = if same_epoch {
                ResetReason::BeyondRetention
            } else {
                ResetReason::EpochChanged
            };
            self.node.stats.reset(reason);
            out.push(Emit::Reset {
                reason,
                channels: vec![ResetChannel {
                    channel: p.channel.to_string(),
                    position: StreamPosition::new(p.position.epoch.clone(), p.position.offset - 1),
                }],
            });
        }
        self.subs[i].position = p.position.clone();
        out.push(Emit::Publication(p));
    }
}
