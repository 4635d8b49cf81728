//! Reverse connections: `ftx send --listen` waits for receivers, `ftx recv
//! --connect` calls it. The session is today's (the sender greets and
//! offers); only the connection's direction differs. Plain and encrypted,
//! a caller that is no receiver, and a receiver behind NAT.

use crate::common::raw::Raw;
use crate::common::*;
use ftx::protocol::Frame;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "5c1d0f6e8a2b47d3a9e0c4b1f7d26e83";

/// A small tree: a 3 MiB file, a small one in a subdirectory, a symlink.
fn tree(src: &Path) -> std::path::PathBuf {
    let t = src.join("tree");
    fs::create_dir_all(t.join("sub")).expect("mkdir");
    write_random(t.join("big.bin"), 3 << 20, 91);
    fs::write(t.join("sub/small.txt"), b"small\n").expect("write");
    std::os::unix::fs::symlink("big.bin", t.join("link")).expect("symlink");
    t
}

/// `ftx send --listen 127.0.0.1:0 PATH` (with `token`): a running sender
/// whose first line says where it listens.
fn listening_sender(path: &Path, out: &Path, token: Option<&str>) -> Receiver {
    let mut cmd = ftx_cmd();
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd.args(["send", "--listen", "127.0.0.1:0"]).arg(path);
    Receiver::spawn(cmd, out)
}

/// The listening sender exits 0 (within 30 s) once its receiver is done.
fn assert_sender_done(tx: &mut Receiver) {
    assert_eq!(
        tx.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0),
        "send --listen: {}",
        tx.stderr()
    );
}

fn recv_connect(addr: &str, out: &Path, token: Option<&str>) -> std::process::Output {
    let mut cmd = ftx_cmd();
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd.args(["recv", "--connect", addr, "--out"]).arg(out);
    run_with_timeout(cmd, SEND_TIMEOUT)
}

#[test]
fn a_receiver_that_calls_a_listening_sender_gets_the_tree_plain_and_encrypted() {
    for token in [None, Some(TOKEN)] {
        let d = dirs();
        let t = tree(&d.src);
        let mut tx = listening_sender(&t, &d.out, token);
        let out = recv_connect(&tx.addr.to_string(), &d.out, token);
        assert_status(&out, 0, "recv --connect");
        assert_sender_done(&mut tx);
        assert_trees_arrived(&t, d.out.join("tree"));
        let said = tx.stderr();
        assert!(said.contains("sent 2 file(s) and 1 link(s)"), "{said}");
        if token.is_some() {
            assert!(said.contains("encrypted"), "{said}");
        }
    }
}

/// A caller that says it offers files (PUSH) cannot make a listening
/// sender write anything: it is refused with ERROR 8, the sender waits for
/// the next call, and a real receiver then gets the tree.
#[test]
fn a_caller_cannot_turn_a_listening_sender_into_a_receiver() {
    let d = dirs();
    let t = tree(&d.src);
    let mut tx = listening_sender(&t, &d.out, None);
    let (mut raw, flags, _) = Raw::hello(tx.addr);
    assert_eq!(flags, 0, "plain");
    raw.send(&Frame::Push);
    raw.send(&crate::common::raw::file_offer(1, b"planted.txt", b"x"));
    let said = raw.expect_error(ftx::protocol::frame::error_code::REFUSED);
    assert!(said.contains("takes none"), "{said}");
    drop(raw);
    let out = recv_connect(&tx.addr.to_string(), &d.out, None);
    assert_status(&out, 0, "the real receiver after the fake caller");
    assert_sender_done(&mut tx);
    assert_trees_arrived(&t, d.out.join("tree"));
    assert!(!d.src.join("planted.txt").exists());
    assert!(!t.join("planted.txt").exists());
    assert!(
        tx.stderr().contains("offers files and takes none"),
        "{}",
        tx.stderr()
    );
}

/// Network namespaces that tear themselves down.
struct Nat {
    prefix: String,
}

