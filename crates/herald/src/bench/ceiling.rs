//! `herald bench ceiling-server`: a bare fan-out server with no protocol logic, to show what
//! this machine and this generator allow at all. It accepts Herald's routes at the byte level
//! (`GET /ws`, `GET /sse`, `POST /api/publish`), wraps each published body once into a WebSocket
//! frame and an SSE event of the same shape Herald sends, and writes it to every connection,
//! coalescing whatever is queued into one write. Channels are routed by name only: a subscriber
//! names its channel in the request line (`?channel=`, WebSocket included), a publication in its
//! body, and each channel is one broadcast queue.

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// Options of the ceiling server.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CeilingArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7078")]
    pub(crate) listen: SocketAddr,
}

/// Each channel's queue holds this many frames, the bound Herald's default outbox puts on how
/// far one subscriber may lag behind its channel.
const QUEUE: usize = 1024;

/// Channel name → its broadcast queue, created on first use.
type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Frame>>>>;

fn queue(channels: &Channels, name: &str) -> broadcast::Sender<Frame> {
    let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(name.to_owned())
        .or_insert_with(|| broadcast::channel(QUEUE).0)
        .clone()
}

/// The value of `key=` in a request line's query, or `bench_0`.
fn query_channel(line: &str) -> String {
    let query = line
        .split(' ')
        .nth(1)
        .and_then(|t| t.split_once('?'))
        .map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("channel="))
        .unwrap_or("bench_0")
        .to_owned()
}

#[derive(Clone)]
struct Frame {
    ws: Bytes,
    sse: Bytes,
}

/// Runs until killed.
pub(crate) async fn serve(args: CeilingArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("Listening on http://{}", listener.local_addr()?);
    let channels = Channels::default();
    let offset = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let channels = channels.clone();
        let offset = offset.clone();
        tokio::spawn(async move {
            let _ = connection(stream, channels, offset).await;
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    channels: Channels,
    offset: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let end = loop {
            if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break end;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.advance(end + 4);
        let line = head.lines().next().unwrap_or("");
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        if line.starts_with("GET /ws") {
            let key = header("sec-websocket-key").unwrap_or_default();
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
            stream.write_all(resp.as_bytes()).await?;
            let rx = queue(&channels, &query_channel(line)).subscribe();
            return subscriber(stream, buf, rx, true).await;
        }
        if line.starts_with("GET /sse") {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\nretry: 2000\n\n")
                .await?;
            let rx = queue(&channels, &query_channel(line)).subscribe();
            return subscriber(stream, buf, rx, false).await;
        }
        if line.starts_with("POST ") {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < len {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            let body = buf.split_to(len);
            // `{"channel":"c","data":X}` → the push Herald would send for it.
            let data = memchr::memmem::find(&body, b"\"data\":")
                .map_or(&body[..], |i| &body[i + 7..body.len().saturating_sub(1)]);
            let channel = memchr::memmem::find(&body, b"\"channel\":\"")
                .and_then(|i| {
                    let rest = &body[i + 11..];
                    memchr::memchr(b'"', rest).map(|end| &rest[..end])
                })
                .map_or_else(|| "bench_0".into(), String::from_utf8_lossy);
            let n = offset.fetch_add(1, Relaxed) + 1;
            let json = format!(
                r#"{{"push":"publication","channel":"{channel}","event":"message","offset":{n},"epoch":"ceiling","time":0,"data":{}}}"#,
                String::from_utf8_lossy(data)
            );
            let _ = queue(&channels, &channel).send(Frame {
                ws: ws_frame(json.as_bytes()),
                sse: Bytes::from(format!("event: message\ndata: {json}\nid: ceiling-{n}\n\n")),
            });
            let reply = format!("{{\"offset\":{n}}}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            continue;
        }
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await?;
    }
}

fn ws_frame(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    Bytes::from(f)
}

async fn subscriber(
    mut stream: TcpStream,
    mut buf: BytesMut,
    mut rx: broadcast::Receiver<Frame>,
    ws: bool,
) -> anyhow::Result<()> {
    let mut replied = false;
    loop {
        tokio::select! {
            r = stream.read_buf(&mut buf) => {
                if r? == 0 {
                    return Ok(());
                }
                // The first client frame is a subscribe request: answer it once, ignore the rest.
                if ws && !replied {
                    replied = true;
                    stream.write_all(&ws_frame(br#"{"id":1,"result":{}}"#)).await?;
                }
                buf.clear();
            }
            f = rx.recv() => {
                let f = match f {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                // Everything queued is copied into the thread's scratch buffer and offered to
                // the socket without waiting; only an unsent rest is kept and awaited.
                let rest = SCRATCH.with_borrow_mut(|out| {
                    out.clear();
                    out.extend_from_slice(if ws { &f.ws } else { &f.sse });
                    // At most 64 KiB per write, as Herald: a full socket holds no more.
                    while out.len() < 64 * 1024 {
                        let Ok(f) = rx.try_recv() else { break };
                        out.extend_from_slice(if ws { &f.ws } else { &f.sse });
                    }
                    let sent = match stream.try_write(out) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(e) => return Err(e),
                    };
                    Ok((sent < out.len()).then(|| out[sent..].to_vec()))
                })?;
                if let Some(rest) = rest {
                    stream.write_all(&rest).await?;
                }
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
