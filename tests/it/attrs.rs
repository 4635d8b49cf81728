//! Extended attributes, POSIX ACLs and file capabilities: `-X`/`--xattrs`
//! and `-A`/`--acls` as rsync's, the hint when they are off, and what an
//! unprivileged receiver cannot set, named.

use crate::common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Runs a tool; `None` when it is not installed (the caller says so).
fn tool(name: &str, args: &[&str], cwd: &Path) -> Option<String> {
    let out = Command::new(name)
        .args(args)
        .current_dir(cwd)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tree with user attributes on a file and a directory, an ACL on a
/// file, a default ACL on a directory and (as root) a file capability.
/// `None` when the tools (attr, acl, libcap2-bin) are missing.
fn tree_with_attrs(src: &Path) -> Option<()> {
    let tree = src.join("tree");
    fs::create_dir_all(tree.join("sub")).expect("mkdir");
    fs::write(tree.join("plain.txt"), b"plain").expect("write");
    fs::write(tree.join("noted.txt"), b"noted").expect("write");
    fs::write(tree.join("acl.txt"), b"acl").expect("write");
    fs::write(tree.join("sub/cap.bin"), b"\x7fELF pretend").expect("write");
    tool(
        "setfattr",
        &["-n", "user.note", "-v", "hello", "tree/noted.txt"],
        src,
    )?;
    tool(
        "setfattr",
        &["-n", "user.bin", "-v", "0x00ff0a", "tree/noted.txt"],
        src,
    )?;
    tool("setfattr", &["-n", "user.dir", "-v", "d", "tree/sub"], src)?;
    tool("setfacl", &["-m", "u:nobody:r", "tree/acl.txt"], src)?;
    tool("setfacl", &["-d", "-m", "u:nobody:rx", "tree/sub"], src)?;
    if is_root() {
        tool("setcap", &["cap_net_raw+ep", "tree/sub/cap.bin"], src)?;
    }
    Some(())
}

fn dump(root: &Path) -> (String, String) {
    let x = tool("getfattr", &["-R", "-d", "-m", "-", "tree"], root).unwrap_or_default();
    let a = tool("getfacl", &["-R", "-p", "tree"], root).unwrap_or_default();
    (x, a)
}

#[test]
fn xattrs_acls_and_capabilities_arrive_with_x_and_a() {
    let d = dirs();
    if tree_with_attrs(&d.src).is_none() {
        eprintln!(
            "setfattr/setfacl/setcap not installed (packages attr, acl, libcap2-bin): skipped"
        );
        return;
    }
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&["-X", "-A", s(&d.src.join("tree"))], rx.addr);
    assert_status(&out, 0, "send -X -A");
    let (sx, sa) = dump(&d.src);
    let (ox, oa) = dump(&d.out);
    assert!(sx.contains("user.note=\"hello\""), "{sx}");
    assert_eq!(ox, sx, "getfattr -d -m - of both trees");
    assert_eq!(oa, sa, "getfacl of both trees");
    if is_root() {
        assert!(sx.contains("security.capability"), "{sx}");
    }
    let err = text(&out.stderr);
    assert!(!err.contains("not sent"), "{err}");
}

#[test]
fn without_x_and_a_the_summary_says_what_was_not_sent() {
    let d = dirs();
    if tree_with_attrs(&d.src).is_none() {
        eprintln!("setfattr/setfacl not installed: skipped");
        return;
    }
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&d.src.join("tree"))], rx.addr);
    assert_status(&out, 0, "send without -X");
    let err = text(&out.stderr);
    let want = if is_root() { 3 } else { 2 };
    assert!(
        err.contains(&format!(
            "{want} entries had extended attributes that were not sent; use --xattrs"
        )),
        "{err}"
    );
    assert!(
        err.contains("2 entries had POSIX ACLs that were not sent; use --acls"),
        "{err}"
    );
    let (ox, _) = dump(&d.out);
    assert!(!ox.contains("user.note"), "{ox}");
}

/// A receiver that may not set `security.capability` (not root) still
/// places the verified file and names what it could not set; the sender
/// says so and exits 1. (As root, the receiver runs as `nobody`.)
#[test]
fn an_unprivileged_receiver_names_what_it_could_not_set() {
    if !is_root() {
        eprintln!("not root: cannot give a file a capability to send; skipped");
        return;
    }
    let d = dirs();
    if tree_with_attrs(&d.src).is_none() {
        eprintln!("setfattr/setfacl/setcap not installed: skipped");
        return;
    }
    let mut rx = crate::common::unprivileged_receiver(&d);
    let out = send(&["-X", "-A", s(&d.src.join("tree"))], rx.addr);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cap.bin") && err.contains("security.capability"),
        "the file and the attribute are named: {err}"
    );
    assert_eq!(
        fs::read(d.out.join("tree/sub/cap.bin")).expect("placed"),
        b"\x7fELF pretend"
    );
    let (ox, _) = dump(&d.out);
    assert!(ox.contains("user.note=\"hello\""), "user.* is set: {ox}");
    rx.kill();
    assert!(
        rx.stderr().contains("security.capability"),
        "{}",
        rx.stderr()
    );
}

/// Small files get the sender's modes whatever the receiving directory
/// would give a new file: with a default ACL on OUT (which, not the
/// umask, decides the mode of a file created there) as without one.
#[test]
fn small_files_get_the_senders_modes_under_a_default_acl_too() {
    use std::os::unix::fs::PermissionsExt;
    let d = dirs();
    let tree = d.src.join("tree");
    fs::create_dir_all(tree.join("sub")).expect("mkdir");
    let modes = [
        ("a.txt", 0o644),
        ("b.sh", 0o755),
        ("sub/c.key", 0o600),
        ("sub/d.txt", 0o664),
    ];
    for (name, mode) in modes {
        let path = tree.join(name);
        fs::write(&path, name).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let plain = d.out.join("plain");
    let acl = d.out.join("acl");
    fs::create_dir_all(&plain).expect("mkdir");
    fs::create_dir_all(&acl).expect("mkdir");
    // Files created under it would get group r-x and others nothing.
    let set = tool(
        "setfacl",
        &["-d", "-m", "u::rwx,g::r-x,o::---", "acl"],
        &d.out,
    );
    if set.is_none() {
        eprintln!("setfacl not installed (package acl): the default-ACL half skipped");
    }
    // The receiver applies its umask (this process's, inherited).
    let status = fs::read_to_string("/proc/self/status").expect("status");
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        .expect("Umask in /proc/self/status");
    for out in [&plain, &acl] {
        let rx = Receiver::start(out, &[]);
        let sent = send(&[s(&tree)], rx.addr);
        assert_status(&sent, 0, "send");
        for (name, mode) in modes {
            let got = fs::metadata(out.join("tree").join(name)).expect("received");
            let got = got.permissions().mode() & 0o7777;
            let want = (mode & !umask) | 0o400;
            assert_eq!(got, want, "{name} under {}: {got:o}", out.display());
        }
    }
}
