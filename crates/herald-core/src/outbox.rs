//! The per-connection outbox: what the connection task drains in one go and writes in one
//! batch. Publications are not queued here one by one: the channel's topic (a [`Ring`]) marks the outbox
//! *ready* for that channel, and the drain reads every unread publication from the topic's ring.
//! Other items (presence changes) are queued here, bounded in messages and bytes; a push past
//! the bound fails with `Full` and the hub evicts the connection with a reconnect close code.
//! Closing the outbox (eviction, operator disconnect, shutdown) wakes the connection task at
//! once.
//!
//! The receiver's waker lives in the queue, under the queue's one lock: a push takes the lock
//! once and, when the queue was empty, takes the waker out with it. (A `tokio::sync::Notify`
//! beside the queue costs a second set of atomics per delivery and a waiter node in every
//! connection's future.)

use crate::{ConnId, PresenceEvent, Publication};
use herald_protocol::CloseCode;
use serde::{Deserialize, Serialize};
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Most queued items whose room an outbox keeps between deliveries (4 KiB): a burst beyond it
/// is freed once drained, so a connection that once lagged does not hold its peak.
const KEPT_CAPACITY: usize = 256;

/// How far a connection may fall behind: the bound of a channel's ring (publications a reader
/// has not read) and of a connection's queue of other items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxLimits {
    /// Most messages.
    pub messages: usize,
    /// Most bytes (approximate encoded size).
    pub bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            messages: 1024,
            bytes: 4 * 1024 * 1024,
        }
    }
}

/// What fan-out queues for a connection: shared items, encoded on first use.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A publication.
    Publication(Arc<Publication>),
    /// A presence change.
    Presence(Arc<PresenceEvent>),
}

impl Outgoing {
    fn bytes(&self) -> usize {
        match self {
            Self::Publication(p) => p.queued_bytes(),
            Self::Presence(_) => 256,
        }
    }
}

/// Why a push did not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The outbox is at its bound: the connection is too slow.
    Full,
    /// The connection is closed or closing.
    Closed,
}

/// What a ready mark points at: a channel's ring of recent publications (herald-core's
/// `Topic`), read from this connection's cursor. A trait, so the outbox does not depend on the
/// topic that depends on it.
pub(crate) trait Ring: Send + Sync + std::fmt::Debug {
    /// Appends every publication `conn` has not read to `out`; an error closes the connection.
    fn read(&self, conn: ConnId, out: &mut Vec<Outgoing>) -> Result<(), CloseCode>;
}

#[derive(Debug)]
struct Queue {
    items: Vec<Outgoing>,
    bytes: usize,
    /// Channels with publications this connection has not read.
    ready: Vec<Arc<dyn Ring>>,
    closed: Option<CloseCode>,
    receiver_gone: bool,
    /// The receiving task, while it waits on an empty queue.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    limits: OutboxLimits,
    conn: ConnId,
}

/// The sending side, held by the hub for each subscription.
#[derive(Debug, Clone)]
pub struct OutboxTx {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the connection task.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
    /// The ready list taken from the queue, read outside its lock (kept for its room).
    ready: Vec<Arc<dyn Ring>>,
}

/// A new outbox with `limits` for the connection `conn`.
pub fn outbox(conn: ConnId, limits: OutboxLimits) -> (OutboxTx, Outbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: Vec::new(),
            bytes: 0,
            ready: Vec::new(),
            closed: None,
            receiver_gone: false,
            waker: None,
        }),
        limits,
        conn,
    });
    (
        OutboxTx {
            shared: shared.clone(),
        },
        Outbox {
            shared,
            ready: Vec::new(),
        },
    )
}

