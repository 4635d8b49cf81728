#!/usr/bin/env python3
"""A receiver under a flood, measured: prints numbers, asserts nothing.

Two phases against one `ftx recv` (the release build, default flags):

1. memory: SESSIONS sessions (default 60) each offer an 8 MiB file and
   send 1 MiB of its body, then hold; the receiver's RSS, threads and
   descriptors are read from /proc while they hold.
2. slots: IDLE connections that never greet (default 10000), TRICKLE that
   send one byte a second (default 500) and SLOW peers that greet and then
   send one refused offer every 3 s (default 64), all kept up (reconnected
   when dropped) while a real `ftx send` with default flags sends a
   64 MiB file. Prints whether it succeeded, how long it took, and the
   receiver's peak RSS, threads and descriptors during the flood.

Usage: tests/bench/attack.py   (env: SESSIONS, IDLE, TRICKLE, SLOW, FTX)
"""

import hashlib
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def frame(kind, payload):
    return struct.pack(">BI", kind, len(payload)) + payload


def text(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def hello():
    return frame(0x01, b"FTX1" + struct.pack(">HI", 1, 0) + text("attack"))


def file_offer(fid, size, name):
    return frame(
        0x10,
        struct.pack(">IQIqI", fid, size, 0o644, 0, 0) + b"\0" * 16 + text(name),
    )


def body(fid, length):
    return frame(0x12, struct.pack(">IQQ", fid, 0, length))


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def kib(v):
    return int(v.split()[0]) if v else 0


class Peak:
    def __init__(self, pid):
        self.pid, self.rss, self.threads, self.fds = pid, 0, 0, 0

    def sample(self):
        st = proc_status(self.pid)
        self.rss = max(self.rss, kib(st.get("VmRSS")))
        self.threads = max(self.threads, int(st.get("Threads", 0)))
        self.fds = max(self.fds, st.get("fds", 0))


def start_receiver(ftx, out):
    rx = subprocess.Popen(
        [ftx, "recv", "--port", "0", "--bind", "127.0.0.1", "--out", out, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = rx.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit(f"attack.py: receiver did not start: {line!r}")
    host, port = line.split()[-1].rsplit(":", 1)
    return rx, (host, int(port))


def phase_memory(ftx, sessions):
    with tempfile.TemporaryDirectory() as out:
        rx, addr = start_receiver(ftx, out)
        base = proc_status(rx.pid)
        socks = []
        for i in range(sessions):
            s = socket.create_connection(addr, timeout=10)
            s.sendall(hello())
            s.recv(4096)  # WELCOME
            s.sendall(file_offer(1, 8 << 20, f"held{i}.bin"))
            s.recv(4096)  # ACCEPT
            s.sendall(body(1, 8 << 20) + os.urandom(1 << 20))
            socks.append(s)
        time.sleep(2)  # let the receiver take in what was sent
        peak = Peak(rx.pid)
        peak.sample()
        for s in socks:
            s.close()
        rx.terminate()
        rx.wait(10)
        print(
            f"memory: {sessions} sessions each holding 1 MiB of an 8 MiB body: "
            f"RSS {kib(base.get('VmRSS')) / 1024:.1f} -> {peak.rss / 1024:.1f} MiB, "
            f"threads {base.get('Threads')} -> {peak.threads}, "
            f"descriptors {base.get('fds')} -> {peak.fds}"
        )


class Flood(threading.Thread):
    """Keeps IDLE, TRICKLE and SLOW connections up until stopped."""

    def __init__(self, addr, idle, trickle, slow):
        super().__init__(daemon=True)
        self.addr, self.want = addr, {"idle": idle, "trickle": trickle, "slow": slow}
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # socket -> [kind, next_time, step]
        self.stop = threading.Event()
        self.made = {"idle": 0, "trickle": 0, "slow": 0}

    def count(self, kind):
        return sum(1 for v in self.conns.values() if v[0] == kind)

    def connect(self, kind):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(self.addr)
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        self.conns[s] = [kind, time.monotonic() + 1, 0]
        self.sel.register(s, selectors.EVENT_READ)
        self.made[kind] += 1

    def drop(self, s):
        self.sel.unregister(s)
        del self.conns[s]
        s.close()

    def run(self):
        stream = hello()
        while not self.stop.is_set():
            for kind, n in self.want.items():
                for _ in range(min(200, n - self.count(kind))):
                    self.connect(kind)
            now = time.monotonic()
            for s, st in list(self.conns.items()):
                kind, due, step = st
                if now < due or kind == "idle":
                    continue
                try:
                    if kind == "trickle":
                        s.send(stream[step % len(stream) : step % len(stream) + 1])
                        st[1], st[2] = now + 1, step + 1
                    elif step == 0:
                        s.send(hello())
                        st[1], st[2] = now + 3, 1
                    else:
                        s.send(file_offer(step, 1, f"bad\\{step}"))
                        st[1], st[2] = now + 3, step + 1
                except OSError:
                    self.drop(s)
            for key, _ in self.sel.select(timeout=0.1):
                try:
                    if not key.fileobj.recv(65536):
                        self.drop(key.fileobj)
                except OSError:
                    self.drop(key.fileobj)
        for s in list(self.conns):
            self.drop(s)


def phase_slots(ftx, idle, trickle, slow):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        src = os.path.join(tmp, "real.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(64 << 20))
        rx, addr = start_receiver(ftx, out)
        base = proc_status(rx.pid)
        flood = Flood(addr, idle, trickle, slow)
        flood.start()
        peak = Peak(rx.pid)
        t_flood = time.monotonic()
        while time.monotonic() - t_flood < 5:  # the flood builds up
            peak.sample()
            time.sleep(0.2)
        t0 = time.monotonic()
        send = subprocess.Popen(
            [ftx, "send", "-q", "--no-cache", src, f"{addr[0]}:{addr[1]}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        while send.poll() is None:
            peak.sample()
            time.sleep(0.2)
        took = time.monotonic() - t0
        err = send.stderr.read()
        flood.stop.set()
        flood.join(30)
        ok = send.returncode == 0
        if ok:
            with open(src, "rb") as a, open(os.path.join(out, "real.bin"), "rb") as b:
                ok = hashlib.md5(a.read()).digest() == hashlib.md5(b.read()).digest()
        rx.terminate()
        rx.wait(10)
        print(
            f"slots: {idle} idle + {trickle} trickling + {slow} slow-offer connections kept up "
            f"(made {flood.made['idle']} + {flood.made['trickle']} + {flood.made['slow']}); "
            f"ftx send of 64 MiB with default flags: exit {send.returncode}, "
            f"{'verified' if ok else 'NOT verified'}, {took:.1f} s"
        )
        print(
            f"slots: receiver RSS {kib(base.get('VmRSS')) / 1024:.1f} -> peak {peak.rss / 1024:.1f} MiB, "
            f"threads {base.get('Threads')} -> peak {peak.threads}, "
            f"descriptors {base.get('fds')} -> peak {peak.fds}"
        )
        if not ok:
            print(f"slots: sender said: {err.strip()}")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ftx = os.environ.get("FTX")
    if not ftx:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
        ftx = os.path.join(REPO, "target", "release", "ftx")
    phase_memory(ftx, int(os.environ.get("SESSIONS", "60")))
    phase_slots(
        ftx,
        int(os.environ.get("IDLE", "10000")),
        int(os.environ.get("TRICKLE", "500")),
        int(os.environ.get("SLOW", "64")),
    )


if __name__ == "__main__":
    main()
