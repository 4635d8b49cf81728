//! The receiver under attack by what sits in its output directory or
//! shares it (issue: "a receiver that keeps its promises under attack"):
//! hard links planted at the working names of partials, a second receiver
//! on the same directory. Real receivers, real `ftx send` processes and a
//! raw-bytes peer over loopback.
//!
//! The invariant every case checks: a file outside OUT (the victim) keeps
//! its content, and what arrives under a final name is what was sent.

use crate::common::raw::{file_offer, md5_of, Raw};
use crate::common::{assert_status, dirs, md5_hex, poll_until, send, write_random, Receiver};
use ftx::protocol::frame::{reject_code, result_status, Frame};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const ORIGINAL: &[u8] = b"ORIGINAL victim content, outside OUT\n";

/// A victim file outside OUT.
fn victim(t: &Path) -> std::path::PathBuf {
    let outside = t.join("outside");
    fs::create_dir_all(&outside).expect("mkdir outside");
    let v = outside.join("victim");
    fs::write(&v, ORIGINAL).expect("write victim");
    v
}

fn assert_victim_intact(v: &Path) {
    assert_eq!(
        fs::read(v).expect("read victim"),
        ORIGINAL,
        "the file outside OUT was written through a hard link"
    );
}

/// A state file as the store writes it (see `src/store/state.rs`), for a
/// file of `size` bytes and MD5 `md5`, vouching that the partial's first
/// block hashes to `xxh3` and that the MD5 state after it is `md5_state`.
fn forged_state(size: u64, md5: &[u8; 16], xxh3: u64, md5_state: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"FTXPART1");
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(md5);
    v.extend_from_slice(&ftx::store::BLOCK.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&(md5_state.len() as u16).to_be_bytes());
    v.extend_from_slice(&xxh3.to_be_bytes());
    v.extend_from_slice(md5_state);
    let trailer = xxhash_rust::xxh3::xxh3_64(&v);
    v.extend_from_slice(&trailer.to_be_bytes());
    v
}

#[test]
fn a_hard_link_and_a_forged_state_at_the_partial_never_lead_to_writing_the_linked_file() {
    let d = dirs();
    let victim = d.t().join("outside/victim.img");
    fs::create_dir_all(d.t().join("outside")).expect("mkdir");
    // A victim a block and more long, so a forged state can vouch for it.
    write_random(&victim, 5 << 20, 3);
    let victim_before = fs::read(&victim).expect("read victim");
    let file = d.src.join("f.iso");
    write_random(&file, 6 << 20, 4);
    let honest = fs::read(&file).expect("read");
    let block = ftx::store::BLOCK as usize;
    let mut prefix = ftx::digest::Hasher::new();
    prefix.update(&honest[..block]);
    // The local attacker: the victim linked at the partial's name, and a
    // state that vouches for the victim's first block.
    fs::hard_link(&victim, d.out.join(".f.iso.ftx-part")).expect("ln");
    let state = forged_state(
        honest.len() as u64,
        &md5_of(&honest),
        xxhash_rust::xxh3::xxh3_64(&victim_before[..block]),
        &prefix.save(),
    );
    fs::write(d.out.join(".f.iso.ftx-state"), state).expect("write state");

    let rx = Receiver::start(&d.out, &[]);
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "send over a planted hard link");
    assert_eq!(
        fs::read(&victim).expect("read victim"),
        victim_before,
        "the receiver wrote into the file linked at the partial's name"
    );
    assert_eq!(md5_hex(d.out.join("f.iso")), md5_hex(&file));
    let log = rx.stderr();
    assert!(
        log.contains("links") && log.contains("starting over"),
        "the receiver says why it did not resume:\n{log}"
    );
}

#[test]
fn hard_links_recreated_at_the_partial_name_while_offers_arrive_never_reach_the_linked_file() {
    let d = dirs();
    let victim = victim(d.t());
    let rx = Receiver::start(&d.out, &["--overwrite"]);
    let part = d.out.join(".report.txt.ftx-part");
    let stop = Arc::new(AtomicBool::new(false));
    let planter = {
        let (stop, victim, part) = (Arc::clone(&stop), victim.clone(), part.clone());
        std::thread::spawn(move || {
            let mut planted = 0u64;
            // Bounded: stops when told, or after a million tries.
            for _ in 0..1_000_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = fs::remove_file(&part);
                if fs::hard_link(&victim, &part).is_ok() {
                    planted += 1;
                }
            }
            planted
        })
    };
    let mut sent = 0;
    for i in 0..20u64 {
        let file = d.src.join("report.txt");
        write_random(&file, 100_000 + i * 1000, i);
        let out = send(
            &[
                "-q",
                "--no-cache",
                "--retries",
                "0",
                file.to_str().expect("utf-8"),
            ],
            rx.addr,
        );
        // The planter may make a send fail (the partial's name is taken);
        // what matters is where the bytes went.
        if out.status.success() {
            sent += 1;
            assert_eq!(md5_hex(d.out.join("report.txt")), md5_hex(&file));
        }
        assert_victim_intact(&victim);
    }
    stop.store(true, Ordering::SeqCst);
    let planted = planter.join().expect("planter");
    assert!(planted > 0, "the planter never managed to plant a link");
    assert_victim_intact(&victim);
    eprintln!("{sent} of 20 sends succeeded while {planted} links were planted");
}

#[test]
fn a_second_receiver_on_the_same_out_never_takes_over_a_live_partial() {
    let d = dirs();
    let rx1 = Receiver::start(&d.out, &[]);
    let rx2 = Receiver::start(&d.out, &[]);
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let offer = file_offer(1, b"report.bin", &data);

    // Receiver 1 takes half of the body and holds the partial.
    let mut one = Raw::session(rx1.addr);
    one.send(&offer);
    assert!(matches!(
        one.expect("ACCEPT"),
        Frame::Accept { offset: 0, .. }
    ));
    one.send(&Frame::Body {
        id: 1,
        offset: 0,
        length: data.len() as u64,
    });
    let half = data.len() / 2;
    one.write(&data[..half]);
    let part = d.out.join(".report.bin.ftx-part");
    assert!(
        poll_until(WAIT, || part.exists()),
        "receiver 1 creates its partial when the body starts"
    );

    // Receiver 2 is offered the same file: it must not take the partial.
    let mut two = Raw::session(rx2.addr);
    two.send(&offer);
    match two.expect("REJECT or ACCEPT") {
        Frame::Reject { code, message, .. } => {
            assert_eq!(code, reject_code::IN_PROGRESS, "{message}");
        }
        Frame::Accept { .. } => {
            // Accepted as fresh: its body must not land on receiver 1's
            // partial (the exclusive create fails, the file fails).
            two.send_body(1, &data);
            match two.expect("RESULT") {
                Frame::Result { status, .. } => assert_ne!(status, result_status::OK),
                other => panic!("expected RESULT, got {other:?}"),
            }
        }
        other => panic!("expected REJECT or ACCEPT, got {other:?}"),
    }
    assert!(part.exists(), "receiver 1's partial is still there");

    // Receiver 1 finishes: its own bytes, verified, under the final name.
    one.write(&data[half..]);
    match one.expect("RESULT") {
        Frame::Result { status, .. } => assert_eq!(status, result_status::OK),
        other => panic!("expected RESULT, got {other:?}"),
    }
    one.end();
    assert_eq!(
        fs::read(d.out.join("report.bin")).expect("read"),
        data,
        "the final file is receiver 1's verified bytes"
    );
}
