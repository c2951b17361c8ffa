//! `ClientRequest::parse`: the WebSocket JSON request parser (one text frame per call).
//!
//! Oracle: never panics; when a request parses, what it carries is what the protocol promises
//! (a valid epoch in `since`, a non-empty JSON value in `data`), and errors format.
#![no_main]

use herald_protocol::{ClientRequest, Epoch, Request, StreamPosition};
use libfuzzer_sys::fuzz_target;

fn check_since(since: &Option<StreamPosition>) {
    if let Some(p) = since {
        let epoch = p.epoch.as_str();
        assert!(
            Epoch::parse(epoch).is_ok(),
            "accepted an invalid epoch {epoch:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by definition; the server never calls the parser otherwise.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientRequest::parse(text) {
        Ok(req) => {
            match &req.request {
                Request::Subscribe { since, .. } | Request::History { since, .. } => {
                    check_since(since)
                }
                Request::Publish { data, .. } => {
                    // RawValue only ever holds one complete JSON value.
                    let json = data.get();
                    assert!(!json.is_empty(), "empty `data` accepted");
                }
                Request::Auth { .. }
                | Request::Unsubscribe { .. }
                | Request::Presence { .. }
                | Request::Ping => {}
            }
            let _ = format!("{req:?}");
        }
        Err(err) => {
            // Formatting the error must not panic either (it is sent back to the client).
            let _ = format!("{err:?}");
            assert!(!err.message.is_empty(), "error without a message");
        }
    }
});
