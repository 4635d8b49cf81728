//! Manifests: `ftx manifest`, `--manifest` on `ftx send`, `ftx recv` and `ftx get`,
//! checked with the real `md5sum -c`.

use crate::common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// A tree with names `md5sum` must escape, a hard link and a symlink.
fn tree(src: &Path) -> std::path::PathBuf {
    let t = src.join("t");
    fs::create_dir_all(t.join("sub")).expect("mkdir");
    write_random(t.join("big.bin"), 3 << 20, 71);
    fs::write(t.join("sub/we ird\\name"), b"backslash\n").expect("write");
    fs::write(t.join("sub/new\nline"), b"newline\n").expect("write");
    fs::hard_link(t.join("big.bin"), t.join("sub/hard")).expect("hard link");
    std::os::unix::fs::symlink("big.bin", t.join("link")).expect("symlink");
    t
}

/// `md5sum -c MANIFEST` in `dir`: its output, and how many lines said OK.
fn md5sum_check(dir: &Path, manifest: &Path) -> (bool, usize, String) {
    let out = Command::new("md5sum")
        .arg("-c")
        .arg(manifest)
        .current_dir(dir)
        .output()
        .expect("md5sum");
    let said = text(&out.stdout) + &text(&out.stderr);
    let ok = said.lines().filter(|l| l.ends_with(": OK")).count();
    (out.status.success(), ok, said)
}

#[test]
fn a_manifest_of_a_tree_checks_with_md5sum() {
    let d = dirs();
    let t = tree(&d.src);
    let manifest = d.t().join("t.md5");
    let mut cmd = ftx_cmd();
    cmd.args(["manifest", "-o"]).arg(&manifest).arg(&t);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "ftx manifest");
    // Four files (the hard link too), not the symlink.
    let (ok, n, said) = md5sum_check(&d.src, &manifest);
    assert!(ok && n == 4, "{said}");
    // A changed file fails the check.
    fs::write(t.join("sub/we ird\\name"), b"changed\n").expect("write");
    let (ok, _, said) = md5sum_check(&d.src, &manifest);
    assert!(!ok, "{said}");
}

#[test]
fn receivers_write_a_manifest_of_what_arrived_push_and_pull() {
    // Push: ftx recv --manifest.
    let d = dirs();
    let t = tree(&d.src);
    let manifest = d.t().join("got.md5");
    let rx = Receiver::start(&d.out, &["--manifest", s(&manifest)]);
    let sent = d.t().join("sent.md5");
    let out = send(&["--manifest", s(&sent), s(&t)], rx.addr);
    assert_status(&out, 0, "send");
    let (ok, n, said) = md5sum_check(&d.out, &manifest);
    assert!(ok && n == 4, "{said}");
    // The sender's manifest of what the receiver confirmed checks there
    // too, and here.
    let (ok, n, said) = md5sum_check(&d.out, &sent);
    assert!(ok && n == 4, "{said}");
    let (ok, n, said) = md5sum_check(&d.src, &sent);
    assert!(ok && n == 4, "{said}");
    // Pull: ftx get --manifest.
    let pulled = d.t().join("pulled");
    fs::create_dir(&pulled).expect("mkdir");
    let mut cmd = ftx_cmd();
    cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .arg(&t);
    let srv = Receiver::spawn(cmd, &pulled);
    let manifest = d.t().join("pulled.md5");
    let mut cmd = ftx_cmd();
    cmd.args(["get", &format!("{}/t", srv.addr), "--manifest"])
        .arg(&manifest)
        .arg("--out")
        .arg(&pulled);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "get");
    let (ok, n, said) = md5sum_check(&pulled, &manifest);
    assert!(ok && n == 4, "{said}");
}

/// A name comes once into a manifest, whatever number of sessions found
/// it there (a second send of the same tree skips every file).
#[test]
fn a_receivers_manifest_names_each_file_once() {
    let d = dirs();
    let t = tree(&d.src);
    let manifest = d.t().join("got.md5");
    let rx = Receiver::start(&d.out, &["--manifest", s(&manifest)]);
    for _ in 0..2 {
        let out = send(&[s(&t)], rx.addr);
        assert_status(&out, 0, "send");
    }
    let (ok, n, said) = md5sum_check(&d.out, &manifest);
    assert!(ok && n == 4, "{said}");
}
