//! The embedded engine's writer thread: takes every record queued since its last commit, writes
//! them to the journal as one transaction (a group commit), and only then makes the
//! publications visible — kept in memory, fanned out, acknowledged — in the order they were
//! queued, which per channel is offset order.
//!
//! A publication therefore never reaches a subscriber or its publisher before it is on disk: a
//! node killed at any moment restarts with every position it ever handed out.

use super::channel::{ChannelState, Gone};
use super::journal::{Entry, Journal, StateValue};
use crate::{EngineError, Hub, Publication, Retention};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most records in one transaction.
const MAX_BATCH: usize = 4096;
/// Most publications and state writes waiting for the writer; publishers wait beyond it.
const MAX_PENDING: usize = 8192;
/// Most records that left memory kept for the next transaction while writes fail; beyond it
/// they are dropped, and the next start-up trims what they named.
const MAX_CARRY: usize = 100_000;

pub(super) type Slot = Arc<Mutex<ChannelState>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The engine's state-store values: key → value.
pub(super) type StateMap = Mutex<HashMap<(String, String), StateValue>>;

/// What to do once a queued record is committed (or failed).
#[derive(Debug)]
pub(super) enum Then {
    /// Nothing: the record only tidies the journal.
    Nothing,
    /// Keep, fan out and acknowledge a publication.
    Publish {
        slot: Slot,
        /// The channel's generation when the offset was taken.
        generation: u32,
        publication: Arc<Publication>,
        retention: Retention,
        expires: Instant,
        reply: oneshot::Sender<Result<Arc<Publication>, EngineError>>,
        /// Its idempotency key's record, dropped if the write fails.
        once: Option<(Arc<StateMap>, (String, String))>,
        _permit: OwnedSemaphorePermit,
    },
    /// Fires once everything queued before it is applied.
    Barrier(oneshot::Sender<()>),
    /// The channel's epoch is durable once this commits (when the op carries the entry) or
    /// already was (when an earlier op did).
    Durable {
        slot: Slot,
        /// The op carries the entry making the epoch durable.
        carries: bool,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Apply a state-store change.
    State {
        map: Arc<StateMap>,
        key: (String, String),
        value: Option<StateValue>,
        reply: oneshot::Sender<Result<(), EngineError>>,
        _permit: OwnedSemaphorePermit,
    },
}

/// A queued record and its sequel.
#[derive(Debug)]
pub(super) struct Op {
    pub(super) entry: Option<Entry>,
    pub(super) then: Then,
}

/// Counters of the journal, for `/api/stats` and `/metrics`.
#[derive(Debug, Default)]
pub(super) struct StoreCounters {
    pub(super) commits: AtomicU64,
    pub(super) entries: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) refused: AtomicU64,
    /// From a publication's offset to its commit (the publish's wait for the disk).
    pub(super) commit_waits: crate::Histogram,
}

/// The engine's side of the writer: queues records.
#[derive(Debug)]
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    admit: Arc<Semaphore>,
    pub(super) counters: Arc<StoreCounters>,
    /// Stops the writer when the engine goes away without a shutdown.
    stop: CancellationToken,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The engine refuses because its writer stopped.
const STOPPED: EngineError = EngineError::Unavailable("the node is shutting down");

impl Writer {
    /// Starts the writer thread on `journal` and its applier task (on the current tokio
    /// runtime), delivering into `hub`. Both stop once `shutdown` is cancelled (or the writer
    /// is dropped) and the queue is written; `done` fires when the journal is closed and every
    /// written publication delivered.
    pub(super) fn start(
        journal: Box<dyn Journal>,
        hub: Arc<Hub>,
        shutdown: &CancellationToken,
        done: oneshot::Sender<()>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let (apply_tx, apply_rx) = tokio::sync::mpsc::unbounded_channel();
        let counters = Arc::new(StoreCounters::default());
        let stop = shutdown.child_token();
        // The writer rings the applier through a socket pair rather than by waking its task:
        // a wake from outside the runtime queues behind every subscriber task a fan-out
        // woke (one round of all of them per group), while readiness from the runtime's own
        // I/O driver is scheduled at once.
        let (ring, bell) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        ring.set_nonblocking(true).expect("a non-blocking socket");
        bell.set_nonblocking(true).expect("a non-blocking socket");
        let bell = tokio::net::UnixStream::from_std(bell).expect("registering the store's bell");
        let applier = super::applier::Applier {
            hub,
            counters: counters.clone(),
            queue: tx.clone(),
        };
        tokio::spawn(async move {
            applier.run(apply_rx, bell).await;
            let _ = done.send(());
        });
        let thread = Thread {
            journal,
            rx,
            counters: counters.clone(),
            shutdown: stop.clone(),
            carry: Vec::new(),
            rolled_back: HashMap::new(),
            apply: apply_tx,
            ring,
        };
        std::thread::Builder::new()
            .name("herald-store".into())
            .spawn(move || thread.run())
            .expect("spawning the store's writer thread");
        Self {
            tx,
            admit: Arc::new(Semaphore::new(MAX_PENDING)),
            counters,
            stop,
        }
    }

    /// Waits for room in the queue (backpressure on publishers).
    pub(super) async fn admit(&self) -> Result<OwnedSemaphorePermit, EngineError> {
        self.admit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| STOPPED)
    }

    /// Queues `op`; never blocks (called under a channel's lock, so queue order is offset order).
    pub(super) fn push(&self, op: Op) -> Result<(), EngineError> {
        self.tx.send(op).map_err(|_| STOPPED)
    }

    /// Queues records that only tidy the journal.
    pub(super) fn tidy(&self, channel: &crate::ChannelName, gone: Gone) {
        tidy(&self.tx, channel, gone);
    }
}

