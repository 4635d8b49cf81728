//! Unit tests of [`super`].

use super::*;
use proptest::prelude::*;

/// One valid frame of every type.
pub(crate) fn samples() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: 1,
            flags: 0,
            agent: "ftx/0.1.0".into(),
        },
        Frame::Welcome {
            version: 1,
            flags: 1,
            nonce: [0x5c; 16],
            agent: "ftx/0.1.0 ünï".into(),
        },
        Frame::Noise { message: [9; 48] },
        Frame::File(FileHeader {
            id: 3,
            size: u64::MAX,
            mode: 0o100644,
            mtime_s: -5,
            mtime_ns: 999_999_999,
            flags: 1,
            md5: [0xab; 16],
            path: b"dir/with space/\xff".to_vec(),
        }),
        Frame::Dir(DirHeader {
            id: 4,
            mode: 0o40755,
            mtime_s: 1_700_000_000,
            mtime_ns: 1,
            path: b"dir".to_vec(),
        }),
        Frame::Body {
            id: 3,
            offset: 10,
            length: 20,
        },
        Frame::End { flags: 0 },
        Frame::End {
            flags: end_flags::MORE,
        },
        Frame::Ready,
        Frame::Push,
        Frame::Check {
            flags: check_flags::DEEP,
        },
        Frame::Pull {
            flags: pull_flags::LIST,
            part: 1,
            parts: 3,
            paths: vec![b"root/a b".to_vec(), vec![0xff, b'/', 0x01]],
        },
        Frame::Pull {
            flags: 0,
            part: 0,
            parts: 0,
            paths: Vec::new(),
        },
        Frame::Left {
            path: b"root/fifo".to_vec(),
            message: "a FIFO: not offered".into(),
        },
        Frame::Xattr {
            id: 7,
            name: b"security.capability".to_vec(),
            value: vec![0, 0xff, 1, 2],
        },
        Frame::Accept { id: 3, offset: 0 },
        Frame::Skip { id: 3, reason: 1 },
        Frame::Reject {
            id: 3,
            code: reject_code::UNSAFE_NAME,
            message: "bad".into(),
        },
        Frame::Result {
            id: 3,
            status: result_status::OK,
            md5: [1; 16],
            message: String::new(),
        },
        Frame::Summary {
            files_ok: 1,
            files_failed: 2,
            bytes: 3,
        },
        Frame::Error {
            code: error_code::PROTOCOL,
            message: "boom".into(),
        },
        Frame::Symlink {
            id: 4,
            mtime_s: -1,
            mtime_ns: 5,
            path: b"lib/libfoo.so".to_vec(),
            target: b"libfoo.so.1".to_vec(),
        },
        Frame::Hole {
            id: 6,
            offset: 4096,
            length: 1 << 30,
        },
        Frame::Prefix {
            id: 8,
            md5: [4; 16],
        },
        Frame::Digest {
            id: 7,
            md5: [3; 16],
        },
        Frame::Link {
            id: 5,
            path: b"b/same".to_vec(),
            target: b"a/same".to_vec(),
        },
        Frame::Same {
            id: 9,
            offset: 1 << 18,
            length: 3 << 18,
        },
        Frame::Blocks {
            id: 9,
            block: 1 << 18,
            first: 0,
            total: 3,
            digests: vec![[1; 16], [2; 16], [3; 16]],
        },
    ]
}

#[test]
fn blocks_are_bounded_in_size_count_and_total() {
    let blocks = |block: u32, first: u32, total: u32, k: usize| {
        to_bytes(&Frame::Blocks {
            id: 1,
            block,
            first,
            total,
            digests: vec![[7; 16]; k],
        })
    };
    assert!(decode(&blocks(64 << 10, 0, 1, 1)).is_ok_and(|f| f.is_some()));
    assert!(decode(&blocks(64 << 20, 4000, 8000, 4000)).is_ok_and(|f| f.is_some()));
    for (why, bytes) in [
        ("not a power of two", blocks(100_000, 0, 1, 1)),
        ("too small", blocks(32 << 10, 0, 1, 1)),
        ("too large", blocks(128 << 20, 0, 1, 1)),
        ("no block", blocks(64 << 10, 0, 0, 0)),
        ("total over the cap", blocks(64 << 10, 0, (1 << 16) + 1, 1)),
        ("past its total", blocks(64 << 10, 2, 3, 2)),
        ("empty", blocks(64 << 10, 0, 3, 0)),
    ] {
        assert!(decode(&bytes).is_err(), "{why}");
    }
    // More than 4000 digests in one frame: refused (the encoder never
    // writes them, so the frame is built by hand).
    let mut raw = blocks(64 << 10, 0, 8000, 4000);
    raw.extend_from_slice(&[7; 16]);
    let len = (raw.len() - 5) as u32;
    raw[1..5].copy_from_slice(&len.to_be_bytes());
    assert!(decode(&raw).is_err(), "4001 digests");
    // A torn digest is a wrong size.
    let mut raw = blocks(64 << 10, 0, 2, 1);
    raw.extend_from_slice(&[7; 8]);
    let len = (raw.len() - 5) as u32;
    raw[1..5].copy_from_slice(&len.to_be_bytes());
    assert!(decode(&raw).is_err(), "a torn digest");
}

