//! One channel's local subscribers and the ring of its recent publications that they read from.
//!
//! A publication is appended to the ring once; only the subscribers that had read everything
//! before it (the *waiting* ones) are told, by a mark in their outbox. A subscriber that is
//! still busy with earlier publications is not touched at all: when its task next drains its
//! outbox, it reads every publication from its cursor to the end of the ring in one go. So a
//! publication costs one append plus one notification per idle subscriber, not one queue push
//! per subscriber.
//!
//! The ring is bounded (messages and bytes). When an append takes it past a bound, the
//! subscribers whose cursor the dropped publications had not yet reached are evicted (close
//! code `SlowConsumer`, so they resume from history), and publications that every remaining
//! subscriber has read are dropped with them. When every subscriber has read everything, the
//! ring is emptied before the next append, so an idle channel holds nothing.
//!
//! Lock order: a topic's lock is never held while an outbox's lock is taken (notifications and
//! closes are sent after it is released); an outbox's reader takes the topic's lock while it
//! holds nothing else.

use crate::conn_id::ConnIdMap;
use crate::outbox::{OutboxLimits, Ring};
use crate::{ConnId, OutboxTx, Outgoing, Publication, Stats};
use herald_protocol::CloseCode;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One channel on this node.
#[derive(Debug)]
pub(crate) struct Topic {
    state: Mutex<State>,
    limits: OutboxLimits,
    stats: Arc<Stats>,
}

#[derive(Debug)]
struct State {
    /// Recent publications; `ring[0]` has sequence number `first`.
    ring: VecDeque<Arc<Publication>>,
    first: u64,
    bytes: usize,
    readers: ConnIdMap<Reader>,
    /// The readers whose cursor is at the end of the ring, to be told of the next append,
    /// plus `stale` entries of readers that left or re-subscribed since (telling them is
    /// harmless: their drain finds nothing to read). Leaving does not search this list, so a
    /// channel's mass disconnect costs linear time, not quadratic.
    waiting: Vec<(ConnId, OutboxTx)>,
    stale: usize,
    /// An empty vector with capacity, traded with `waiting` on each append.
    spare: Vec<(ConnId, OutboxTx)>,
}

#[derive(Debug)]
struct Reader {
    tx: OutboxTx,
    /// Sequence number of the next publication this reader has not read.
    next: u64,
}

/// What an append asks of the caller once the topic's lock is released.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// Subscribers the publication will reach.
    pub(crate) readers: usize,
    /// Idle subscribers to tell.
    pub(crate) notify: Vec<(ConnId, OutboxTx)>,
    /// Subscribers that fell too far behind.
    pub(crate) evicted: Vec<OutboxTx>,
}

impl State {
    fn end(&self) -> u64 {
        self.first + self.ring.len() as u64
    }

    /// Whether every reader has read everything (exact: `stale` counts every entry of
    /// `waiting` that is not a caught-up reader).
    fn all_caught_up(&self) -> bool {
        self.waiting.len().checked_sub(self.stale) == Some(self.readers.len())
    }

    /// Rebuilds `waiting` from the readers once most of it is stale, so it stays within about
    /// twice the number of readers. Called with `waiting` and `readers` in their final state.
    fn compact(&mut self) {
        if self.stale > 16 && self.stale * 2 > self.waiting.len() {
            let end = self.end();
            self.waiting.clear();
            self.waiting.extend(
                self.readers
                    .iter()
                    .filter(|(_, r)| r.next == end)
                    .map(|(c, r)| (*c, r.tx.clone())),
            );
            self.stale = 0;
        }
    }

    fn pop_front(&mut self) {
        if let Some(p) = self.ring.pop_front() {
            self.bytes -= p.queued_bytes();
            self.first += 1;
        }
    }
}

impl Ring for Topic {
    fn read(&self, conn: ConnId, out: &mut Vec<Outgoing>) -> Result<(), CloseCode> {
        self.read_from(conn, out)
    }
}

