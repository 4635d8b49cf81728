//! Attributes and durability of received files and directories: mode and
//! mtime, the verified-digest record (an extended attribute), fsync of a
//! directory and `syncfs`.

use crate::digest::{hex, Md5Digest};
use cap_std::fs::Dir;
use std::io;

/// Files smaller than this get no verified-digest record: re-hashing them
/// when they are offered again costs less than keeping the record (1 MiB,
/// the size from which the sender caches digests too).
pub const RECORD_MIN_SIZE: u64 = 1 << 20;

/// Extended attribute holding the digest ftx verified for a file, with the
/// size and mtime it had then: `v1 SIZE MTIME_S.MTIME_NS MD5HEX`.
pub const RECORD_XATTR: &str = "user.ftx.verified";

/// The record's text for the file's current size and mtime.
pub fn record_text(md: &std::fs::Metadata, md5: &Md5Digest) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "v1 {} {}.{:09} {}",
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        hex(md5)
    )
}

/// Keeps the verified digest with the file (best effort: a file system
/// without user xattrs just means a re-hash when the file is offered again).
pub fn write_record(file: &std::fs::File, md5: &Md5Digest) {
    if let Ok(md) = file.metadata() {
        let text = record_text(&md, md5);
        let _ = rustix::fs::fsetxattr(
            file,
            RECORD_XATTR,
            text.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        );
    }
}

/// The digest recorded with the file, if the record matches the file's
/// current size and mtime (any write since changes the mtime).
pub fn read_record(file: &std::fs::File) -> Option<Md5Digest> {
    let md = file.metadata().ok()?;
    let mut buf = [0u8; 128];
    let n = rustix::fs::fgetxattr(file, RECORD_XATTR, &mut buf).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    let hex_md5 = text.rsplit(' ').next()?;
    let mut d = [0u8; 16];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex_md5.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (record_text(&md, &d) == text).then_some(d)
}

/// A real (not `O_PATH`) descriptor of the directory `dir` itself, for
/// fsync, fchmod and futimens. "." cannot name anything but `dir`.
pub fn readable_fd(dir: &Dir) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Makes everything written to the file system holding `dir` durable.
pub fn syncfs(dir: &Dir) -> io::Result<()> {
    Ok(rustix::fs::syncfs(readable_fd(dir)?)?)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Dir) -> io::Result<()> {
    Ok(rustix::fs::fsync(readable_fd(dir)?)?)
}

/// Applies permission bits (0o777 only: never setuid, setgid or sticky) and
/// the modification time to an open file or directory.
pub fn apply_attrs(
    fd: impl std::os::fd::AsFd,
    mode: u32,
    mtime_s: i64,
    mtime_ns: u32,
) -> io::Result<()> {
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode & 0o777))?;
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: mtime_s,
            tv_nsec: i64::from(mtime_ns.min(999_999_999)),
        },
    };
    rustix::fs::futimens(&fd, &times)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_record_round_trips_and_goes_stale() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        let f = std::fs::File::open(&p).expect("open");
        write_record(&f, &[5; 16]);
        if rustix::fs::fgetxattr(&f, RECORD_XATTR, &mut [0u8; 128]).is_err() {
            return; // no user xattrs on this file system: nothing to check
        }
        assert_eq!(read_record(&f), Some([5; 16]));
        drop(f);
        std::fs::write(&p, b"abd").expect("write");
        let f = std::fs::File::open(&p).expect("open");
        let times = std::fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(5));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|w| w.set_times(times))
            .expect("set mtime");
        assert_eq!(read_record(&f), None);
    }
}
