//! The embedded engine's history store: reads from memory (the journal is never read after
//! start-up).

use super::channel::{ChannelState, Gone};
use super::engine::MemoryEngine;
use super::writer::{lock, Slot};
use crate::{ChannelName, EngineError, HistoryPage, HistoryQuery, HistoryStore};
use async_trait::async_trait;
use tokio::time::Instant;

#[async_trait]
impl HistoryStore for MemoryEngine {
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let slot = self.readable(channel).await?;
        let mut st = lock(&slot);
        self.trim(channel, &mut st);
        let top = st.position();
        let Some(since) = query.since else {
            let skip = st.ring.len().saturating_sub(query.limit);
            let publications = st.ring.iter().skip(skip).map(|(_, p)| p.clone()).collect();
            return Ok(HistoryPage {
                publications,
                top,
                reset: None,
            });
        };
        let oldest = st
            .ring
            .front()
            .map_or(st.top + 1, |(_, p)| p.position.offset);
        let reset = crate::resume_reset(&since, &st.epoch, st.top, oldest);
        let publications = if reset.is_some() {
            Vec::new()
        } else {
            st.ring
                .iter()
                .filter(|(_, p)| p.position.offset > since.offset)
                .take(query.limit)
                .map(|(_, p)| p.clone())
                .collect()
        };
        Ok(HistoryPage {
            publications,
            top,
            reset,
        })
    }

    async fn latest(&self, channel: &ChannelName) -> Result<HistoryPage, EngineError> {
        let slot = self.readable(channel).await?;
        let mut st = lock(&slot);
        self.trim(channel, &mut st);
        let publications = st.latest.as_ref().map_or_else(Vec::new, |l| {
            l.0.iter().map(|(_, _, p)| p.clone()).collect()
        });
        Ok(HistoryPage {
            publications,
            top: st.position(),
            reset: None,
        })
    }
}

impl MemoryEngine {
    /// `channel`'s slot, once its epoch is durable (a position read from it survives a crash).
    async fn readable(&self, channel: &ChannelName) -> Result<Slot, EngineError> {
        let slot = self.slot(channel)?;
        self.make_durable(channel, &slot).await?;
        Ok(slot)
    }

    /// Drops what expired from `st`, and from the journal.
    fn trim(&self, channel: &ChannelName, st: &mut ChannelState) {
        let mut gone = Gone::default();
        st.trim_expired(Instant::now(), &mut gone);
        if let Some(w) = &self.writer {
            w.tidy(channel, gone);
        }
    }
}
