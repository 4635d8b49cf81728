//! Fuzzes the frame decoder the way a connection drives it: decode frames
//! back-to-back from one buffer while it yields `Ok(Some)`, skipping each
//! BODY's raw bytes, and validate every FILE/DIR path as the receiver does.
//!
//! Every frame that decodes must re-encode to bytes that decode to the same
//! frame (modulo the encoder's documented cut of text at 4 KiB), consuming
//! exactly the re-encoded bytes; and when no text was altered (no lossy
//! UTF-8, no cut), the re-encoding must equal the input bytes: the decoder
//! accepts exactly one encoding per frame.

#![no_main]

use ftx::protocol::frame::{decode, encode, Frame};
use ftx::protocol::WireName;
use libfuzzer_sys::fuzz_target;

/// The encoder cuts agent/message text at this many bytes (`short_text`).
const TEXT_CUT: usize = 4096;

/// `s` cut the way `encode` cuts it; `None` if unchanged.
fn cut(s: &str) -> Option<String> {
    if s.len() <= TEXT_CUT {
        return None;
    }
    let mut end = TEXT_CUT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_owned())
}

/// What a frame becomes after `encode` + `decode`, and whether that differs
/// from the frame itself (text cut; a PULL's paths past the cap are never
/// decoded in the first place).
fn normalized(f: &Frame) -> (Frame, bool) {
    let mut g = f.clone();
    let text = match &mut g {
        Frame::Hello { agent, .. } | Frame::Welcome { agent, .. } => Some(agent),
        Frame::Reject { message, .. }
        | Frame::Result { message, .. }
        | Frame::Left { message, .. }
        | Frame::Error { message, .. } => Some(message),
        _ => None,
    };
    let mut changed = false;
    if let Some(t) = text {
        if let Some(c) = cut(t) {
            *t = c;
            changed = true;
        }
    }
    (g, changed)
}

/// True if a decoded text may differ from its wire bytes (lossy UTF-8).
fn lossy(f: &Frame) -> bool {
    match f {
        Frame::Hello { agent: t, .. }
        | Frame::Welcome { agent: t, .. }
        | Frame::Reject { message: t, .. }
        | Frame::Result { message: t, .. }
        | Frame::Left { message: t, .. }
        | Frame::Error { message: t, .. } => t.contains('\u{FFFD}'),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        let (frame, used) = match decode(&data[at..]) {
            Ok(Some(x)) => x,
            Ok(None) | Err(_) => break,
        };
        assert!(used >= 5 && used <= data.len() - at, "bad consumed {used}");
        let wire = &data[at..at + used];
        at += used;

        match &frame {
            Frame::File(h) => {
                let _ = WireName::from_bytes(&h.path);
            }
            Frame::Dir(h) => {
                let _ = WireName::from_bytes(&h.path);
            }
            // A connection reads `length` raw bytes after a BODY header.
            Frame::Body { length, .. } => {
                let skip = usize::try_from(*length).unwrap_or(usize::MAX);
                at = at.saturating_add(skip).min(data.len());
            }
            _ => {}
        }

        out.clear();
        encode(&frame, &mut out);
        let (want, changed) = normalized(&frame);
        match decode(&out) {
            Ok(Some((back, n))) => {
                assert_eq!(back, want, "re-encoding decodes to another frame");
                assert_eq!(n, out.len(), "re-encoding not consumed whole");
            }
            other => panic!("re-encoding of {} does not decode: {other:?}", frame.name()),
        }
        if !changed && !lossy(&frame) {
            assert_eq!(
                out.as_slice(),
                wire,
                "decoder accepted a non-canonical encoding"
            );
        }
    }
});
