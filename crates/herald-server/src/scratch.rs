//! Writing a batch without a buffer per connection.
//!
//! A connection that receives a batch of pushes copies them, [`MAX_WRITE_BYTES`] at a time, into
//! its worker thread's scratch buffer and offers that to the socket at once, without waiting
//! ([`write_now`]); only the part the socket did not take is copied into a buffer of the
//! connection's own, for the one write that waits. A busy node therefore touches one buffer per worker thread instead of one per
//! connection grown to its largest batch (at 10,000 subscribers such buffers were most of the
//! server's page faults), and an idle connection holds none.
//!
//! The per-connection vectors a batch passes through are likewise given back once they outgrow
//! everyday use ([`trim`]).

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWrite;

/// Most bytes one write carries: a longer batch is written in pieces of about this size, so a
/// connection whose socket is full holds at most this much of its own (the rest of its batch
/// stays in the channel's shared publications). 18,000 connections with 16 KB messages each
/// holding a whole batch of the ring's 4 MiB would need 72 GB.
pub(crate) const MAX_WRITE_BYTES: usize = 64 * 1024;

/// The scratch buffer keeps at most this much room between batches.
const KEPT_SCRATCH_BYTES: usize = 1024 * 1024;

/// A per-connection vector keeps at most this many slots between batches.
const KEPT_SLOTS: usize = 16;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Fills the thread's scratch buffer with `fill` and writes as much of it to `io` as the socket
/// takes without waiting. Returns the unsent rest (`None` when all of it went out), which the
/// caller writes with an ordinary awaited write.
pub(crate) fn write_now<W: AsyncWrite + Unpin>(
    io: &mut W,
    fill: impl FnOnce(&mut Vec<u8>),
) -> std::io::Result<Option<Vec<u8>>> {
    SCRATCH.with_borrow_mut(|out| {
        out.clear();
        fill(out);
        // One poll with a waker that does nothing: tokio clears the socket's write readiness
        // when the kernel would block, so the caller's awaited write polls again and registers
        // its own waker before it sleeps.
        let mut cx = Context::from_waker(Waker::noop());
        let mut sent = 0;
        while sent < out.len() {
            match Pin::new(&mut *io).poll_write(&mut cx, &out[sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        let rest = (sent < out.len()).then(|| out[sent..].to_vec());
        out.clear();
        if out.capacity() > KEPT_SCRATCH_BYTES {
            *out = Vec::new();
        }
        Ok(rest)
    })
}

/// Gives back a drained vector's room once it outgrew everyday use, so a connection that once
/// received a long batch does not hold it while idle.
pub(crate) fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() > KEPT_SLOTS {
        *v = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A batch larger than the socket takes comes back as exactly the unsent rest, and what the
    /// peer reads is the whole batch in order; the connection keeps no buffer afterwards.
    #[tokio::test]
    async fn the_unsent_rest_comes_back_and_the_peer_reads_everything_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut writer = client.unwrap();
        let (mut reader, _) = server.unwrap();
        // Far more than loopback's socket buffers hold while the peer is not reading.
        let batch: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let rest = write_now(&mut writer, |out| out.extend_from_slice(&batch))
            .unwrap()
            .expect("a 64 MiB batch does not fit the socket at once");
        assert!(!rest.is_empty() && rest.len() < batch.len());
        assert_eq!(rest[..], batch[batch.len() - rest.len()..]);
        let expected = batch.clone();
        let read = tokio::spawn(async move {
            let mut got = Vec::with_capacity(expected.len());
            let mut chunk = vec![0u8; 1 << 16];
            while got.len() < expected.len() {
                let n = reader.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the writer closed early");
                got.extend_from_slice(&chunk[..n]);
            }
            got == expected
        });
        writer.write_all(&rest).await.unwrap();
        assert!(read.await.unwrap(), "the peer read the batch in order");
        SCRATCH.with_borrow(|s| {
            assert!(s.is_empty());
            assert!(s.capacity() <= KEPT_SCRATCH_BYTES);
        });
    }

    #[test]
    fn a_vector_that_outgrew_everyday_use_gives_its_room_back() {
        let mut small: Vec<u32> = Vec::with_capacity(KEPT_SLOTS);
        trim(&mut small);
        assert_eq!(small.capacity(), KEPT_SLOTS);
        let mut big: Vec<u32> = Vec::with_capacity(1000);
        trim(&mut big);
        assert_eq!(big.capacity(), 0);
    }
}
