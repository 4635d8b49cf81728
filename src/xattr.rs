//! Extended attributes, POSIX ACLs and file capabilities (`--xattrs`,
//! `--acls`), with rsync's meaning: `--xattrs` carries every attribute but
//! the ACLs (`user.*`, and `security.*` and `trusted.*` where the sender
//! can read them: `security.capability` is a file capability), `--acls`
//! carries the ACLs (`system.posix_acl_access`, `system.posix_acl_default`).
//! The sender reads them from the open file ([`read`]); the receiver sets
//! them on the partial before its rename ([`apply`]) and names each one it
//! may not set (`security.*` and `trusted.*` need privileges).

use std::io;
use std::os::fd::AsFd;

/// One attribute: name and value, raw bytes.
pub type Attr = (Vec<u8>, Vec<u8>);

/// Which attributes are carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--xattrs`: all but the ACLs.
    pub xattrs: bool,
    /// `--acls`: the POSIX ACLs.
    pub acls: bool,
}

impl Selection {
    /// True when anything is carried.
    pub fn any(self) -> bool {
        self.xattrs || self.acls
    }

    /// Whether attribute `name` is carried. Pure.
    pub fn carries(self, name: &[u8]) -> bool {
        if is_acl(name) {
            self.acls
        } else {
            self.xattrs
        }
    }
}

/// True for a POSIX ACL's attribute.
pub fn is_acl(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

/// The largest value a XATTR frame carries (the control cap less the
/// frame's other fields and the longest name).
pub const MAX_VALUE: usize = 65536 - 4 - 2 - 255 - 2;
/// The most bytes of attributes one entry may carry, and the most
/// attributes: beyond either, the receiver ends the session.
pub const MAX_ENTRY_BYTES: usize = 256 << 10;
/// See [`MAX_ENTRY_BYTES`].
pub const MAX_ENTRY_ATTRS: usize = 1024;

/// What a file or directory has: its attributes' names (one list, for
/// [`kinds`] and [`read`] both).
pub fn names(fd: impl AsFd) -> io::Result<Vec<Vec<u8>>> {
    let fd = fd.as_fd();
    for _ in 0..4 {
        let n = match rustix::fs::flistxattr_query(fd) {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            // It grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "the list of extended attributes keeps changing",
    ))
}

/// Whether `names` hold attributes that `--xattrs` (first) and `--acls`
/// (second) would carry. Pure.
pub fn kinds(names: &[Vec<u8>]) -> (bool, bool) {
    (
        names.iter().any(|n| !is_acl(n)),
        names.iter().any(|n| is_acl(n)),
    )
}

/// Reads the attributes of `fd` among `names` (from [`names`]) that `sel`
/// carries. Ones too large for a frame, or that cannot be read, are named
/// in the second list.
pub fn read(fd: impl AsFd, names: &[Vec<u8>], sel: Selection) -> (Vec<Attr>, Vec<String>) {
    let fd = fd.as_fd();
    let mut got = Vec::new();
    let mut left = Vec::new();
    for name in names {
        if !sel.carries(name) {
            continue;
        }
        let shown = crate::sanitize::escape_bytes(name);
        let value = match rustix::fs::fgetxattr_query(fd, name.as_slice()) {
            Ok(n) if n > MAX_VALUE => {
                left.push(format!("{shown} ({n} bytes, more than {MAX_VALUE})"));
                continue;
            }
            Ok(n) => {
                let mut v = vec![0u8; n];
                match rustix::fs::fgetxattr(fd, name.as_slice(), &mut v[..]) {
                    Ok(k) => {
                        v.truncate(k);
                        v
                    }
                    Err(e) => {
                        left.push(format!("{shown} ({})", io::Error::from(e)));
                        continue;
                    }
                }
            }
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => {
                left.push(format!("{shown} ({})", io::Error::from(e)));
                continue;
            }
        };
        got.push((name.clone(), value));
    }
    (got, left)
}

/// Sets `attrs` on `fd`; each one that cannot be set, named with why.
pub fn apply(fd: impl AsFd, attrs: &[Attr]) -> Vec<String> {
    let fd = fd.as_fd();
    attrs
        .iter()
        .filter_map(|(name, value)| {
            rustix::fs::fsetxattr(fd, name.as_slice(), value, rustix::fs::XattrFlags::empty())
                .err()
                .map(|e| {
                    format!(
                        "{} ({})",
                        crate::sanitize::escape_bytes(name),
                        io::Error::from(e)
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_go_with_acls_and_the_rest_with_xattrs() {
        let x = Selection {
            xattrs: true,
            acls: false,
        };
        let a = Selection {
            xattrs: false,
            acls: true,
        };
        assert!(x.carries(b"user.note"));
        assert!(x.carries(b"security.capability"));
        assert!(x.carries(b"trusted.x"));
        assert!(!x.carries(b"system.posix_acl_access"));
        assert!(a.carries(b"system.posix_acl_access"));
        assert!(a.carries(b"system.posix_acl_default"));
        assert!(!a.carries(b"user.note"));
        assert!(!Selection::default().any());
    }

    #[test]
    fn user_attributes_round_trip_on_this_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let f = std::fs::File::create(&p).expect("create");
        let set = apply(&f, &[(b"user.note".to_vec(), b"hello\n\0x".to_vec())]);
        if !set.is_empty() {
            eprintln!("no user xattrs here ({set:?}): nothing to test");
            return;
        }
        let listed = names(&f).expect("names");
        assert_eq!(kinds(&listed), (true, false));
        let sel = Selection {
            xattrs: true,
            acls: true,
        };
        let (got, left) = read(&f, &listed, sel);
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(got, vec![(b"user.note".to_vec(), b"hello\n\0x".to_vec())]);
        let none = read(&f, &listed, Selection::default()).0;
        assert!(none.is_empty());
    }
}
