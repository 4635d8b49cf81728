//! Tests of the handshake and the record layer.

use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

fn pair() -> (Wire, Wire) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    (Wire::new(a), Wire::new(b))
}

fn keys(tok: &[u8], tok2: &[u8]) -> Result<(Keys, Keys), HandshakeError> {
    keys_with(tok, tok2, Cipher::AesGcm, Cipher::AesGcm)
}

fn keys_with(
    tok: &[u8],
    tok2: &[u8],
    c1: Cipher,
    c2: Cipher,
) -> Result<(Keys, Keys), HandshakeError> {
    let p = prologue(&Frame::End { flags: 0 }, &Frame::End { flags: 0 });
    let (init, m1) = Initiator::start(&Token::new(tok), &p, c1)?;
    let (rk, m2) = respond(&Token::new(tok2), &p, c2, &m1)?;
    Ok((init.finish(&m2)?, rk))
}

#[test]
fn either_cipher_works_and_both_sides_must_agree() {
    for c in [Cipher::AesGcm, Cipher::ChaChaPoly] {
        let (a, mut b) = pair();
        let (ka, kb) = keys_with(b"k", b"k", c, c).expect("keys");
        a.seal(ka, &[]);
        b.seal(kb, &[]);
        a.send_all(b"over the wire").expect("send");
        let mut got = [0u8; 13];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"over the wire");
    }
    assert!(matches!(
        keys_with(b"k", b"k", Cipher::AesGcm, Cipher::ChaChaPoly),
        Err(HandshakeError::WrongToken)
    ));
    assert_eq!(
        Cipher::preferred(Some(Cipher::ChaChaPoly)),
        Cipher::ChaChaPoly
    );
}

#[test]
fn a_wrong_token_or_prologue_fails_the_handshake() {
    assert!(keys(b"same", b"same").is_ok());
    assert!(matches!(
        keys(b"one", b"other"),
        Err(HandshakeError::WrongToken)
    ));
    let t = Token::new(*b"t");
    let (_, m1) = Initiator::start(&t, b"a", Cipher::AesGcm).expect("start");
    assert!(matches!(
        respond(&t, b"b", Cipher::AesGcm, &m1),
        Err(HandshakeError::WrongToken)
    ));
}

#[test]
fn records_carry_any_sizes_and_reads_of_any_size() {
    let (a, mut b) = pair();
    let (ka, kb) = keys(b"k", b"k").expect("keys");
    a.seal(ka, &[]);
    b.seal(kb, &[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sizes = [1usize, 100, MAX_PLAIN, MAX_PLAIN + 1, 200_000];
    let writer = {
        let a = a.try_clone().expect("clone");
        let data = data.clone();
        std::thread::spawn(move || {
            for s in sizes {
                a.send_all(&data[..s]).expect("send");
            }
            a.shutdown(Shutdown::Write).expect("shutdown");
        })
    };
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_001];
    let mut step = 1;
    loop {
        let n = b.read(&mut buf[..step]).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        step = step * 3 % 70_001 + 1;
    }
    writer.join().expect("writer");
    let want: Vec<u8> = sizes.iter().flat_map(|&s| data[..s].to_vec()).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want);
    assert!(a.is_sealed() && a.plain_fd().is_none());
}

#[test]
fn part_of_a_record_counts_as_arrival() {
    let (a, b) = pair();
    let (ka, kb) = keys(b"k", b"k").expect("keys");
    a.seal(ka, &[]);
    a.send_all(&[7u8; 1000]).expect("send");
    let mut record = vec![0u8; 2 + 1000 + 16];
    Wire::new(b.tcp().try_clone().expect("clone"))
        .read_exact(&mut record)
        .expect("the sealed record");
    let (c, mut d) = pair();
    d.seal(kb, &[]);
    let (tx, arrivals) = std::sync::mpsc::channel();
    d.on_receive(Arc::new(move || {
        let _ = tx.send(());
    }));
    c.tcp().write_all(&record[..500]).expect("first half");
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 2000];
        d.read(&mut buf).map(|n| buf[..n].to_vec())
    });
    arrivals
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("half a record is an arrival");
    c.tcp().write_all(&record[500..]).expect("second half");
    let got = reader.join().expect("reader").expect("read");
    assert_eq!(got, vec![7u8; 1000]);
}