/// Queues on `tx` the records of what left `channel`'s memory.
pub(super) fn tidy(tx: &mpsc::Sender<Op>, channel: &crate::ChannelName, gone: Gone) {
    {
        if gone.is_empty() {
            return;
        }
        if let Some(through) = gone.through {
            let _ = tx.send(Op {
                entry: Some(Entry::Trim {
                    channel: channel.clone(),
                    through,
                }),
                then: Then::Nothing,
            });
        }
        for offset in gone.latest {
            let _ = tx.send(Op {
                entry: Some(Entry::DropLatest {
                    channel: channel.clone(),
                    offset,
                }),
                then: Then::Nothing,
            });
        }
    }
}

/// A written (or failed) group on its way to the applier.
#[derive(Debug)]
pub(super) struct Applied {
    pub(super) ops: Vec<Op>,
    /// Per op: it took its offset before a failed write handed it back.
    pub(super) stale: Vec<bool>,
    /// Why the write failed.
    pub(super) failed: Option<String>,
    /// After a failed write: where the applier sends the channels it handed offsets back for.
    pub(super) rolled_back: Option<mpsc::Sender<Vec<(usize, Slot, u32)>>>,
}

/// The writer thread's state.
struct Thread {
    journal: Box<dyn Journal>,
    rx: mpsc::Receiver<Op>,
    counters: Arc<StoreCounters>,
    shutdown: CancellationToken,
    /// Tidying records of a failed write, for the next one.
    carry: Vec<Entry>,
    /// Channels whose offsets a failed write handed back, with their new generation, until
    /// every publication queued before that has been seen.
    rolled_back: HashMap<usize, (Slot, u32)>,
    apply: tokio::sync::mpsc::UnboundedSender<Applied>,
    /// Rings the applier once a group is on its way.
    ring: std::os::unix::net::UnixStream,
}

impl Thread {
    fn hand_over(&mut self, applied: Applied) -> bool {
        let sent = self.apply.send(applied).is_ok();
        // A full socket means the applier has rings to read already.
        let _ = std::io::Write::write(&mut self.ring, &[1]);
        sent
    }

    fn run(mut self) {
        let mut ops = Vec::new();
        loop {
            let wait = if self.carry.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(5)
            };
            match self.rx.recv_timeout(wait) {
                Ok(op) => ops.push(op),
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut drained = false;
            while ops.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => {
                        drained = true;
                        break;
                    }
                }
            }
            if !ops.is_empty() || !self.carry.is_empty() {
                self.commit(std::mem::take(&mut ops), drained);
            }
        }
        // Whatever was queued before the last sender saw the shutdown.
        while let Ok(op) = self.rx.try_recv() {
            ops.push(op);
        }
        if !ops.is_empty() || !self.carry.is_empty() {
            self.commit(ops, true);
        }
        self.journal.close();
        // Dropping `apply` lets the applier finish what was written, then report done.
    }

    /// Writes the carried records and `ops`' entries as one transaction, then hands `ops` to
    /// the applier. `drained`: the queue was empty after `ops` were taken.
    fn commit(&mut self, mut ops: Vec<Op>, drained: bool) {
        // Publications that took their offset before a failed write handed it back are
        // neither written nor delivered: their offsets belong to later publications now.
        let mut stale = vec![false; ops.len()];
        if !self.rolled_back.is_empty() {
            for (i, op) in ops.iter_mut().enumerate() {
                if let Then::Publish {
                    slot, generation, ..
                } = &op.then
                {
                    let key = Arc::as_ptr(slot) as usize;
                    if self
                        .rolled_back
                        .get(&key)
                        .is_some_and(|(_, g)| generation < g)
                    {
                        stale[i] = true;
                        op.entry = None;
                    }
                }
            }
        }
        // Carried records first: they name what left before anything queued now arrived.
        let mut entries = std::mem::take(&mut self.carry);
        let carried = entries.len();
        entries.extend(ops.iter_mut().filter_map(|op| op.entry.take()));
        let result = if entries.is_empty() {
            Ok(())
        } else {
            self.journal.write(&entries)
        };
        match result {
            Ok(()) => {
                if !entries.is_empty() {
                    self.counters.commits.fetch_add(1, Relaxed);
                }
                self.counters
                    .entries
                    .fetch_add(entries.len() as u64, Relaxed);
                if drained {
                    // Everything queued before the last hand-back has been seen.
                    self.rolled_back.clear();
                }
                self.hand_over(Applied {
                    ops,
                    stale,
                    failed: None,
                    rolled_back: None,
                });
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, records = entries.len(), "The store could not write; publications in this group are refused with 503.");
                // Tidying records stay for the next attempt (they are idempotent).
                self.carry = entries
                    .into_iter()
                    .enumerate()
                    .filter(|(i, e)| {
                        *i < carried
                            || matches!(
                                e,
                                Entry::Trim { .. }
                                    | Entry::DropLatest { .. }
                                    | Entry::Forget { .. }
                            )
                    })
                    .map(|(_, e)| e)
                    .take(MAX_CARRY)
                    .collect();
                // The applier hands the offsets back once every earlier group is applied (so
                // each channel's newest offset is the last one written); nothing more is
                // written until then.
                let (tx, rx) = mpsc::channel();
                let sent = self.hand_over(Applied {
                    ops,
                    stale,
                    failed: Some(e.0),
                    rolled_back: Some(tx),
                });
                if sent {
                    if let Ok(list) = rx.recv() {
                        for (key, slot, generation) in list {
                            self.rolled_back.insert(key, (slot, generation));
                        }
                    }
                }
            }
        }
    }
}
