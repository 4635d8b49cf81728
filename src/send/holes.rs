//! Sparse files on the sender: whether a file has holes, and where its
//! data and holes are (`SEEK_DATA`, `SEEK_HOLE`). Used by the offer
//! (`answer.rs`) and by the bodies (`answer.rs`, `stream.rs`), which do not
//! import each other for it.

/// True when a file takes less room on disk than its size: it has holes,
/// and is sent as a sparse file.
pub(super) fn sparse(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    md.blocks().saturating_mul(512) < md.len()
}

/// The extents of `file` from `from` to `size`: `(offset, length, hole)`,
/// found with `SEEK_DATA` and `SEEK_HOLE`, in order and contiguous.
pub(super) fn extents(
    file: &std::fs::File,
    from: u64,
    size: u64,
) -> std::io::Result<Vec<(u64, u64, bool)>> {
    use rustix::fs::{seek, SeekFrom};
    use rustix::io::Errno;
    let mut out = Vec::new();
    let mut pos = from;
    while pos < size {
        // ENXIO: no data (or no hole) from here to the end.
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if data > pos {
            out.push((pos, data - pos, true));
            pos = data;
            if pos >= size {
                break;
            }
        }
        let hole = match seek(file, SeekFrom::Hole(pos)) {
            Ok(h) => h.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        let hole = hole.max(pos + 1).min(size);
        out.push((pos, hole - pos, false));
        pos = hole;
    }
    Ok(out)
}