impl Topic {
    pub(crate) fn new(limits: OutboxLimits, stats: Arc<Stats>) -> Self {
        Self {
            state: Mutex::new(State {
                ring: VecDeque::new(),
                first: 0,
                bytes: 0,
                readers: ConnIdMap::default(),
                waiting: Vec::new(),
                stale: 0,
                spare: Vec::new(),
            }),
            limits,
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a reader whose cursor starts at the end of the ring (it reads only what comes
    /// next). Returns the number of readers.
    pub(crate) fn add(&self, conn: ConnId, tx: OutboxTx) -> usize {
        let mut s = self.lock();
        let next = s.end();
        if let Some(old) = s.readers.insert(
            conn,
            Reader {
                tx: tx.clone(),
                next,
            },
        ) {
            if old.next == next {
                // Its old entry in `waiting` no longer counts.
                s.stale += 1;
            }
        }
        s.waiting.push((conn, tx));
        s.compact();
        s.readers.len()
    }

    /// Removes a reader. Returns the number of readers left.
    pub(crate) fn remove(&self, conn: ConnId) -> usize {
        let mut s = self.lock();
        if let Some(r) = s.readers.remove(&conn) {
            if r.next == s.end() {
                s.stale += 1;
                s.compact();
            }
        }
        if s.readers.is_empty() {
            s.first = s.end();
            s.ring.clear();
            s.bytes = 0;
            s.waiting.clear();
            s.stale = 0;
        }
        s.readers.len()
    }

    /// Number of readers.
    pub(crate) fn len(&self) -> usize {
        self.lock().readers.len()
    }

    /// Every reader's outbox.
    pub(crate) fn outboxes(&self) -> Vec<OutboxTx> {
        self.lock().readers.values().map(|r| r.tx.clone()).collect()
    }

    /// Appends `p`. The caller notifies and evicts as the result says, after this returns.
    pub(crate) fn append(&self, p: &Arc<Publication>) -> Appended {
        let mut s = self.lock();
        let s = &mut *s;
        if s.all_caught_up() {
            // Everyone has read everything: nothing in the ring is needed any more.
            s.first = s.end();
            s.ring.clear();
            s.bytes = 0;
        }
        s.bytes += p.queued_bytes();
        s.ring.push_back(p.clone());
        let mut evicted = Vec::new();
        if s.ring.len() > self.limits.messages.max(1)
            || (s.bytes > self.limits.bytes && s.ring.len() > 1)
        {
            while s.ring.len() > self.limits.messages.max(1)
                || (s.bytes > self.limits.bytes && s.ring.len() > 1)
            {
                s.pop_front();
            }
            // Readers whose unread publications were just dropped cannot keep up.
            let first = s.first;
            let mut lowest = s.end();
            s.readers.retain(|_, r| {
                if r.next < first {
                    evicted.push(r.tx.clone());
                    false
                } else {
                    lowest = lowest.min(r.next);
                    true
                }
            });
            // Nobody needs what every remaining reader has read.
            while s.first < lowest {
                s.pop_front();
            }
        }
        let readers = s.readers.len();
        std::mem::swap(&mut s.waiting, &mut s.spare);
        s.stale = 0;
        let notify = std::mem::take(&mut s.spare);
        Appended {
            readers,
            notify,
            evicted,
        }
    }

    /// Hands back the emptied notification list, so its room serves the next append.
    pub(crate) fn recycle(&self, mut list: Vec<(ConnId, OutboxTx)>) {
        list.clear();
        let mut s = self.lock();
        if s.spare.capacity() < list.capacity() {
            s.spare = list;
        }
    }

    /// Moves every publication `conn` has not read into `out` and waits for the next one.
    /// Fails with `SlowConsumer` if some were dropped before it read them.
    fn read_from(&self, conn: ConnId, out: &mut Vec<Outgoing>) -> Result<(), CloseCode> {
        let mut s = self.lock();
        let s = &mut *s;
        let end = s.end();
        let first = s.first;
        let Some(r) = s.readers.get_mut(&conn) else {
            // Unsubscribed since it was told.
            return Ok(());
        };
        if r.next == end {
            // Already waiting (told of a publication it read in an earlier pass).
            return Ok(());
        }
        if r.next < first {
            let r = s.readers.remove(&conn);
            drop(r);
            self.stats.slow_consumer_evictions.fetch_add(1, Relaxed);
            return Err(CloseCode::SlowConsumer);
        }
        let from = (r.next - first) as usize;
        out.extend(
            s.ring
                .range(from..)
                .map(|p| Outgoing::Publication(p.clone())),
        );
        r.next = end;
        s.waiting.push((conn, r.tx.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{outbox, ChannelName, EventName};
    use herald_protocol::{Epoch, StreamPosition};
    use serde_json::value::RawValue;

    fn publication(n: u64) -> Arc<Publication> {
        Arc::new(Publication::new(
            ChannelName::parse("c").unwrap(),
            EventName::message(),
            RawValue::from_string("1".into()).unwrap(),
            StreamPosition::new(Epoch::parse("e").unwrap(), n),
            0,
        ))
    }

    #[test]
    fn leaving_and_rejoining_keeps_the_waiting_list_exact_and_bounded() {
        let topic = Topic::new(OutboxLimits::default(), Arc::new(Stats::default()));
        let conns: Vec<ConnId> = (0..1000).map(|_| ConnId::random()).collect();
        let mut outboxes = Vec::new();
        for &c in &conns {
            let (tx, rx) = outbox(c, OutboxLimits::default());
            topic.add(c, tx.clone());
            // Subscribing twice leaves one reader.
            topic.add(c, tx);
            outboxes.push(rx);
        }
        for &c in &conns[..900] {
            topic.remove(c);
        }
        {
            let s = topic.lock();
            assert_eq!(s.readers.len(), 100);
            assert!(s.all_caught_up());
            assert!(s.waiting.len() <= 2 * 100 + 17, "{}", s.waiting.len());
        }
        // One reader stays behind; the others read: the ring is kept for it, not cleared.
        let appended = topic.append(&publication(1));
        assert_eq!(appended.readers, 100);
        let mut out = Vec::new();
        for &c in &conns[901..] {
            topic.read(c, &mut out).unwrap();
        }
        assert_eq!(out.len(), 99);
        assert!(!topic.lock().all_caught_up());
        topic.append(&publication(2));
        out.clear();
        topic.read(conns[900], &mut out).unwrap();
        assert_eq!(out.len(), 2, "the reader that stayed behind gets both");
    }
}
