//! A Server-Sent Events decoder that follows the WHATWG parsing rules, including the "last event
//! ID string" that id-only blocks update without firing an event (Herald's first block uses
//! that). Used by the CLI's `tail` and by tests; the server only encodes.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when the stream gave none).
    pub event: String,
    /// The data lines joined by `\n`.
    pub data: String,
    /// The last event id string at dispatch time.
    pub id: String,
}

/// Incremental decoder: feed bytes as they arrive, collect events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: String,
    event: String,
    id_buffer: String,
    last_event_id: String,
    retry_ms: Option<u64>,
    after_cr: bool,
    started: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event id string: what a browser would send as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The last valid `retry:` value, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Feeds a chunk; appends every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                b'\n' => self.end_line(out),
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&raw).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match name {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        self.last_event_id = self.id_buffer.clone();
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        let event = match std::mem::take(&mut self.event) {
            e if e.is_empty() => "message".to_owned(),
            e => e,
        };
        out.push(SseEvent {
            event,
            data,
            id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseDecoder) {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        (out, d)
    }

    #[test]
    fn follows_the_whatwg_examples() {
        let (ev, _) = decode(&[b"data\n\n"]);
        assert_eq!(ev[0].data, "");
        let (ev, _) = decode(&[b"data\ndata\n\n"]);
        assert_eq!(ev[0].data, "\n");
        let (ev, _) = decode(&[b"data:test\n\ndata: test\n\n"]);
        assert_eq!(ev[0].data, ev[1].data);
        let (ev, _) = decode(&[b"data:  x\n\n"]);
        assert_eq!(ev[0].data, " x");
        let (ev, _) = decode(&[b"event: \ndata: a\n\n"]);
        assert_eq!(ev[0].event, "message");
        let (ev, _) = decode(&[b"data: a\0b\n\n"]);
        assert_eq!(ev[0].data, "a\0b");
        let (ev, _) = decode(&[b": comment\r\ndata: 1\rdata: 2\r\n\r\n"]);
        assert_eq!(ev[0].data, "1\n2");
    }

    #[test]
    fn id_only_blocks_set_the_last_event_id() {
        let (ev, d) = decode(&[b"retry: 1500\nid: e1-0\n\n"]);
        assert!(ev.is_empty());
        assert_eq!(d.last_event_id(), "e1-0");
        assert_eq!(d.retry_ms(), Some(1500));
        let (_, d) = decode(&[b"id: a\0b\n\n"]);
        assert_eq!(d.last_event_id(), "");
        let (_, d) = decode(&[b"retry:  1000\n\n"]);
        assert_eq!(d.retry_ms(), None);
    }

    #[test]
    fn split_crlf_and_bom_are_handled() {
        let (ev, _) = decode(&[b"\xEF\xBB\xBFdata: x\r", b"\n\r", b"\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "x");
        let (ev, _) = decode(&[b"data: unterminated"]);
        assert!(ev.is_empty());
    }
}
