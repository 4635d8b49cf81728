//! Unit tests of [`super`].

use super::state::*;
use super::*;
use crate::protocol::limits::MAX_COMPONENT_LEN;

fn tmpdir() -> (tempfile::TempDir, Dir) {
    let t = tempfile::tempdir().expect("tempdir");
    let d = Dir::open_ambient_dir(t.path(), cap_std::ambient_authority()).expect("dir");
    (t, d)
}

fn data(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn md5_of(b: &[u8]) -> Md5Digest {
    let mut h = Hasher::new();
    h.update(b);
    h.finish()
}

/// Writes `upto` bytes of `all`, checkpoints, and drops the writer.
fn interrupted(dir: &Dir, names: &Names, all: &[u8], upto: usize) {
    let o = open(
        dir,
        names,
        all.len() as u64,
        md5_of(all),
        &Budget::new(budget::DEFAULT_BYTES),
    )
    .expect("open");
    let mut w = o.writer;
    let start = o.offset as usize;
    for c in all[start..upto].chunks(100_000) {
        w.write(c).expect("write");
    }
    w.suspend().expect("checkpoint");
}

#[test]
fn resumes_at_last_full_block_and_digest_matches() {
    let (_t, dir) = tmpdir();
    let all = data(3 * BLOCK as usize + 12345);
    let names = Names::for_target("f.bin".as_ref());
    interrupted(&dir, &names, &all, 2 * BLOCK as usize + 777);
    let o = open(
        &dir,
        &names,
        all.len() as u64,
        md5_of(&all),
        &Budget::new(budget::DEFAULT_BYTES),
    )
    .expect("open");
    assert_eq!(o.offset, 2 * BLOCK);
    let mut w = o.writer;
    w.write(&all[o.offset as usize..]).expect("write");
    let (_, d) = w.finish().expect("finish");
    assert_eq!(d, md5_of(&all));
}

#[test]
fn flipped_byte_in_partial_resumes_before_it() {
    let (t, dir) = tmpdir();
    let all = data(3 * BLOCK as usize);
    let names = Names::for_target("f.bin".as_ref());
    interrupted(&dir, &names, &all, 3 * BLOCK as usize - 1);
    let p = t.path().join(names.part());
    let mut bytes = std::fs::read(&p).expect("read");
    bytes[BLOCK as usize + 5] ^= 1;
    std::fs::write(&p, &bytes).expect("write");
    let o = open(
        &dir,
        &names,
        all.len() as u64,
        md5_of(&all),
        &Budget::new(budget::DEFAULT_BYTES),
    )
    .expect("open");
    assert_eq!(o.offset, BLOCK);
    let mut w = o.writer;
    w.write(&all[BLOCK as usize..]).expect("write");
    assert_eq!(w.finish().expect("finish").1, md5_of(&all));
}

#[test]
fn garbage_truncated_or_foreign_state_starts_over() {
    let (t, dir) = tmpdir();
    let all = data(2 * BLOCK as usize);
    let names = Names::for_target("f.bin".as_ref());
    let sp = t.path().join(names.state());

    interrupted(&dir, &names, &all, BLOCK as usize + 1);
    std::fs::write(&sp, b"garbage").expect("write");
    let o = open(
        &dir,
        &names,
        all.len() as u64,
        md5_of(&all),
        &Budget::new(budget::DEFAULT_BYTES),
    )
    .expect("open");
    assert_eq!(o.offset, 0);
    assert!(o.discarded.is_some());
    drop(o);

    interrupted(&dir, &names, &all, BLOCK as usize + 1);
    let st = std::fs::read(&sp).expect("read");
    std::fs::write(&sp, &st[..st.len() - 3]).expect("write");
    assert_eq!(
        open(
            &dir,
            &names,
            all.len() as u64,
            md5_of(&all),
            &Budget::new(budget::DEFAULT_BYTES)
        )
        .expect("open")
        .offset,
        0
    );

    interrupted(&dir, &names, &all, BLOCK as usize + 1);
    let other = md5_of(b"other");
    let o = open(
        &dir,
        &names,
        all.len() as u64,
        other,
        &Budget::new(budget::DEFAULT_BYTES),
    )
    .expect("open");
    assert_eq!(o.offset, 0);
    assert_eq!(
        o.discarded.as_deref(),
        Some("partial belongs to other content")
    );
}

#[test]
fn partial_shorter_than_its_records_resumes_at_what_is_there() {
    let (t, dir) = tmpdir();
    let all = data(3 * BLOCK as usize);
    let names = Names::for_target("f.bin".as_ref());
    interrupted(&dir, &names, &all, 3 * BLOCK as usize - 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(t.path().join(names.part()))
        .expect("open");
    f.set_len(BLOCK + 10).expect("truncate");
    let o = open(
        &dir,
        &names,
        all.len() as u64,
        md5_of(&all),
        &Budget::new(budget::DEFAULT_BYTES),
    )
    .expect("open");
    assert_eq!(o.offset, BLOCK);
}

#[test]
fn state_round_trips_and_rejects_tampering() {
    let blocks = vec![
        BlockRec {
            xxh3: 1,
            md5_state: vec![1, 2, 3],
        },
        BlockRec {
            xxh3: 2,
            md5_state: vec![4, 5, 6],
        },
    ];
    let enc = encode_state(3 * BLOCK, &[9; 16], &blocks, None);
    assert_eq!(decode_state(&enc), Ok((3 * BLOCK, [9; 16], blocks)));
    for i in 0..enc.len() {
        let mut bad = enc.clone();
        bad[i] ^= 0x40;
        assert!(decode_state(&bad).is_err(), "byte {i}");
        assert!(decode_state(&enc[..i]).is_err(), "prefix {i}");
    }
}

#[test]
fn long_names_fit() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let n = Names::for_target("x".repeat(255).as_ref());
    assert!(n.state_tmp().len() <= MAX_COMPONENT_LEN);
    let part = n.part();
    let part = part.to_str().expect("hex");
    assert!(part.ends_with(".ftx-hpart"));
    assert_eq!(Names::for_target(OsStr::new("a")).part(), ".a.ftx-part");
    // A short name equal to the digest of a long one gets other names.
    let hex_name = part.trim_start_matches('.').trim_end_matches(".ftx-hpart");
    assert_ne!(Names::for_target(OsStr::new(hex_name)).part(), n.part());
    // Every name ftx uses for itself is refused on the wire, and a name
    // that is not UTF-8 gets its partial's name byte for byte.
    let a = Names::for_target(OsStr::new("a"));
    let raw = Names::for_target(OsStr::from_bytes(b"r\xff\n"));
    assert_eq!(raw.part().as_bytes(), b".r\xff\n.ftx-part");
    for x in [
        &n.part(),
        &n.state(),
        &n.state_tmp(),
        &a.part(),
        &a.state(),
        &a.state_tmp(),
        &raw.part(),
    ] {
        assert!(
            crate::protocol::WireName::from_bytes(x.as_bytes()).is_err(),
            "{x:?}"
        );
    }
}

#[test]
fn a_file_written_from_0_comes_with_its_delta_block_digests() {
    let (t, dir) = tmpdir();
    let all = data(5 * BLOCK as usize / 4 + 100);
    let names = Names::for_target("f.bin".as_ref());
    let budget = Budget::new(budget::DEFAULT_BYTES);
    let o = open(&dir, &names, all.len() as u64, md5_of(&all), &budget).expect("open");
    let mut w = o.writer;
    for c in all.chunks(300_000) {
        w.write(c).expect("write");
    }
    let Finished::Ready(_, d, blocks) = w.end().expect("end") else {
        panic!("a file of a block or more is written, not held");
    };
    assert_eq!(d, md5_of(&all));
    let (block, digests) = blocks.expect("block digests");
    let (want_block, total) = crate::delta::cut(all.len() as u64).expect("cut");
    assert_eq!(block, want_block);
    let f = std::fs::File::open(t.path().join(names.part())).expect("partial");
    let read = |b: &mut [u8], at| std::os::unix::fs::FileExt::read_exact_at(&f, b, at);
    assert_eq!(
        digests,
        crate::delta::digests(read, block, total).expect("digests")
    );

    // A resumed file has no digests of the blocks before its offset.
    let names = Names::for_target("g.bin".as_ref());
    interrupted(&dir, &names, &all, BLOCK as usize + 1);
    let o = open(&dir, &names, all.len() as u64, md5_of(&all), &budget).expect("open");
    assert!(o.offset > 0);
    let mut w = o.writer;
    w.write(&all[o.offset as usize..]).expect("write");
    let Finished::Ready(_, _, blocks) = w.end().expect("end") else {
        panic!("written, not held");
    };
    assert!(blocks.is_none(), "no digests for a resumed file");
}

#[test]
fn a_partial_untouched_since_its_checkpoint_resumes_at_once_and_is_checked_beside() {
    let (t, dir) = tmpdir();
    let all = data(3 * BLOCK as usize + 777);
    let names = Names::for_target("u.bin".as_ref());
    let budget = Budget::new(budget::DEFAULT_BYTES);
    interrupted(&dir, &names, &all, 2 * BLOCK as usize + 5);
    let o = open(&dir, &names, all.len() as u64, md5_of(&all), &budget).expect("open");
    assert_eq!(o.offset, 2 * BLOCK, "after every checkpointed block");
    let mut w = o.writer;
    w.write(&all[o.offset as usize..]).expect("write");
    assert_eq!(w.finish().expect("finish").1, md5_of(&all));

    // Damage no write can show: a byte changed, and the state rewritten to
    // record the partial as it is now (as if the disk had changed it).
    let names = Names::for_target("rot.bin".as_ref());
    interrupted(&dir, &names, &all, 2 * BLOCK as usize + 5);
    let part = t.path().join(names.part());
    let mut bytes = std::fs::read(&part).expect("read");
    bytes[BLOCK as usize + 3] ^= 1;
    std::fs::write(&part, &bytes).expect("write");
    let sp = t.path().join(names.state());
    let (size, md5, blocks) = decode_state(&std::fs::read(&sp).expect("state")).expect("decode");
    let now = crate::cache::Version::of(&std::fs::metadata(&part).expect("md"));
    std::fs::write(&sp, encode_state(size, &md5, &blocks, Some(&now))).expect("state");
    let o = open(&dir, &names, all.len() as u64, md5_of(&all), &budget).expect("open");
    assert_eq!(o.offset, 2 * BLOCK, "resumed at once");
    let mut w = o.writer;
    w.write(&all[o.offset as usize..]).expect("write");
    let e = w.finish().expect_err("the damaged prefix is found");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

#[test]
fn a_small_body_held_unnamed_gets_its_file_only_once_verified() {
    let (_t, dir) = tmpdir();
    let names = Names::for_target("s.txt".as_ref());
    let body = b"small".to_vec();
    let md5 = md5_of(&body);
    let budget = Budget::new(budget::DEFAULT_BYTES);
    let how = (Algo::Md5, true);
    let (o, _) = create_small(&dir, &names, body.len() as u64, md5, how, &budget).expect("start");
    assert!(o.id.is_unnamed());
    let mut w = o.writer;
    w.write(&body).expect("hold");
    let Ok(Finished::Held(held)) = w.end() else {
        panic!("a small body is held");
    };
    let (file, held) = held.into_parts();
    assert!(file.is_none(), "no file while the body is on its way");
    assert_eq!(&*held, &body[..]);
    assert_eq!(dir.entries().expect("ls").count(), 0, "nothing on disk");
    // Verified: an unnamed file where the directory allows it...
    let size = body.len() as u64;
    let (_, id, _) =
        small_file(&dir, &names, (size, md5, Algo::Md5, Some(0o600)), &budget).expect("file");
    assert!(id.is_unnamed());
    assert_eq!(dir.entries().expect("ls").count(), 0);
    // ...else a named partial, made anew over a stale one.
    dir.write(names.part(), b"stale, of another file")
        .expect("stale");
    let (mut f, id, why) =
        small_file(&dir, &names, (size, md5, Algo::Md5, None), &budget).expect("named");
    assert!(!id.is_unnamed());
    assert_eq!(FileId::at(&dir, &names.part()), Some(id));
    assert!(why.is_some(), "the stale partial is said to be discarded");
    f.write_all(&body).expect("write");
    assert_eq!(dir.read(names.part()).expect("read"), body);
}