#[test]
fn a_flipped_byte_is_refused_at_its_record() {
    let (a, b) = pair();
    let (ka, kb) = keys(b"k", b"k").expect("keys");
    a.seal(ka, &[]);
    // Seal three records on `a`'s side into memory by writing them to
    // the socket, then tamper with the second one on the way.
    let mut raw = Wire::new(b.tcp().try_clone().expect("clone"));
    a.send_all(&[1u8; 10]).expect("send");
    a.send_all(&[2u8; 10]).expect("send");
    a.shutdown(Shutdown::Write).expect("shutdown");
    let mut wire = Vec::new();
    raw.read_to_end(&mut wire).expect("read");
    assert_eq!(wire.len(), 2 * (2 + 10 + 16));
    wire[28 + 5] ^= 1;
    let (c, mut d) = pair();
    d.seal(kb, &[]);
    c.tcp().write_all(&wire).expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let mut buf = [0u8; 64];
    assert_eq!(d.read(&mut buf).expect("first record"), 10);
    let e = d.read(&mut buf).expect_err("second record");
    assert!(
        matches!(record_error(&e), Some(RecordError::Tampered(1))),
        "{e}"
    );
}

#[test]
fn records_sealed_in_place_are_the_ones_snow_makes() {
    for c in [Cipher::AesGcm, Cipher::ChaChaPoly] {
        let (ki, kr) = keys_with(b"k", b"k", c, c).expect("keys");
        let data: Vec<u8> = (0..MAX_PLAIN as u32)
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        // Each side's sending key, against snow's record and the peer's
        // opening of it.
        for (sender, peer) in [(&ki, &kr), (&kr, &ki)] {
            for n in [0u64, 1, 7, (1 << 32) + 5, 1 << 40] {
                for len in [0usize, 1, 1000, MAX_PLAIN] {
                    let mut snows = vec![0u8; len + TAG_LEN];
                    let k = sender
                        .0
                        .write_message(n, &data[..len], &mut snows)
                        .expect("snow seals");
                    assert_eq!(k, len + TAG_LEN);
                    let mut ours = data[..len].to_vec();
                    let tag = sender.1.seal_in_place(n, &mut ours).expect("seal");
                    ours.extend_from_slice(&tag);
                    assert!(ours == snows, "{c:?} record {n} of {len} bytes");
                    let mut opened = vec![0u8; len + TAG_LEN];
                    let m = peer.0.read_message(n, &ours, &mut opened).expect("opens");
                    assert!(opened[..m] == data[..len]);
                }
            }
        }
        assert!(ki.1.seal_in_place(u64::MAX, &mut [0u8; 4]).is_err());
        assert!(ki
            .1
            .seal_in_place(0, &mut vec![0u8; MAX_PLAIN + 1])
            .is_err());
    }
}

#[test]
fn bodies_sealed_in_place_read_back_whole_either_way() {
    for c in [Cipher::AesGcm, Cipher::ChaChaPoly] {
        let (a, b) = pair();
        let (ka, kb) = keys_with(b"k", b"k", c, c).expect("keys");
        a.seal(ka, &[]);
        b.seal(kb, &[]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        // The initiator sends to the responder, then the other way round;
        // in-place bodies between ordinary writes, as a sender mixes them.
        for (from, to) in [(&a, &b), (&b, &a)] {
            let writer = {
                let from = from.try_clone().expect("clone");
                let data = data.clone();
                std::thread::spawn(move || {
                    from.send_all(b"head").expect("send");
                    for s in [1usize, MAX_PLAIN, MAX_PLAIN + 1, 200_000] {
                        let mut body = data[..s].to_vec();
                        from.send_consuming(&mut body).expect("send");
                        assert!(s < 64 || body[..] != data[..s], "sealed in place");
                    }
                    from.send_all(b"tail").expect("send");
                })
            };
            let want: Vec<u8> = [&b"head"[..]]
                .into_iter()
                .chain([1usize, MAX_PLAIN, MAX_PLAIN + 1, 200_000].map(|s| &data[..s]))
                .chain([&b"tail"[..]])
                .flatten()
                .copied()
                .collect();
            let mut got = vec![0u8; want.len()];
            to.try_clone()
                .expect("clone")
                .read_exact(&mut got)
                .expect("read");
            writer.join().expect("writer");
            assert!(got == want, "{c:?}");
        }
    }
    // A plain connection sends the bytes as they are, and leaves them so.
    let (a, mut b) = pair();
    let mut body = b"plain bytes".to_vec();
    a.send_consuming(&mut body).expect("send");
    assert_eq!(&body, b"plain bytes");
    let mut got = [0u8; 11];
    b.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"plain bytes");
}