#[test]
fn every_frame_round_trips() {
    for f in samples() {
        let bytes = to_bytes(&f);
        let (back, used) = decode(&bytes)
            .expect("valid frame")
            .expect("complete frame");
        assert_eq!(back, f);
        assert_eq!(used, bytes.len(), "{}", f.name());
    }
}

#[test]
fn every_strict_prefix_is_incomplete() {
    for f in samples() {
        let bytes = to_bytes(&f);
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "{} cut at {cut}", f.name());
        }
    }
}

#[test]
fn frames_decode_back_to_back() {
    let mut buf = Vec::new();
    for f in samples() {
        encode(&f, &mut buf);
    }
    let mut at = 0;
    let mut n = 0;
    while let Some((_, used)) = decode(&buf[at..]).expect("valid") {
        at += used;
        n += 1;
    }
    assert_eq!(n, samples().len());
    assert_eq!(at, buf.len());
}

#[test]
fn unknown_type_is_an_error() {
    for t in [0x00u8, 0x08, 0x1B, 0x27, 0x7E, 0x80, 0xFF] {
        assert_eq!(decode(&[t]), Err(FrameError::UnknownType(t)));
        assert_eq!(decode(&[t, 0, 0, 0, 0]), Err(FrameError::UnknownType(t)));
    }
}

#[test]
fn oversize_length_is_an_error_not_an_allocation() {
    for len in [MAX_CONTROL_PAYLOAD + 1, 1 << 31, u32::MAX] {
        let mut b = vec![kind::FILE];
        b.extend_from_slice(&len.to_be_bytes());
        assert!(matches!(decode(&b), Err(FrameError::TooLong { .. })));
    }
}

#[test]
fn wrong_sizes_are_errors() {
    // END with a payload byte past its flags.
    assert!(matches!(
        decode(&[kind::END, 0, 0, 0, 5, 0, 0, 0, 0, 0]),
        Err(FrameError::Trailing(..))
    ));
    // PUSH with a payload byte.
    assert!(matches!(
        decode(&[kind::PUSH, 0, 0, 0, 1, 0]),
        Err(FrameError::Trailing(..))
    ));
    // ACCEPT with a short payload.
    assert!(matches!(
        decode(&[kind::ACCEPT, 0, 0, 0, 2, 0, 0]),
        Err(FrameError::Truncated(..))
    ));
    // FILE whose str length points past the payload.
    let mut f = to_bytes(&samples()[3]);
    let path_len_at = f.len() - b"dir/with space/\xff".len() - 2;
    f[path_len_at] = 0xff; // high byte of the path's u16 length
    assert!(decode(&f).is_err());
    // HELLO with a wrong magic.
    let mut h = to_bytes(&samples()[0]);
    h[5] = b'X';
    assert_eq!(decode(&h), Err(FrameError::BadMagic));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_payload_after_valid_type_never_panics(
        t in prop::sample::select(vec![1u8, 2, 3, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x7f]),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut b = vec![t];
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&payload);
        if let Ok(Some((_, used))) = decode(&b) {
            prop_assert!(used <= b.len());
        }
    }

    #[test]
    fn file_headers_round_trip(
        id in any::<u32>(), size in any::<u64>(), mode in any::<u32>(),
        mtime_s in any::<i64>(), mtime_ns in any::<u32>(), md5 in any::<[u8; 16]>(),
        path in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let f = Frame::File(FileHeader { id, size, mode, mtime_s, mtime_ns, flags: 0, md5, path });
        let b = to_bytes(&f);
        prop_assert_eq!(decode(&b), Ok(Some((f, b.len()))));
    }
}

#[test]
fn a_pull_with_too_many_paths_is_refused_from_its_count() {
    // flags, part, parts, then a count over the cap and no paths.
    let mut payload = vec![0u8; 8];
    payload.extend_from_slice(&(crate::protocol::limits::MAX_PULL_PATHS as u16 + 1).to_be_bytes());
    let mut wire = vec![kind::PULL];
    wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    wire.extend_from_slice(&payload);
    assert!(decode(&wire).is_err());
}
