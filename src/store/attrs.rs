//! Attributes and durability of received files and directories: mode and
//! mtime, the verified-digest record (an extended attribute), fsync of a
//! directory and `syncfs`.

use cap_std::fs::Dir;
use std::io;

/// The permission bits a received file gets: the sender's, less the
/// receiver's `umask` (as `cp`, `scp` and `tar` as a user do), never
/// setuid, setgid or sticky, and always readable by the receiving user.
pub fn file_mode(sent: u32, umask: u32) -> u32 {
    (sent & 0o777 & !umask) | 0o400
}

/// The permission bits a directory this session created gets: the
/// sender's, less the `umask`, and always readable, writable and
/// enterable by the receiving user (so it can always reach and finish
/// what it received).
pub fn dir_mode(sent: u32, umask: u32) -> u32 {
    (sent & 0o777 & !umask) | 0o700
}

/// The process's umask (read once, before any other thread creates files:
/// reading it means setting it).
pub fn umask() -> u32 {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::empty());
    rustix::process::umask(old);
    old.bits()
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

/// Applies permission bits (0o777 only: never setuid, setgid or sticky;
/// see [`file_mode`] and [`dir_mode`] for which) and the modification
/// time to an open file or directory (the mode only when given: a file
/// created with its mode needs no `fchmod`).
pub fn apply_attrs(
    fd: impl std::os::fd::AsFd,
    mode: Option<u32>,
    mtime_s: i64,
    mtime_ns: u32,
) -> io::Result<()> {
    if let Some(mode) = mode {
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode & 0o777))?;
    }
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

/// Whether the file system of `dir` folds names: takes `A` and `a`, or the
/// NFC and NFD forms of `é`, for one file (as macOS's and Windows' do, and
/// ext4 with casefolding). Probed with a file of the receiver's own
/// working names (a peer can never offer one), removed at once. If the
/// probe cannot be made, it answers yes (names are then refused as they
/// would be on such a file system).
pub fn folds_names(dir: &cap_std::fs::Dir) -> bool {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    let stamp = format!("{}-{:x}", std::process::id(), u64::from_ne_bytes(r));
    let name = format!(".ftx-Probe-\u{e9}-{stamp}.ftx-part");
    let lower = format!(".ftx-probe-\u{e9}-{stamp}.ftx-part");
    let nfd = format!(".ftx-Probe-e\u{301}-{stamp}.ftx-part");
    let made = dir
        .open_with(
            &name,
            cap_std::fs::OpenOptions::new().write(true).create_new(true),
        )
        .is_ok();
    if !made {
        return true;
    }
    let folds = dir.symlink_metadata(&lower).is_ok() || dir.symlink_metadata(&nfd).is_ok();
    let _ = dir.remove_file(&name);
    folds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_umask_and_stay_usable() {
        // 0777 under umask 022 arrives 0755, as cp and scp do it.
        assert_eq!(file_mode(0o777, 0o022), 0o755);
        assert_eq!(file_mode(0o644, 0o022), 0o644);
        assert_eq!(file_mode(0o666, 0o077), 0o600);
        // Never setuid, setgid or sticky.
        assert_eq!(file_mode(0o7755, 0), 0o755);
        // Always readable by the receiving user.
        assert_eq!(file_mode(0o000, 0o022), 0o400);
        assert_eq!(file_mode(0o244, 0o022), 0o644);
        // Directories: always enterable and writable by the user.
        assert_eq!(dir_mode(0o777, 0o022), 0o755);
        assert_eq!(dir_mode(0o000, 0o022), 0o700);
        assert_eq!(dir_mode(0o1777, 0o002), 0o775);
        assert_eq!(dir_mode(0o555, 0o022), 0o755);
    }
}
