//! Smoke test for `ftx bench` (`ftx::bench::run_with`): a small run with the
//! real `ftx` binary as sender and receiver, checked end to end.

use ftx::bench::run_with;
use ftx::config::BenchConfig;
use std::path::Path;

#[test]
fn small_bench_runs_verifies_and_cleans_up() {
    let parent = tempfile::tempdir().expect("tempdir");
    let cfg = BenchConfig {
        size: 8 << 20,
        files: 50,
        streams: 1,
        dir: Some(parent.path().to_path_buf()),
        keep: false,
    };
    let report = run_with(&cfg, Path::new(env!("CARGO_BIN_EXE_ftx"))).expect("bench");
    // The big file six ways (md5, xxh3, cached, stdin; md5 and cached
    // encrypted with a token), then the small ones.
    assert_eq!(report.cases.len(), 7);
    for (big, how) in report.cases[..6].iter().zip([
        "md5",
        "xxh3",
        "cached",
        "stdin",
        "md5, token",
        "cached, token",
    ]) {
        assert_eq!((big.bytes, big.files), (8 << 20, 1));
        assert!(big.name.ends_with(&format!("({how})")), "{}", big.name);
    }
    let small = &report.cases[6];
    assert_eq!(small.files, 50);
    assert!(small.bytes >= 50 && small.bytes <= 50 * 64 * 1024);
    for c in &report.cases {
        assert!(!c.wall.is_zero());
        assert!(c.send.max_rss_kib > 0 && c.recv.max_rss_kib > 0);
    }
    assert!(report.md5_mb_s.is_some_and(|v| v > 0.0));
    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("read_dir")
        .collect();
    assert!(left.is_empty(), "work directory not removed: {left:?}");
}

#[test]
fn keep_leaves_the_data_and_a_failed_transfer_is_an_error() {
    let parent = tempfile::tempdir().expect("tempdir");
    // `false` exits 1 without listening: the bench must fail, not hang.
    let cfg = BenchConfig {
        size: 4096,
        files: 0,
        streams: 1,
        dir: Some(parent.path().to_path_buf()),
        keep: true,
    };
    let err = run_with(&cfg, Path::new("/bin/false")).expect_err("must fail");
    assert!(format!("{err:#}").contains("listening"), "{err:#}");
    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("read_dir")
        .collect();
    assert_eq!(left.len(), 1, "kept work directory expected");
}
