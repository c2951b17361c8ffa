//! `LastSeen`: the newest position this node saw on each channel it receives from the engine,
//! where a recovery reads on from.

use crate::ChannelName;
use herald_protocol::StreamPosition;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Positions per received channel, in shards so channels do not contend.
#[derive(Debug)]
pub(super) struct LastSeen {
    shards: Box<[Mutex<HashMap<ChannelName, StreamPosition>>]>,
    hasher: RandomState,
}

impl Default for LastSeen {
    fn default() -> Self {
        Self {
            shards: (0..64).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl LastSeen {
    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, HashMap<ChannelName, StreamPosition>> {
        let i = (self.hasher.hash_one(channel.as_str()) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking `channel` from `top`, its position when this node began receiving it.
    pub(super) fn track(&self, channel: &ChannelName, top: StreamPosition) {
        self.shard(channel).insert(channel.clone(), top);
    }

    /// Stops tracking `channel`.
    pub(super) fn forget(&self, channel: &ChannelName) {
        self.shard(channel).remove(channel);
    }

    /// Records `position` as seen on `channel` unless a newer one of the same epoch was; does
    /// nothing for a channel not tracked.
    pub(super) fn saw(&self, channel: &ChannelName, position: &StreamPosition) {
        if let Some(last) = self.shard(channel).get_mut(channel) {
            if last.epoch != position.epoch || last.offset < position.offset {
                *last = position.clone();
            }
        }
    }

    /// Every tracked channel with its position.
    pub(super) fn snapshot(&self) -> Vec<(ChannelName, StreamPosition)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(c, p)| (c.clone(), p.clone())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::Epoch;

    #[test]
    fn keeps_the_newest_position_of_tracked_channels_only() {
        let seen = LastSeen::default();
        let (a, b) = (
            ChannelName::parse("a").unwrap(),
            ChannelName::parse("b").unwrap(),
        );
        let e1 = Epoch::parse("e1").unwrap();
        let at = |e: &Epoch, o| StreamPosition::new(e.clone(), o);
        seen.saw(&a, &at(&e1, 3));
        assert!(seen.snapshot().is_empty(), "untracked channels are ignored");
        seen.track(&a, at(&e1, 5));
        seen.saw(&a, &at(&e1, 4));
        seen.saw(&b, &at(&e1, 9));
        assert_eq!(
            seen.snapshot(),
            vec![(a.clone(), at(&e1, 5))],
            "older is ignored"
        );
        seen.saw(&a, &at(&e1, 7));
        assert_eq!(seen.snapshot(), vec![(a.clone(), at(&e1, 7))]);
        let e2 = Epoch::parse("e2").unwrap();
        seen.saw(&a, &at(&e2, 1));
        assert_eq!(
            seen.snapshot(),
            vec![(a.clone(), at(&e2, 1))],
            "a new epoch replaces"
        );
        seen.forget(&a);
        assert!(seen.snapshot().is_empty());
    }
}
