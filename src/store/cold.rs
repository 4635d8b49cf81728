//! A file read for its bytes with `O_DIRECT` unless most of it is in the
//! page cache: the file a delta update replaces (its unchanged blocks),
//! and a partial checked before a resume.
//!
//! On this project's development VM, reading a file that is not in the
//! page cache through it costs more CPU than MD5 (1 GiB: 2.4 s of system
//! time, against 0.2 s direct), and that CPU is taken from the MD5 of the
//! file being built. A file the receiver wrote itself is never in the
//! page cache (its writes bypass it). (Asking the page cache alone first,
//! `preadv2(RWF_NOWAIT)`, did not help: on this kernel it read from the
//! disk all the same.)

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A file open as the receiver opened it (no-follow), and a second
/// descriptor of the same inode with `O_DIRECT` where that is the cheaper
/// way to read it.
#[derive(Debug)]
pub struct ColdFile {
    file: File,
    direct: Option<File>,
}

impl ColdFile {
    /// Wraps `file`; unless it is mostly in the page cache, a direct twin
    /// is opened through `/proc/self/fd` (the same inode, whatever its
    /// name is now).
    pub fn new(file: File) -> ColdFile {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        // Mostly in the page cache already (a file just copied in):
        // reading it from there is the cheaper way.
        if cached_share(&file).is_none_or(|share| share >= 0.5) {
            return ColdFile { file, direct: None };
        }
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok()
            .filter(|d| same_inode(&file, d));
        ColdFile { file, direct }
    }

    /// The file (buffered).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file, its direct twin closed.
    pub fn into_inner(self) -> File {
        self.file
    }

    /// Fills `buf` from `at`: directly from the disk when `buf`, `at` and
    /// the length are aligned for that, else through the page cache. An
    /// error if the file is shorter.
    pub fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        if let Some(d) = &self.direct {
            if aligned(buf, at) && d.read_exact_at(buf, at).is_ok() {
                return Ok(());
            }
        }
        self.file.read_exact_at(buf, at)
    }
}

/// The share of `file`'s pages in the page cache (`cachestat`, Linux 6.5;
/// `None` where the system cannot tell).
fn cached_share(file: &File) -> Option<f64> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let len = file.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let range = Range { off: 0, len };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both of the
    // kernel's layout (`repr(C)`, five and two u64s) and alive for the
    // call; the descriptor is owned by `file`.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if r != 0 {
        return None;
    }
    let pages = len.div_ceil(4096) as f64;
    Some(stat.nr_cache as f64 / pages)
}

/// `O_DIRECT` needs the buffer, the offset and the length aligned (4096
/// covers the logical block size of the usual disks).
fn aligned(buf: &[u8], at: u64) -> bool {
    const ALIGN: usize = 4096;
    (buf.as_ptr() as usize).is_multiple_of(ALIGN)
        && buf.len().is_multiple_of(ALIGN)
        && at.is_multiple_of(ALIGN as u64)
}

fn same_inode(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_same_bytes_cached_direct_or_unaligned() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 241) as u8).collect();
        std::fs::write(&p, &data).expect("write");
        let old = ColdFile::new(File::open(&p).expect("open"));
        // An aligned buffer (as the pipeline's), then unaligned reads.
        let mut raw = vec![0u8; (1 << 20) + 4096];
        let off = raw.as_ptr().align_offset(4096);
        let buf = &mut raw[off..off + (1 << 20)];
        old.read_exact_at(buf, 1 << 20).expect("aligned");
        assert_eq!(&buf[..], &data[1 << 20..2 << 20]);
        let mut odd = vec![0u8; 1000];
        old.read_exact_at(&mut odd, 12345).expect("unaligned");
        assert_eq!(&odd[..], &data[12345..13345]);
        let mut past = vec![0u8; 10];
        assert!(old.read_exact_at(&mut past, (3 << 20) - 5).is_err());

        // Out of the page cache (where the system can tell): read with
        // O_DIRECT, the same bytes.
        let f = File::open(&p).expect("open");
        f.sync_all().expect("sync");
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        if cached_share(&f).is_some_and(|share| share < 0.5) {
            let old = ColdFile::new(f);
            assert!(
                old.direct.is_some(),
                "a file not in the cache is read directly"
            );
            old.read_exact_at(buf, 2 << 20).expect("direct");
            assert_eq!(&buf[..], &data[2 << 20..3 << 20]);
            old.read_exact_at(&mut odd, 12345)
                .expect("unaligned, through the cache");
            assert_eq!(&odd[..], &data[12345..13345]);
        }
    }
}
