//! A connection's one timer (WebSocket heartbeat, SSE keep-alive, token expiry), polled only
//! when it can be due.
//!
//! Polling a `tokio::time::Sleep` re-registers the task's waker with the timer (atomic
//! read-modify-writes on the timer's entry) every time, and a connection's task is polled on
//! every delivery. Once a poll has registered the waker, the timer wakes that same task when it
//! fires, so later polls are skipped until [`Sleep::is_elapsed`] (a plain load) says it fired,
//! or until the deadline moves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// A `Sleep` that remembers whether this task's waker is already registered with it.
    pub(crate) struct ConnTimer {
        #[pin]
        sleep: Sleep,
        registered: bool,
    }
}

impl ConnTimer {
    /// A timer that fires at `deadline`.
    pub(crate) fn new(deadline: Instant) -> Self {
        Self {
            sleep: tokio::time::sleep_until(deadline),
            registered: false,
        }
    }

    /// Moves the deadline; the next poll registers again.
    pub(crate) fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.project();
        this.sleep.reset(deadline);
        *this.registered = false;
    }

    /// Ready once the deadline has passed. Only the owning task may poll it: the waker it
    /// registers first is the one the timer wakes.
    pub(crate) fn poll_due(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if *this.registered && !this.sleep.is_elapsed() {
            return Poll::Pending;
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                *this.registered = true;
                Poll::Pending
            }
        }
    }

    /// The future form of [`Self::poll_due`], for `select!`.
    pub(crate) fn due(self: Pin<&mut Self>) -> impl Future<Output = ()> + '_ {
        let mut this = self;
        std::future::poll_fn(move |cx| this.as_mut().poll_due(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_deadline_and_again_after_a_reset() {
        let start = Instant::now();
        let t = ConnTimer::new(start + Duration::from_secs(5));
        tokio::pin!(t);
        // Registered by the first poll; the second (skipped) poll is still pending.
        assert!(futures_util::poll!(t.as_mut().due()).is_pending());
        assert!(futures_util::poll!(t.as_mut().due()).is_pending());
        t.as_mut().due().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        t.as_mut().reset(Instant::now() + Duration::from_secs(3));
        assert!(futures_util::poll!(t.as_mut().due()).is_pending());
        t.as_mut().due().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_is_honoured() {
        let start = Instant::now();
        let t = ConnTimer::new(start + Duration::from_secs(60));
        tokio::pin!(t);
        assert!(futures_util::poll!(t.as_mut().due()).is_pending());
        t.as_mut().reset(start + Duration::from_secs(1));
        t.as_mut().due().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }
}
