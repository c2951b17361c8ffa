//! Polling a connection again at once when it woke itself.
//!
//! hyper hands a request body from its connection to the handler through a channel, and both
//! ends live in the connection's own task: reading the body wakes the handler, and the handler
//! asking for the body wakes the reader, each while the task is being polled. tokio treats a
//! task woken during its own poll as one that yielded and puts it at the back of the run queue.
//! On a node busy with fan-out that queue holds thousands of connection tasks, so every
//! `POST /api/publish` waited one or two passes over it (about 1 ms at 10,000 subscribers)
//! before its answer, and a keep-alive client's next request, arriving while the task was
//! still queued, waited for the same pass.
//!
//! [`Repoll`] gives the future a waker of its own: a wake that arrives while the future is
//! being polled is answered by polling it again at once (a few times at most, so a future that
//! really yields still yields), and any other wake goes to the task as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls in one go at most this many times before a self-wake is passed on as a yield.
const MAX_POLLS: usize = 4;

#[derive(Debug, Default)]
struct Shared {
    /// The future is being polled: a wake now only asks for another poll.
    polling: AtomicBool,
    /// A wake arrived while polling.
    woken: AtomicBool,
    /// The task's own waker, for wakes that arrive between polls.
    task: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(SeqCst) {
            self.woken.store(true, SeqCst);
            return;
        }
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// A future polled again at once when it wakes itself during a poll.
pub(crate) struct Repoll<F> {
    inner: F,
    shared: Arc<Shared>,
    waker: Waker,
}

impl<F: Future + Unpin> Repoll<F> {
    pub(crate) fn new(inner: F) -> Self {
        let shared = Arc::new(Shared::default());
        let waker = Waker::from(shared.clone());
        Self {
            inner,
            shared,
            waker,
        }
    }
}

impl<F: Future + Unpin> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        {
            let mut task = this
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        this.shared.polling.store(true, SeqCst);
        let mut result = Poll::Pending;
        for _ in 0..MAX_POLLS {
            this.shared.woken.store(false, SeqCst);
            result = Pin::new(&mut this.inner).poll(&mut inner_cx);
            if result.is_ready() || !this.shared.woken.load(SeqCst) {
                break;
            }
        }
        this.shared.polling.store(false, SeqCst);
        // A wake that arrived during the last poll (or after the last look at the flag) and was
        // not answered by polling again is passed on.
        if this.shared.woken.swap(false, SeqCst) && result.is_pending() {
            cx.waker().wake_by_ref();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes the task itself receives.
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_self_wake_is_answered_by_polling_again_not_by_waking_the_task() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&task);
        // Wakes itself twice, finishing on the third poll.
        let mut polls = 0;
        let mut f = Repoll::new(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        }));
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(3));
        assert_eq!(counter.0.load(SeqCst), 0, "the task was never woken");
    }

    #[test]
    fn a_future_that_keeps_yielding_still_yields_and_later_wakes_reach_the_task() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&task);
        let stored: Arc<Mutex<Option<Waker>>> = Arc::default();
        let keep = stored.clone();
        let mut f = Repoll::new(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(
            counter.0.load(SeqCst),
            1,
            "after {MAX_POLLS} polls the yield is passed on"
        );
        // A wake between polls (as from the I/O driver) goes straight to the task.
        stored.lock().unwrap().take().unwrap().wake();
        assert_eq!(counter.0.load(SeqCst), 2);
    }
}
