//! The load generator's side of the wire: lean subscriber connections over raw TCP (an HTTP
//! upgrade or an SSE request, then a byte-level reader), so that the generator spends as little
//! CPU per message as possible and the server is what gets measured.
//!
//! Messages are recognised by the `"q":SEQ,"t":MICROS` marker the bench puts in every payload;
//! this works for Herald's JSON pushes and for peers that deliver the payload verbatim.

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Which transport subscribers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
}

/// Which server's URL layout to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Target {
    /// Herald.
    Herald,
    /// The bench's bare fan-out server (`herald bench ceiling-server`), on Herald's routes.
    Ceiling,
    /// Nchan: subscribe at `/sub/CHANNEL`, publish with `POST /pub?id=CHANNEL`.
    Nchan,
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .context("the URL must start with http://")?;
        let host = rest.split('/').next().unwrap_or(rest).to_owned();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self { addr, host })
    }
}

/// Opens a TCP connection, spreading source addresses over 127.0.0.x so that more than one
/// ephemeral port range is available for very many connections to one loopback port.
pub(crate) async fn tcp(ep: &Endpoint, index: usize) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Binding picks the port at bind time, which is slow with many sockets in TIME_WAIT; only
    // the connections past the first ephemeral range need an explicit source address.
    if ep.addr.ip().is_loopback() && index >= 20_000 {
        let n = u8::try_from(1 + index / 20_000).unwrap_or(1);
        socket.bind(SocketAddr::from(([127, 0, 0, n], 0)))?;
    }
    let stream = socket.connect(ep.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<String> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 4);
            return Ok(head);
        }
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed during the handshake");
        }
    }
}

/// A subscribed connection and whatever bytes already followed the handshake.
pub(crate) struct Subscriber {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    pub(crate) transport: Transport,
}

/// Connects and subscribes to `channel`.
pub(crate) async fn subscribe(
    ep: &Endpoint,
    index: usize,
    transport: Transport,
    target: Target,
    channel: &str,
) -> anyhow::Result<Subscriber> {
    let mut stream = tcp(ep, index).await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let path = match (target, transport) {
        (Target::Herald, Transport::Ws) => "/ws".to_owned(),
        // The ceiling routes by the request line alone; it ignores the subscribe request.
        (Target::Ceiling, Transport::Ws) => format!("/ws?channel={channel}"),
        (Target::Herald | Target::Ceiling, Transport::Sse) => format!("/sse?channel={channel}"),
        (Target::Nchan, _) => format!("/sub/{channel}"),
    };
    let request = match transport {
        Transport::Ws => format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ep.host
        ),
        Transport::Sse => format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            ep.host
        ),
    };
    stream.write_all(request.as_bytes()).await?;
    let head = read_head(&mut stream, &mut buf).await?;
    let want = match transport {
        Transport::Ws => "HTTP/1.1 101",
        Transport::Sse => "HTTP/1.1 200",
    };
    if !head.starts_with(want) {
        bail!("unexpected response: {}", head.lines().next().unwrap_or(""));
    }
    if target != Target::Nchan && transport == Transport::Ws {
        let req = format!(r#"{{"id":1,"op":"subscribe","channel":"{channel}"}}"#);
        stream.write_all(&client_frame(0x1, req.as_bytes())).await?;
        // Wait for the reply so the subscription is in place before anything is published.
        let mut frames = Vec::new();
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("closed before the subscribe reply");
            }
            next_ws_frames(&mut buf, &mut frames)?;
            // Skip the hello (`{"push":"connected",...}`): the reply is the first frame with an id.
            if let Some((_, payload)) = frames.iter().find(|(op, payload)| {
                *op == 0x1 && memchr::memmem::find(payload, b"\"push\":\"connected\"").is_none()
            }) {
                if memchr::memmem::find(payload, b"\"error\"").is_some() {
                    bail!("subscribe refused: {}", String::from_utf8_lossy(payload));
                }
                break;
            }
        }
    }
    Ok(Subscriber {
        stream,
        buf,
        transport,
    })
}

/// A masked client frame (clients must mask; the key's value does not matter here).
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Splits complete server frames off the front of `buf` into `out` as (opcode, payload).
/// Returns `Some(())` when at least one frame was taken.
pub(crate) fn next_ws_frames(
    buf: &mut BytesMut,
    out: &mut Vec<(u8, bytes::Bytes)>,
) -> anyhow::Result<Option<()>> {
    let mut took = false;
    loop {
        if buf.len() < 2 {
            break;
        }
        let op = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        let (len, hdr) = match buf[1] & 0x7f {
            126 => {
                if buf.len() < 4 {
                    break;
                }
                (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    break;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (usize::try_from(u64::from_be_bytes(b))?, 10)
            }
            n => (usize::from(n), 2),
        };
        if masked {
            bail!("the server sent a masked frame");
        }
        if buf.len() < hdr + len {
            break;
        }
        buf.advance(hdr);
        out.push((op, buf.split_to(len).freeze()));
        took = true;
    }
    Ok(took.then_some(()))
}

/// Finds every `"q":SEQ,"t":MICROS` marker in `bytes`.
pub(crate) fn markers(bytes: &[u8], mut f: impl FnMut(u64, u64)) {
    let finder = memchr::memmem::Finder::new(b"\"q\":");
    let mut at = 0;
    while let Some(i) = finder.find(&bytes[at..]) {
        let start = at + i + 4;
        let (q, used) = digits(&bytes[start..]);
        let mut t = 0;
        let rest = start + used;
        if bytes[rest..].starts_with(b",\"t\":") {
            t = digits(&bytes[rest + 5..]).0;
        }
        f(q, t);
        at = rest;
    }
}

fn digits(b: &[u8]) -> (u64, usize) {
    let mut n = 0u64;
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        n = n.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
        i += 1;
    }
    (n, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_pushes_and_sse_lines() {
        let mut seen = Vec::new();
        markers(
            br#"data: {"push":"publication","data":{"q":12,"t":345,"p":"xx"}}
data: {"q":13,"t":346}"#,
            |q, t| seen.push((q, t)),
        );
        assert_eq!(seen, [(12, 345), (13, 346)]);
    }

    #[test]
    fn frames_round_trip_through_the_parser() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x81, 3, b'a', b'b', b'c', 0x89, 0]);
        buf.extend_from_slice(&[0x81, 126, 0, 200]);
        buf.extend_from_slice(&[b'x'; 200]);
        buf.extend_from_slice(&[0x81, 5, b'p']);
        let mut out = Vec::new();
        next_ws_frames(&mut buf, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].0, &out[0].1[..]), (1, &b"abc"[..]));
        assert_eq!(out[1].0, 9);
        assert_eq!(out[2].1.len(), 200);
        assert_eq!(buf.len(), 3, "the incomplete frame stays");
    }
}
