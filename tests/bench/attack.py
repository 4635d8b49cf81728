#!/usr/bin/env python3
"""A receiver under a flood, measured: prints numbers, asserts nothing.

Two phases against one `ftx recv` (the release build, default flags):

1. memory: SESSIONS sessions (default 60) each offer an 8 MiB file and
   send 1 MiB of its body, then hold; the receiver's RSS, threads and
   descriptors are read from /proc while they hold, and its RSS every
   10 ms until its `--timeout` (default 30 s) ends them all together
   (teardown: each checkpoints its partial). RUNS (default 1) repeats
   this phase and counts the runs whose peak stays within 64 MiB of the
   idle baseline.
2. slots: IDLE connections that never greet (default 10000), TRICKLE that
   send one byte a second (default 500) and SLOW peers that greet and then
   send one refused offer every 3 s (default 64), all kept up (reconnected
   when dropped) while a real `ftx send` with default flags sends a
   64 MiB file. Prints whether it succeeded, how long it took, and the
   receiver's peak RSS, threads and descriptors during the flood.

3. parallel (PHASES=parallel): 50 `ftx send`s of distinct 1 MiB files at
   once beside one sender through a 1 KiB/s proxy; the receiver's peak RSS
   over its idle baseline while the 50 run (RUNS repeats it too).

Usage: tests/bench/attack.py   (env: SESSIONS, RUNS, IDLE, TRICKLE, SLOW,
       FTX, PHASES=memory,slots)
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
    return frame(0x01, b"FTX1" + struct.pack(">HI", 3, 0) + text("attack"))


def file_offer(fid, size, name):
    return frame(
        0x10,
        struct.pack(">IQIqII", fid, size, 0o644, 0, 0, 0) + b"\0" * 16 + text(name),
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
    """One run; returns the teardown peak over the idle baseline, in MiB."""
    with tempfile.TemporaryDirectory() as out:
        rx, addr = start_receiver(ftx, out)
        time.sleep(0.5)  # the idle baseline, once the receiver settled
        base = proc_status(rx.pid)
        base_rss = kib(base.get("VmRSS"))
        socks = []
        for i in range(sessions):
            s = socket.create_connection(addr, timeout=10)
            s.sendall(hello())
            s.recv(4096)  # WELCOME
            s.sendall(file_offer(1, 8 << 20, f"held{i}.bin"))
            s.recv(4096)  # ACCEPT
            s.sendall(body(1, 8 << 20) + os.urandom(1 << 20))
            socks.append(s)
        held = Peak(rx.pid)
        end = time.time() + 2
        while time.time() < end:  # let the receiver take in what was sent
            held.sample()
            time.sleep(0.01)
        # Teardown: the receiver's --timeout ends every session at about
        # the same moment; sample until all are closed (at most 60 s).
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        teardown = Peak(rx.pid)
        open_ = len(socks)
        end = time.time() + 60
        while open_ and time.time() < end:
            teardown.sample()
            for key, _ in sel.select(timeout=0.01):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    open_ -= 1
        for _ in range(50):  # and half a second after
            teardown.sample()
            time.sleep(0.01)
        for s in socks:
            s.close()
        rx.terminate()
        rx.wait(10)
        print(
            f"memory: {sessions} sessions each holding 1 MiB of an 8 MiB body: "
            f"RSS {base_rss / 1024:.1f} -> {held.rss / 1024:.1f} MiB held, "
            f"{teardown.rss / 1024:.1f} MiB peak at teardown "
            f"(+{(max(held.rss, teardown.rss) - base_rss) / 1024:.1f} MiB over idle), "
            f"threads {base.get('Threads')} -> {held.threads}, "
            f"descriptors {base.get('fds')} -> {held.fds}",
            flush=True,
        )
        return (max(held.rss, teardown.rss) - base_rss) / 1024


def slow_proxy(target, rate):
    """A proxy on 127.0.0.1 passing `rate` bytes a second each way; its
    address. Daemon threads: it lives as long as the script."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)

    def pump(a, b):
        try:
            while True:
                data = a.recv(max(1, rate // 10))
                if not data:
                    break
                b.sendall(data)
                time.sleep(len(data) / rate)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve():
        while True:
            c, _ = lsock.accept()
            u = socket.create_connection(target)
            threading.Thread(target=pump, args=(c, u), daemon=True).start()
            threading.Thread(target=pump, args=(u, c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return lsock.getsockname()


def phase_parallel(ftx, senders=50):
    """One run; the peak over the idle baseline while the senders run, MiB."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as src:
        rx, addr = start_receiver(ftx, out)
        time.sleep(0.5)
        base_rss = kib(proc_status(rx.pid).get("VmRSS"))
        files = []
        for i in range(senders + 1):
            path = os.path.join(src, f"p{i}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(1 << 20))
            files.append(path)
        proxy = slow_proxy(addr, 1024)
        slow = subprocess.Popen(
            [ftx, "send", "-q", files[-1], f"127.0.0.1:{proxy[1]}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        procs = [
            subprocess.Popen(
                [ftx, "send", "-q", f, f"{addr[0]}:{addr[1]}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for f in files[:-1]
        ]
        peak = Peak(rx.pid)
        end = time.time() + 120
        while any(p.poll() is None for p in procs) and time.time() < end:
            peak.sample()
            time.sleep(0.01)
        for _ in range(50):
            peak.sample()
            time.sleep(0.01)
        ok = sum(1 for p in procs if p.returncode == 0)
        intact = sum(
            1
            for f in files[:-1]
            if os.path.exists(os.path.join(out, os.path.basename(f)))
            and open(os.path.join(out, os.path.basename(f)), "rb").read() == open(f, "rb").read()
        )
        slow.kill()
        slow.wait()
        rx.terminate()
        rx.wait(10)
        over = (peak.rss - base_rss) / 1024
        print(
            f"parallel: {senders} senders of 1 MiB beside a 1 KiB/s one: {ok} exit 0, {intact} intact; "
            f"RSS {base_rss / 1024:.1f} -> {peak.rss / 1024:.1f} MiB (+{over:.1f}), threads {peak.threads}",
            flush=True,
        )
        return over


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
    phases = os.environ.get("PHASES", "memory,slots").split(",")
    if "memory" in phases:
        runs = int(os.environ.get("RUNS", "1"))
        peaks = [phase_memory(ftx, int(os.environ.get("SESSIONS", "60"))) for _ in range(runs)]
        within = sum(1 for p in peaks if p <= 64)
        print(
            f"memory: {within} of {runs} runs within 64 MiB over idle "
            f"(peaks {min(peaks):.1f} .. {max(peaks):.1f} MiB)"
        )
    if "parallel" in phases:
        runs = int(os.environ.get("RUNS", "1"))
        peaks = [phase_parallel(ftx) for _ in range(runs)]
        within = sum(1 for p in peaks if p <= 64)
        print(
            f"parallel: {within} of {runs} runs within 64 MiB over idle "
            f"(peaks {min(peaks):.1f} .. {max(peaks):.1f} MiB)"
        )
    if "slots" not in phases:
        return
    phase_slots(
        ftx,
        int(os.environ.get("IDLE", "10000")),
        int(os.environ.get("TRICKLE", "500")),
        int(os.environ.get("SLOW", "64")),
    )


if __name__ == "__main__":
    main()
