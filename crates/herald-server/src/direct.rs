//! The lean path for SSE: a connection whose first request is `GET /sse` is answered without
//! hyper's per-connection machinery (two 8 KiB buffers and a dispatcher that live as long as the
//! stream). The request head is read here, run through the same router (so routing, CORS and
//! errors are identical), and the response is written straight to the socket, delimited by the
//! connection's close. Anything else, or a head that did not arrive in one piece, goes to hyper.

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest request head the lean path reads; bigger heads go to hyper.
const MAX_HEAD_BYTES: usize = 4096;
/// Most request headers the lean path parses.
const MAX_HEADERS: usize = 32;

/// What happened to a connection offered to the lean path.
pub(crate) enum Outcome {
    /// It was an SSE request and has been served to the end, or the peer sent nothing in time.
    Served,
    /// Not for this path: serve it with hyper (nothing was consumed from the socket).
    Hyper(TcpStream),
}

/// Serves `tcp` here if its first request is a complete `GET /sse` head. (A plain fn returning
/// an `async` block for the reason given at [`serve`].)
#[allow(clippy::manual_async_fn)]
pub(crate) fn try_serve<'a>(
    tcp: TcpStream,
    router: &'a Router,
    header_timeout: Duration,
    write_timeout: Duration,
    shutdown: &'a CancellationToken,
) -> impl std::future::Future<Output = Outcome> + Send + 'a {
    async move {
        // On the heap and only while peeking: an array here would sit in every SSE connection's
        // task for the stream's whole life.
        let mut peek = vec![0u8; MAX_HEAD_BYTES];
        let peeked = tokio::select! {
            r = tokio::time::timeout(header_timeout, tcp.peek(&mut peek)) => r,
            () = shutdown.cancelled() => return Outcome::Served,
        };
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            // Silent for the whole header timeout, closed, or failed: drop the connection.
            _ => return Outcome::Served,
        };
        let head = &peek[..n];
        if !(head.starts_with(b"GET /sse?") || head.starts_with(b"GET /sse ")) {
            return Outcome::Hyper(tcp);
        }
        let Some(end) = memchr::memmem::find(head, b"\r\n\r\n").map(|i| i + 4) else {
            return Outcome::Hyper(tcp);
        };
        let Some(mut request) = parse(&head[..end]) else {
            return Outcome::Hyper(tcp);
        };
        drop(peek);
        if let Ok(peer) = tcp.peer_addr() {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        serve(tcp, end, Box::new(request), router, write_timeout).await;
        Outcome::Served
    }
}

fn parse(head: &[u8]) -> Option<axum::http::Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    if req.version != Some(1) {
        return None;
    }
    let mut builder = axum::http::Request::builder()
        .method(axum::http::Method::GET)
        .uri(req.path?)
        .version(axum::http::Version::HTTP_11);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(Body::empty()).ok()
}

/// A plain fn returning one `async` block, not an `async fn`: an `async fn` keeps its arguments
/// (the request among them) beside the locals they are moved into for the stream's whole life
/// (rustc issue 62958).
#[allow(clippy::manual_async_fn)]
fn serve<'a>(
    mut tcp: TcpStream,
    head_len: usize,
    // Boxed: the request is a few hundred bytes, and as a captured value its slot would stay
    // in the task for the stream's whole life.
    request: Box<axum::http::Request<Body>>,
    router: &'a Router,
    write_timeout: Duration,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    async move {
        // Consume the head that was only peeked at.
        let mut sink = vec![0u8; head_len];
        if tcp.read_exact(&mut sink).await.is_err() {
            return;
        }
        drop(sink);
        // The response head is built in its own scope, so the response parts (with drop glue,
        // kept until the end of their scope) do not stay in the task while the stream runs.
        let (mut head, streaming, mut body) = {
            // Boxed: the handler's future is large and needed only until the response head exists;
            // inline it would size this task for the stream's whole life.
            let Ok(response) = Box::pin(router.clone().oneshot(*request)).await;
            let (parts, body) = response.into_parts();
            let streaming = parts
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let mut head = format!(
                "HTTP/1.1 {} {}\r\n",
                parts.status.as_u16(),
                parts.status.canonical_reason().unwrap_or("")
            )
            .into_bytes();
            for (name, value) in &parts.headers {
                if name == axum::http::header::CONNECTION
                    || name == axum::http::header::CONTENT_LENGTH
                {
                    continue;
                }
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"connection: close\r\n");
            (head, streaming, body)
        };
        if !streaming {
            // A short error body: send it whole, with its length.
            let Ok(collected) = body.collect().await else {
                return;
            };
            let bytes = collected.to_bytes();
            head.extend_from_slice(format!("content-length: {}\r\n\r\n", bytes.len()).as_bytes());
            head.extend_from_slice(&bytes);
            let _ = tokio::time::timeout(write_timeout, tcp.write_all(&head)).await;
            let _ = tcp.shutdown().await;
            return;
        }
        head.extend_from_slice(b"\r\n");
        let (mut rd, mut wr) = tcp.into_split();
        match tokio::time::timeout(write_timeout, wr.write_all(&head)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => return crate::write_timeouts::write_timed_out(),
        }
        drop(head);
        // An SSE client sends nothing more; reading only tells when it went away.
        let mut probe = [0u8; 16];
        loop {
            // The write happens after the select, so its timer never sits beside the select's
            // futures in the connection's task.
            let data = tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                    Some(Err(_)) | None => break,
                },
                r = rd.read(&mut probe) => {
                    if matches!(r, Ok(n) if n > 0) {
                        continue;
                    }
                    return;
                }
            };
            // Most writes fit the socket buffer at once: try that first, without building the
            // timeout's timer entry; only a partial write waits (bounded by the write timeout).
            let rest = match wr.try_write(&data) {
                Ok(n) => &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => &data[..],
                Err(_) => return,
            };
            if !rest.is_empty() {
                match tokio::time::timeout(write_timeout, wr.write_all(rest)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => return crate::write_timeouts::write_timed_out(),
                }
            }
        }
        let _ = wr.shutdown().await;
    }
}
