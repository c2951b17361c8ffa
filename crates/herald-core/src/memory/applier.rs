//! The applier task: keeps, fans out and acknowledges what the writer thread wrote, in the
//! order it was written, on the runtime (see `writer.rs` for why the writer rings it through a
//! socket).

use super::channel::Gone;
use super::writer::{lock, tidy, Applied, Op, StoreCounters, Then};
use crate::{EngineError, Hub, Outgoing};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use tokio::time::Instant;

/// The applier task: makes written publications visible, in the order they were written.
/// It runs on the runtime, so the subscribers it wakes are scheduled as cheaply as by a
/// publishing task.
pub(super) struct Applier {
    pub(super) hub: Arc<Hub>,
    pub(super) counters: Arc<StoreCounters>,
    /// The writer's queue, for the records of what left memory.
    pub(super) queue: mpsc::Sender<Op>,
}

impl Applier {
    pub(super) async fn run(
        self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Applied>,
        bell: tokio::net::UnixStream,
    ) {
        let mut rings = [0u8; 256];
        loop {
            // Rings read before the queue is: a group sent before a ring is always seen.
            while bell.try_read(&mut rings).is_ok_and(|n| n > 0) {}
            loop {
                match rx.try_recv() {
                    Ok(batch) => self.apply(batch),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if bell.readable().await.is_err() {
                return;
            }
        }
    }

    fn apply(&self, batch: Applied) {
        if let Some(reply) = batch.rolled_back {
            let mut list = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (op, stale) in batch.ops.iter().zip(&batch.stale) {
                if let (Then::Publish { slot, .. }, false) = (&op.then, stale) {
                    let key = Arc::as_ptr(slot) as usize;
                    if seen.insert(key) {
                        let mut st = lock(slot);
                        st.next = st.top;
                        st.generation = st.generation.wrapping_add(1);
                        list.push((key, slot.clone(), st.generation));
                    }
                }
            }
            let _ = reply.send(list);
        }
        for (op, stale) in batch.ops.into_iter().zip(batch.stale) {
            let failed = if stale {
                Some("an earlier write on this channel failed")
            } else {
                batch.failed.as_deref()
            };
            self.finish(op, failed);
        }
    }

    fn finish(&self, op: Op, failed: Option<&str>) {
        let refused = |e: &str| EngineError::Storage(e.to_owned());
        match op.then {
            Then::Nothing => {}
            Then::Barrier(reply) => {
                let _ = reply.send(());
            }
            Then::Publish {
                slot,
                generation: _,
                publication,
                retention,
                expires,
                reply,
                once,
                _permit,
            } => {
                if let Some(e) = failed {
                    self.counters.refused.fetch_add(1, Relaxed);
                    // Its key no longer names a position: a retry publishes.
                    if let Some((map, key)) = once {
                        let mut map = lock(&map);
                        let mine = map.get(&key).is_some_and(|v| {
                            v.bytes.split(|b| *b == b' ').nth(1).is_some_and(|o| {
                                o == publication.position.offset.to_string().as_bytes()
                            })
                        });
                        if mine {
                            map.remove(&key);
                        }
                    }
                    lock(&slot).waiting -= 1;
                    let _ = reply.send(Err(refused(e)));
                    return;
                }
                {
                    let mut st = lock(&slot);
                    st.waiting -= 1;
                    st.durable = true;
                    let mut gone = Gone::default();
                    st.keep(&publication, retention, expires, Instant::now(), &mut gone);
                    // Under the channel's lock, as everywhere: delivery order is offset order.
                    self.hub.fan_out(
                        &publication.channel,
                        &Outgoing::Publication(publication.clone()),
                    );
                    // Queued under the lock: before the sweep can queue forgetting the channel.
                    tidy(&self.queue, &publication.channel, gone);
                }
                self.counters
                    .commit_waits
                    .observe(publication.accepted.elapsed());
                let _ = reply.send(Ok(publication));
            }
            Then::Durable {
                slot,
                carries,
                reply,
            } => {
                let mut st = lock(&slot);
                let result = match failed {
                    Some(e) => {
                        if !st.durable {
                            st.durable_queued = false;
                        }
                        Err(refused(e))
                    }
                    None if carries => {
                        st.durable = true;
                        Ok(())
                    }
                    // The op that carried the epoch was in an earlier, failed, transaction.
                    None if !st.durable => Err(EngineError::Storage(
                        "the channel's epoch could not be written".into(),
                    )),
                    None => Ok(()),
                };
                drop(st);
                let _ = reply.send(result);
            }
            Then::State {
                map,
                key,
                value,
                reply,
                _permit,
            } => {
                if let Some(e) = failed {
                    let _ = reply.send(Err(refused(e)));
                    return;
                }
                let mut map = lock(&map);
                match value {
                    Some(v) => {
                        map.insert(key, v);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
                drop(map);
                let _ = reply.send(Ok(()));
            }
        }
    }
}
