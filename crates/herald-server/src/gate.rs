//! Polling a connection's read side only after it woke the task.
//!
//! A WebSocket connection's task wakes for every delivery, and each wake-up used to poll the
//! socket's read side too: tungstenite's waker proxies, hyper's upgraded stream, and a lock and a
//! waker registration in tokio's I/O driver, to learn that a client that sends almost nothing has
//! still sent nothing (4 – 8% of the server's CPU with 1,000 subscribers at 50 msg/s).
//!
//! [`ReadGate`] polls the read side with a waker of its own, which records that the read side
//! woke it before waking the task. Until then, and once a poll has returned `Pending`, the read
//! side is not polled again. It costs one small allocation per connection (about 55 bytes), so
//! it is used where it was measured to pay: not on the SSE lean path, whose plain socket read is
//! cheap.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Gates polls of one source (a socket's read side) on that source having woken the task.
pub(crate) struct ReadGate {
    flag: Arc<Flag>,
    /// The last poll returned `Pending`, so the source holds this gate's waker.
    waiting: bool,
}

impl ReadGate {
    pub(crate) fn new() -> Self {
        Self {
            flag: Arc::new(Flag::default()),
            waiting: false,
        }
    }

    /// Polls the source through `poll` unless it is waiting and has not woken the gate since.
    /// Only one task may use a gate: it is the task this gate wakes.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if self.waiting && !self.flag.woken.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        // Registered before the source is polled, so a wake-up that follows reaches the task.
        self.flag.task.register(cx.waker());
        let waker = Waker::from(self.flag.clone());
        let result = poll(&mut Context::from_waker(&waker));
        self.waiting = result.is_pending();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

    #[tokio::test]
    async fn the_source_is_polled_again_only_after_it_woke_the_task() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut gate = ReadGate::new();
        let mut polls = 0;
        let mut buf = [0u8; 8];
        let mut read = |gate: &mut ReadGate, cx: &mut Context<'_>, polls: &mut usize| {
            gate.poll(cx, |cx| {
                *polls += 1;
                let mut rb = ReadBuf::new(&mut buf);
                std::pin::Pin::new(&mut server)
                    .poll_read(cx, &mut rb)
                    .map(|r| r.map(|()| rb.filled().len()))
            })
        };
        // Nothing to read: polled once, then skipped while nothing arrives.
        std::future::poll_fn(|cx| {
            assert!(read(&mut gate, cx, &mut polls).is_pending());
            assert!(read(&mut gate, cx, &mut polls).is_pending());
            Poll::Ready(())
        })
        .await;
        assert_eq!(polls, 1);
        // Data arrives: the source woke the gate, so the next poll reads it.
        client.write_all(b"hi").await.unwrap();
        let n = std::future::poll_fn(|cx| read(&mut gate, cx, &mut polls)).await;
        assert_eq!(n.unwrap(), 2);
        assert_eq!(polls, 2);
        // A ready result keeps the gate open: the next poll goes through.
        std::future::poll_fn(|cx| {
            assert!(read(&mut gate, cx, &mut polls).is_pending());
            Poll::Ready(())
        })
        .await;
        assert_eq!(polls, 3);
        drop(client);
        let n = std::future::poll_fn(|cx| read(&mut gate, cx, &mut polls)).await;
        assert_eq!(n.unwrap(), 0, "end of stream wakes the gate too");
    }
}
