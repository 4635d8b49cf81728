#!/usr/bin/env python3
"""Writes seed inputs for the `decode` fuzz target into corpus/decode/.

Each seed is one or more valid frames of protocol version 3, encoded here from the
format in PROTOCOL.md (independently of the Rust encoder), plus a few
session-shaped sequences and near-misses. Run from anywhere:

    python3 fuzz/make_corpus.py
"""
import hashlib
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "decode")


def s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def frame(t, payload):
    return bytes([t]) + struct.pack(">I", len(payload)) + payload


def hello(agent="ftx/0.1.0", version=3, flags=0):
    return frame(0x01, b"FTX1" + struct.pack(">HI", version, flags) + s(agent))


def welcome(flags=1, nonce=b"\x07" * 16, agent="ftx/0.1.0", version=3):
    return frame(0x02, struct.pack(">HI", version, flags) + nonce + s(agent))


def noise(message=b"\x09" * 48):
    return frame(0x03, message)


def ready():
    return frame(0x04, b"")


def file(id, path, size=5, mode=0o100644, mt=1_700_000_000, ns=1, flags=0, md5=b"\xab" * 16):
    return frame(0x10, struct.pack(">IQIqII", id, size, mode, mt, ns, flags) + md5 + s(path))


def symlink(id, path, target, mt=1_700_000_000, ns=0):
    return frame(0x14, struct.pack(">IqI", id, mt, ns) + s(path) + s(target))


def link(id, path, target):
    return frame(0x15, struct.pack(">I", id) + s(path) + s(target))


def hole(id, offset, length):
    return frame(0x16, struct.pack(">IQQ", id, offset, length))


def digest(id, md5=b"\x5d" * 16):
    return frame(0x17, struct.pack(">I", id) + md5)


def xattr(id, name=b"user.note", value=b"hello\x00\xff"):
    return frame(0x18, struct.pack(">I", id) + s(name) + s(value))


def prefix(id, md5=b"\x6e" * 16):
    return frame(0x25, struct.pack(">I", id) + md5)


def same(id, offset, length):
    return frame(0x1A, struct.pack(">IQQ", id, offset, length))


def blocks(id, block=1 << 18, first=0, total=2, digests=(b"\x11" * 16, b"\x22" * 16)):
    return frame(0x26, struct.pack(">IIII", id, block, first, total) + b"".join(digests))


def dir(id, path, mode=0o40755, mt=1_700_000_000, ns=0):
    return frame(0x11, struct.pack(">IIqI", id, mode, mt, ns) + s(path))


def body(id, offset, length):
    return frame(0x12, struct.pack(">IQQ", id, offset, length))


def end(flags=0):
    return frame(0x13, struct.pack(">I", flags))


def push():
    return frame(0x05, b"")


def pull(paths=(), flags=0, part=0, parts=0):
    return frame(0x06, struct.pack(">IHHH", flags, part, parts, len(paths)) + b"".join(s(p) for p in paths))


def left(path, msg="a FIFO: not offered"):
    return frame(0x19, s(path) + s(msg))


def accept(id, offset=0):
    return frame(0x20, struct.pack(">IQ", id, offset))


def skip(id, reason=1):
    return frame(0x21, struct.pack(">IB", id, reason))


def reject(id, code=10, msg="unsafe name"):
    return frame(0x22, struct.pack(">IH", id, code) + s(msg))


def result(id, status=0, md5=b"\x01" * 16, msg=""):
    return frame(0x23, struct.pack(">IB", id, status) + md5 + s(msg))


def summary(ok=1, failed=0, nbytes=5):
    return frame(0x24, struct.pack(">IIQ", ok, failed, nbytes))


def error(code=1, msg="protocol error"):
    return frame(0x7F, struct.pack(">H", code) + s(msg))