impl Nat {
    /// public (sender, 10.201.1.2) -- router (masquerades) -- private
    /// (receiver, 10.201.2.2, default route through the router). The
    /// public side has no route to the private one. `None` where the
    /// system cannot make namespaces or NAT (says why).
    fn build() -> Option<Nat> {
        let prefix = format!("ftx{}", std::process::id() % 100_000);
        let nat = Nat { prefix };
        let p = &nat.prefix;
        let script = format!(
            r#"set -e
ip netns add {p}pub; ip netns add {p}rt; ip netns add {p}prv
ip link add {p}a type veth peer name {p}b
ip link add {p}c type veth peer name {p}d
ip link set {p}a netns {p}pub; ip link set {p}b netns {p}rt
ip link set {p}c netns {p}rt; ip link set {p}d netns {p}prv
ip -n {p}pub addr add 10.201.1.2/24 dev {p}a; ip -n {p}pub link set {p}a up; ip -n {p}pub link set lo up
ip -n {p}rt addr add 10.201.1.1/24 dev {p}b; ip -n {p}rt link set {p}b up
ip -n {p}rt addr add 10.201.2.1/24 dev {p}c; ip -n {p}rt link set {p}c up; ip -n {p}rt link set lo up
ip -n {p}prv addr add 10.201.2.2/24 dev {p}d; ip -n {p}prv link set {p}d up; ip -n {p}prv link set lo up
ip -n {p}prv route add default via 10.201.2.1
ip netns exec {p}rt sysctl -qw net.ipv4.ip_forward=1
echo 'table ip nat {{ chain post {{ type nat hook postrouting priority 100; oifname "{p}b" ip saddr 10.201.2.0/24 masquerade; }}; }}' | ip netns exec {p}rt nft -f -
"#
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot build network namespaces with NAT here ({}): skipped",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(nat)
    }

    /// `ip netns exec NS` + the ftx binary.
    fn ftx_in(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}{ns}", self.prefix)])
            .arg(ftx_bin());
        c.stdin(std::process::Stdio::null());
        c.env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("ftx-test-cache-nat"),
        );
        c.env_remove("FTX_TOKEN");
        c
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        for ns in ["pub", "rt", "prv"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{ns}", self.prefix)])
                .status();
        }
    }
}

/// A receiver behind NAT cannot be called, but it can call a sender that
/// listens: the tree arrives verified.
#[test]
fn a_receiver_behind_nat_gets_the_tree_by_calling_out() {
    if !is_root() {
        eprintln!("not root: cannot create network namespaces; skipped");
        return;
    }
    let Some(nat) = Nat::build() else { return };
    let d = dirs();
    let t = tree(&d.src);
    // The private receiver cannot be reached from the public side.
    let mut rx_cmd = nat.ftx_in("prv");
    rx_cmd
        .args(["recv", "--port", "0", "--bind", "10.201.2.2", "--out"])
        .arg(&d.out);
    let mut rx = Receiver::spawn(rx_cmd, &d.out);
    let mut push = nat.ftx_in("pub");
    push.args(["send", "--retry-for", "0", "--connect-timeout", "3"])
        .arg(&t)
        .arg(rx.addr.to_string());
    let out = run_with_timeout(push, SEND_TIMEOUT);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    rx.kill();
    assert!(!d.out.join("tree").exists());
    // The sender listens on the public side; the receiver calls out.
    let mut tx_cmd = nat.ftx_in("pub");
    tx_cmd.args(["send", "--listen", "10.201.1.2:0"]).arg(&t);
    let mut tx = Receiver::spawn(tx_cmd, &d.out);
    let mut call = nat.ftx_in("prv");
    call.args(["recv", "--connect", &tx.addr.to_string(), "--out"])
        .arg(&d.out);
    let out = run_with_timeout(call, SEND_TIMEOUT);
    assert_status(&out, 0, "recv --connect from behind NAT");
    assert_sender_done(&mut tx);
    assert_trees_arrived(&t, d.out.join("tree"));
    // Or the public side serves, and the private one pulls.
    let pulled = d.t().join("pulled");
    std::fs::create_dir(&pulled).expect("mkdir");
    let mut srv_cmd = nat.ftx_in("pub");
    srv_cmd
        .args(["serve", "--port", "0", "--bind", "10.201.1.2"])
        .arg(&t);
    let srv = Receiver::spawn(srv_cmd, &pulled);
    let mut get = nat.ftx_in("prv");
    get.args(["get", &format!("{}/tree", srv.addr), "--out"])
        .arg(&pulled);
    let out = run_with_timeout(get, SEND_TIMEOUT);
    assert_status(&out, 0, "ftx get from behind NAT");
    assert_trees_arrived(&t, pulled.join("tree"));
}

/// The connection is cut in the middle of the body, every time after
/// 10 MiB: the receiver calls again, the sender (waiting for the next
/// call) resumes where the checkpoint says, and one `recv --connect` run
/// ends with the whole file verified.
#[test]
fn a_reverse_transfer_cut_in_the_middle_resumes_on_the_next_call() {
    let d = dirs();
    let file = d.src.join("resume.bin");
    write_random(&file, 24 << 20, 92);
    let mut tx = listening_sender(&file, &d.out, None);
    let proxy = Proxy::start(tx.addr, Mode::CutBackAfter(10 << 20));
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--connect", &proxy.addr.to_string(), "--out"])
        .arg(&d.out);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "recv --connect over a link cut every 10 MiB");
    assert!(
        text(&out.stdout).contains("resumed at"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(md5_hex(d.out.join("resume.bin")), md5_hex(&file));
    assert_sender_done(&mut tx);
    assert!(tx.stderr().contains("retrying"), "{}", tx.stderr());
}
