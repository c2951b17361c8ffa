//! Stream positions (`epoch` + `offset`) and the compact SSE `id:` form that lets a plain
//! `EventSource` resume every channel of a connection through `Last-Event-ID`.
//!
//! The SSE id lists one `epoch-offset` pair per channel, in the order the channels were named
//! in the URL, joined by `.`; offsets are base36. Only CORS-safe bytes are used, so a browser
//! sends the id without a preflight while it stays under 128 bytes.

use bytes::BufMut;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest epoch, in bytes.
pub const MAX_EPOCH_BYTES: usize = 16;
/// Longest SSE id (`Last-Event-ID`) Herald accepts, in bytes.
pub const MAX_SSE_ID_BYTES: usize = 4096;

/// A channel's epoch: changes whenever the channel's history is lost, so that positions taken
/// before the loss are recognised as unrecoverable. Lowercase ASCII letters and digits only.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Epoch(Arc<str>);

/// Why a string is not an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochError;

impl fmt::Display for EpochError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an epoch is 1 to {MAX_EPOCH_BYTES} characters of a-z and 0-9"
        )
    }
}

impl std::error::Error for EpochError {}

impl Epoch {
    /// Parses an epoch, refusing anything but 1 to 16 lowercase letters and digits.
    pub fn parse(s: &str) -> Result<Self, EpochError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_EPOCH_BYTES
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(EpochError)
        }
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Epoch {
    type Error = EpochError;
    fn try_from(s: String) -> Result<Self, EpochError> {
        Self::parse(&s)
    }
}

impl From<Epoch> for String {
    fn from(e: Epoch) -> String {
        e.0.to_string()
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// A position in one channel's stream: the offset of the last publication seen, inside an epoch.
/// Offset 0 means "before the first publication of this epoch".
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    /// The channel's epoch.
    pub epoch: Epoch,
    /// The offset of the last publication covered by this position.
    pub offset: u64,
}

impl StreamPosition {
    /// A position in `epoch` at `offset`.
    pub fn new(epoch: Epoch, offset: u64) -> Self {
        Self { epoch, offset }
    }
}

/// Why an SSE id could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseIdError {
    /// Longer than [`MAX_SSE_ID_BYTES`].
    TooLong,
    /// A part is not `epoch-offset`.
    Malformed,
    /// An offset does not fit in 64 bits.
    OffsetOverflow,
    /// The id names a different number of channels than the request.
    ChannelCountMismatch {
        /// Positions in the id.
        positions: usize,
        /// Channels in the request.
        channels: usize,
    },
}

impl fmt::Display for SseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "the event id is longer than {MAX_SSE_ID_BYTES} bytes"),
            Self::Malformed => f.write_str("the event id is not a list of epoch-offset pairs"),
            Self::OffsetOverflow => f.write_str("an offset in the event id is too large"),
            Self::ChannelCountMismatch {
                positions,
                channels,
            } => write!(
                f,
                "the event id holds {positions} positions but the request names {channels} channels"
            ),
        }
    }
}

impl std::error::Error for SseIdError {}

/// Writes the SSE id for `positions` (one per channel, in request order) into `out`.
pub fn format_sse_id<'a>(
    positions: impl IntoIterator<Item = &'a StreamPosition>,
    out: &mut String,
) {
    let mut bytes = Vec::new();
    write_sse_id(positions, &mut bytes);
    // Epochs are base36 and offsets are written in base36: the id is ASCII.
    out.push_str(std::str::from_utf8(&bytes).expect("an SSE id is ASCII"));
}

/// Appends the SSE id for `positions` to `out` as bytes (the per-event path: no allocation
/// beyond `out`'s own growth). `out` is a `Vec<u8>` or a `BytesMut`.
pub fn write_sse_id<'a>(
    positions: impl IntoIterator<Item = &'a StreamPosition>,
    out: &mut impl BufMut,
) {
    for (i, p) in positions.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b'.');
        }
        out.put_slice(p.epoch.as_str().as_bytes());
        out.put_u8(b'-');
        push_base36(p.offset, out);
    }
}

/// Reads an SSE id produced by [`format_sse_id`]; `channels` is how many channels the request
/// names, and the id must hold exactly that many positions.
pub fn parse_sse_id(id: &str, channels: usize) -> Result<Vec<StreamPosition>, SseIdError> {
    if id.len() > MAX_SSE_ID_BYTES {
        return Err(SseIdError::TooLong);
    }
    let mut out = Vec::new();
    for part in id.split('.') {
        let (epoch, offset) = part.split_once('-').ok_or(SseIdError::Malformed)?;
        let epoch = Epoch::parse(epoch).map_err(|_| SseIdError::Malformed)?;
        let offset = parse_base36(offset)?;
        out.push(StreamPosition { epoch, offset });
        if out.len() > channels {
            break;
        }
    }
    if out.len() != channels {
        return Err(SseIdError::ChannelCountMismatch {
            positions: id.split('.').count(),
            channels,
        });
    }
    Ok(out)
}