hello_md5 = hashlib.md5(b"hello").digest()
seeds = {
    "hello": hello(),
    "hello_v2_flags": hello(version=2, flags=0xFFFFFFFF, agent="ftx/9 \xfc"),
    "hello_chacha": hello(flags=1),
    "welcome": welcome(),
    "welcome_noauth": welcome(flags=0, agent=""),
    "noise": noise(),
    "ready": ready(),
    "noise_short": frame(0x03, b"\x09" * 47),
    "ready_payload": frame(0x04, b"\x00"),
    "push": push(),
    "pull": pull(["tree/sub", b"root/\xff"]),
    "pull_list_split": pull([], flags=3, part=2, parts=2),
    "pull_too_many": frame(0x06, struct.pack(">IHHH", 0, 0, 0, 1025)),
    "left": left("tree/fifo"),
    "end_more": end(1),
    "same": same(9, 1 << 18, 1 << 18),
    "blocks": blocks(9),
    "blocks_bad_size": blocks(9, block=100_000),
    "blocks_past_total": blocks(9, first=1, total=2),
    "file_sparse_digest_follows": file(12, "sparse.img", size=1 << 40, flags=0b11, md5=b"\x00" * 16),
    "file_stream_xxh3": file(13, "stdin.bin", size=0, flags=0b1110, md5=b"\x00" * 16),
    "file_unknown_flags": file(14, "x", flags=1 << 31),
    "symlink": symlink(15, "top/l", "../b"),
    "symlink_abs": symlink(16, "l", "/etc/passwd"),
    "link": link(17, "b/hard", "a/file"),
    "hole": hole(12, 4096, 1 << 30),
    "digest": digest(13),
    "prefix": prefix(12),
    "xattr": xattr(18),
    "xattr_acl": xattr(19, b"system.posix_acl_access", b"\x02\x00\x00\x00" * 8),
    "file": file(3, "dir/with space/f\xfcr.txt"),
    "file_bad_utf8": file(3, b"dir/\xff\xfe", size=2**64 - 1, mt=-5, ns=999_999_999),
    "file_traversal": file(4, "../../etc/passwd"),
    "file_abs": file(5, "/tmp/x"),
    "file_ctrl": file(6, "a\x1b[1Ab\\c"),
    "file_deep": file(7, "/".join(["d"] * 130)),
    "dir": dir(4, "photos"),
    "dir_dot": dir(4, "a/./b"),
    "body": body(3, 0, 5) + b"hello",
    "end": end(),
    "accept": accept(3, 10),
    "skip": skip(3),
    "reject": reject(3),
    "result": result(3, msg="digest mismatch"),
    "summary": summary(),
    "error": error(),
    "error_bad_utf8": error(3, b"bad \xc3\x28 text"),
    "sender_session": hello()
    + noise()
    + ready()
    + push()
    + dir(1, "photos")
    + file(2, "photos/a.txt", size=5, md5=hello_md5)
    + body(2, 0, 5)
    + b"hello"
    + file(3, "photos/b.txt", size=0, md5=hashlib.md5(b"").digest())
    + body(3, 0, 0)
    + file(4, "photos/sparse", size=8192, flags=1, md5=hashlib.md5(b"\x00" * 8192).digest())
    + hole(4, 0, 8192)
    + file(5, "photos/live.log", flags=0b1010, md5=b"\x00" * 16)
    + body(5, 0, 5)
    + b"hello"
    + digest(5, hello_md5)
    + symlink(6, "photos/l", "a.txt")
    + link(7, "photos/a2.txt", "photos/a.txt")
    + end(),
    "getter_session": hello()
    + pull(["tree"])
    + welcome(flags=0)
    + left("tree/dev")
    + dir(1, "tree")
    + end(1),
    "receiver_session": welcome()
    + noise()
    + result(1, md5=b"\x00" * 16)
    + prefix(9)
    + accept(2)
    + skip(3)
    + reject(4, 11, "exists")
    + result(2, md5=hello_md5)
    + summary(2, 1, 5)
    + error(5, "timeout"),
    "truncated_file": file(3, "abc")[:-2],
    "trailing_end": frame(0x13, b"\x00" * 5),
    # Text over the encoder's 4 KiB cut, one cut inside a 2-byte char.
    "error_long": error(6, "x" * 5000),
    "welcome_long_agent": welcome(agent="a" + "\xe9" * 3000),
    "reject_long_lossy": reject(9, 13, b"\xff" * 2000),
    # Names at and past the bounds: 4097 bytes, and the longest that fits.
    "file_long_name": file(8, "n" * 4097),
    "file_max_path": file(9, "p" * (65536 - 50)),
    "dir_max_depth": dir(10, "/".join(["d"] * 128)),
    "file_too_long_frame": file(11, "p" * (65536 - 49)),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, "seed_" + name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
