//! Server-to-client WebSocket text frames (RFC 6455 §5.2), built once per push so every
//! subscriber writes the same bytes: FIN and the text opcode, the payload length, no mask.

use bytes::Bytes;

/// Room left at the front of a buffer for the longest header (2 + 8 bytes).
pub const WS_HEADER_ROOM: usize = 10;

/// Encodes a JSON value into one allocation holding both the complete text frame and, as a
/// view into it, the bare payload. Returns `(frame, payload)`.
pub fn ws_text_frame_with(write: impl FnOnce(&mut Vec<u8>)) -> (Bytes, Bytes) {
    let mut buf = vec![0u8; WS_HEADER_ROOM];
    write(&mut buf);
    let len = buf.len() - WS_HEADER_ROOM;
    let header = header(len);
    let start = WS_HEADER_ROOM - header.len();
    buf[start..WS_HEADER_ROOM].copy_from_slice(&header);
    let all = Bytes::from(buf);
    (all.slice(start..), all.slice(WS_HEADER_ROOM..))
}

/// A text frame carrying `payload` (copied).
pub fn ws_text_frame(payload: &[u8]) -> Bytes {
    ws_text_frame_with(|b| b.extend_from_slice(payload)).0
}

fn header(len: usize) -> Vec<u8> {
    const FIN_TEXT: u8 = 0x81;
    match len {
        0..=125 => vec![FIN_TEXT, len as u8],
        126..=0xffff => {
            let mut h = vec![FIN_TEXT, 126];
            h.extend_from_slice(&(len as u16).to_be_bytes());
            h
        }
        _ => {
            let mut h = vec![FIN_TEXT, 127];
            h.extend_from_slice(&(len as u64).to_be_bytes());
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_shortest_form() {
        let f = ws_text_frame(b"hi");
        assert_eq!(&f[..], b"\x81\x02hi");
        let (f, p) = ws_text_frame_with(|b| b.extend(std::iter::repeat_n(b'x', 300)));
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(p.len(), 300);
        assert_eq!(&f[4..], &p[..]);
        let big = ws_text_frame(&vec![b'y'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().unwrap()), 70_000);
        assert_eq!(big.len(), 70_010);
    }
}