/// Reads one item of an SSE request's `since` parameter: `CHANNEL~EPOCH-OFFSET`, the offset in
/// base36 as in an SSE id (`~` appears in neither a channel name nor a position). Returns the
/// channel name unchecked, and its position.
pub fn parse_channel_position(item: &str) -> Result<(&str, StreamPosition), SseIdError> {
    if item.len() > MAX_SSE_ID_BYTES {
        return Err(SseIdError::TooLong);
    }
    let (channel, position) = item.rsplit_once('~').ok_or(SseIdError::Malformed)?;
    let (epoch, offset) = position.split_once('-').ok_or(SseIdError::Malformed)?;
    let epoch = Epoch::parse(epoch).map_err(|_| SseIdError::Malformed)?;
    let offset = parse_base36(offset)?;
    Ok((channel, StreamPosition { epoch, offset }))
}

fn push_base36(mut n: u64, out: &mut impl BufMut) {
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    loop {
        i -= 1;
        let d = (n % 36) as u8;
        buf[i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

fn parse_base36(s: &str) -> Result<u64, SseIdError> {
    if s.is_empty() || s.len() > 13 {
        return Err(if s.len() > 13 {
            SseIdError::OffsetOverflow
        } else {
            SseIdError::Malformed
        });
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            _ => return Err(SseIdError::Malformed),
        };
        n = n
            .checked_mul(36)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(SseIdError::OffsetOverflow)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_since_item_is_a_channel_and_a_position() {
        let (ch, p) = parse_channel_position("chat:lobby~yeorkhmi-2x").unwrap();
        assert_eq!(ch, "chat:lobby");
        assert_eq!((p.epoch.as_str(), p.offset), ("yeorkhmi", 105));
        for bad in ["chat", "chat~", "chat~e1", "chat~E1-1", "chat~e1-", "~"] {
            assert!(parse_channel_position(bad).is_err(), "{bad}");
        }
        let long = format!("{}~e1-1", "a".repeat(MAX_SSE_ID_BYTES));
        assert!(matches!(
            parse_channel_position(&long),
            Err(SseIdError::TooLong)
        ));
    }

    use super::*;

    fn pos(e: &str, o: u64) -> StreamPosition {
        StreamPosition::new(Epoch::parse(e).unwrap(), o)
    }

    #[test]
    fn sse_id_round_trips_and_stays_short() {
        let ps = vec![pos("k3j9x2", 0), pos("ab", 1_234_567), pos("z", u64::MAX)];
        let mut s = String::new();
        format_sse_id(&ps, &mut s);
        assert_eq!(s, "k3j9x2-0.ab-qglj.z-3w5e11264sgsf");
        assert_eq!(parse_sse_id(&s, 3).unwrap(), ps);
    }

    #[test]
    fn bad_sse_ids_are_refused() {
        assert_eq!(parse_sse_id("", 1), Err(SseIdError::Malformed));
        assert_eq!(parse_sse_id("abc", 1), Err(SseIdError::Malformed));
        assert_eq!(parse_sse_id("ab--1", 1), Err(SseIdError::Malformed));
        assert_eq!(parse_sse_id("AB-1", 1), Err(SseIdError::Malformed));
        assert_eq!(
            parse_sse_id("ab-zzzzzzzzzzzzz", 1),
            Err(SseIdError::OffsetOverflow)
        );
        assert_eq!(
            parse_sse_id("ab-3w5e11264sgsg", 1),
            Err(SseIdError::OffsetOverflow)
        );
        assert!(matches!(
            parse_sse_id("ab-1.cd-2", 1),
            Err(SseIdError::ChannelCountMismatch { .. })
        ));
        let huge = "a-1.".repeat(2000);
        assert_eq!(parse_sse_id(&huge, 1), Err(SseIdError::TooLong));
    }

    #[test]
    fn epochs_are_validated() {
        assert!(Epoch::parse("abc123").is_ok());
        assert!(Epoch::parse("").is_err());
        assert!(Epoch::parse("ABC").is_err());
        assert!(Epoch::parse("a".repeat(17).as_str()).is_err());
        let p: Result<StreamPosition, _> = serde_json::from_str(r#"{"epoch":"ab","offset":-1}"#);
        assert!(p.is_err());
    }
}