fn close(shared: &Shared, code: CloseCode) {
    let waker = {
        let mut q = lock(shared);
        if q.closed.is_some() {
            return;
        }
        q.closed = Some(code);
        q.items.clear();
        q.ready.clear();
        q.bytes = 0;
        q.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    // A poisoned queue only means a panic elsewhere; its data is still consistent.
    shared
        .queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OutboxTx {
    /// Queues `item` without waiting.
    pub fn push(&self, item: Outgoing) -> Result<(), PushError> {
        let size = item.bytes();
        let waker = {
            let mut q = lock(&self.shared);
            if q.closed.is_some() || q.receiver_gone {
                return Err(PushError::Closed);
            }
            let limits = self.shared.limits;
            if q.items.len() >= limits.messages
                || (q.bytes + size > limits.bytes && !q.items.is_empty())
            {
                return Err(PushError::Full);
            }
            q.bytes += size;
            q.items.push(item);
            // Only the first item wakes the receiver: it drains everything queued by then, and
            // a later item finds the queue non-empty, so a wake-up is already on its way.
            q.waker.take()
        };
        // Woken outside the lock, so the receiver never finds it held.
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Marks `topic` as holding publications this connection has not read. Returns false when
    /// the connection is closed.
    pub(crate) fn notify(&self, topic: Arc<dyn Ring>) -> bool {
        let waker = {
            let mut q = lock(&self.shared);
            if q.closed.is_some() || q.receiver_gone {
                return false;
            }
            let first = q.items.is_empty() && q.ready.is_empty();
            q.ready.push(topic);
            if first {
                q.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Asks the connection to close with `code`; queued items are dropped. The first reason wins.
    pub fn close(&self, code: CloseCode) {
        close(&self.shared, code);
    }
    /// Whether both sides belong to the same outbox.
    pub fn same(&self, other: &OutboxTx) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Outbox {
    /// Waits until something is queued, then moves all of it into `buf` (best passed empty:
    /// then the queue's vector and `buf` trade places). Returns the close code once the outbox
    /// was closed.
    pub async fn recv(&mut self, buf: &mut Vec<Outgoing>) -> Result<(), CloseCode> {
        poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// [`Self::recv`] as a poll: moves everything queued into `buf`, or registers the task to
    /// be woken by the next push or close.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<Outgoing>,
    ) -> Poll<Result<(), CloseCode>> {
        loop {
            let mut q = lock(&self.shared);
            if let Some(code) = q.closed {
                return Poll::Ready(Err(code));
            }
            if q.items.is_empty() && q.ready.is_empty() {
                match &q.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => q.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            if !q.items.is_empty() {
                if buf.is_empty() {
                    // The two vectors trade places: no item is copied, and each keeps its
                    // capacity for the next round unless that capacity outgrew everyday use.
                    std::mem::swap(buf, &mut q.items);
                    if q.items.capacity() > KEPT_CAPACITY {
                        q.items = Vec::new();
                    }
                } else {
                    buf.append(&mut q.items);
                }
                q.bytes = 0;
            }
            std::mem::swap(&mut q.ready, &mut self.ready);
            drop(q);
            // Each topic is read with no other lock held.
            for topic in self.ready.drain(..) {
                if let Err(code) = topic.read(self.shared.conn, buf) {
                    close(&self.shared, code);
                    return Poll::Ready(Err(code));
                }
            }
            if !buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            // Every mark was stale (the channel was left since): wait again.
        }
    }

    /// The close code, if the outbox was closed.
    pub fn closed(&self) -> Option<CloseCode> {
        lock(&self.shared).closed
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = lock(&self.shared);
        q.receiver_gone = true;
        q.items.clear();
        q.ready.clear();
        q.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelName, EventName};
    use herald_protocol::{Epoch, StreamPosition};
    use serde_json::value::RawValue;

    fn item(n: u64) -> Outgoing {
        Outgoing::Publication(Arc::new(Publication::new(
            ChannelName::parse("c").unwrap(),
            EventName::message(),
            RawValue::from_string("1".into()).unwrap(),
            StreamPosition::new(Epoch::parse("e").unwrap(), n),
            0,
        )))
    }

    #[tokio::test]
    async fn bounded_by_messages_and_drains_in_one_batch() {
        let (tx, mut rx) = outbox(
            ConnId::random(),
            OutboxLimits {
                messages: 2,
                bytes: 1 << 20,
            },
        );
        tx.push(item(1)).unwrap();
        tx.push(item(2)).unwrap();
        assert_eq!(tx.push(item(3)), Err(PushError::Full));
        let mut buf = Vec::new();
        rx.recv(&mut buf).await.unwrap();
        assert_eq!(buf.len(), 2);
        tx.push(item(3)).unwrap();
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let (tx, _rx) = outbox(
            ConnId::random(),
            OutboxLimits {
                messages: 100,
                bytes: 200,
            },
        );
        tx.push(item(1)).unwrap();
        assert_eq!(tx.push(item(2)), Err(PushError::Full));
    }

    #[tokio::test]
    async fn close_wakes_the_receiver_and_refuses_pushes() {
        let (tx, mut rx) = outbox(ConnId::random(), OutboxLimits::default());
        tx.push(item(1)).unwrap();
        tx.close(CloseCode::SlowConsumer);
        let mut buf = Vec::new();
        assert_eq!(rx.recv(&mut buf).await, Err(CloseCode::SlowConsumer));
        assert!(buf.is_empty());
        assert_eq!(tx.push(item(2)), Err(PushError::Closed));
        drop(rx);
    }

    #[tokio::test]
    async fn dropped_receiver_is_reported_closed() {
        let (tx, rx) = outbox(ConnId::random(), OutboxLimits::default());
        drop(rx);
        assert_eq!(tx.push(item(1)), Err(PushError::Closed));
    }
}
