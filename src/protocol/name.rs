//! [`WireName`]: a validated relative path as carried in FILE and DIR.
//!
//! The receiver validates every name it is offered, whatever the sender
//! checked. Names are bytes, as on Linux: any name the receiving file
//! system can hold is carried (not UTF-8, a newline, a backslash, `C:`),
//! and escaped wherever a person or a log reads it
//! ([`crate::sanitize::escape_bytes`]). A valid name is relative and
//! '/'-separated; each component is 1..=255 bytes, not "." or "..", and
//! free of NUL; no component is one of ftx's own partial/state names
//! (`.X.ftx-part`, `.X.ftx-state`, ...); the whole name is at most 4096
//! bytes and 128 components deep. Benign names such as `hi..txt` or `a/..b`
//! are accepted.

use super::limits::{MAX_COMPONENT_LEN, MAX_DEPTH, MAX_NAME_LEN};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Why a name is refused. The messages quote nothing of the raw name, so
/// they are safe to print as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero bytes.
    #[error("empty name")]
    Empty,
    /// Longer than 4096 bytes.
    #[error("name is {0} bytes, more than the limit of 4096")]
    TooLong(usize),
    /// Starts with '/'.
    #[error("absolute path not allowed")]
    Absolute,
    /// Contains NUL.
    #[error("NUL byte not allowed in a name")]
    Nul,
    /// An empty component (`a//b`, trailing `/`).
    #[error("empty path component")]
    EmptyComponent,
    /// A `.` component.
    #[error("'.' component not allowed")]
    Dot,
    /// A `..` component.
    #[error("'..' component not allowed (path traversal)")]
    DotDot,
    /// A component over 255 bytes.
    #[error("path component is {0} bytes, more than the limit of 255")]
    ComponentTooLong(usize),
    /// More than 128 components.
    #[error("path is {0} components deep, more than the limit of 128")]
    TooDeep(usize),
    /// A component ftx reserves for its partial and state files.
    #[error("name reserved for ftx's partial files (.NAME.ftx-part and the like)")]
    Reserved,
}

/// Suffixes of the receiver's own partial and state files; a component that
/// starts with '.' and ends with one of these is refused, so no peer can
/// plant a partial or a state file for a later transfer.
pub const RESERVED_SUFFIXES: [&str; 7] = [
    ".ftx-part",
    ".ftx-dir",
    ".ftx-state",
    ".ftx-state.tmp",
    ".ftx-hpart",
    ".ftx-hstate",
    ".ftx-hstate.tmp",
];

/// True for a name of ftx's own working files (`.X.ftx-part`,
/// `.X.ftx-state`, ...), never content.
pub fn reserved(component: &[u8]) -> bool {
    component.starts_with(b".")
        && RESERVED_SUFFIXES
            .iter()
            .any(|s| component.ends_with(s.as_bytes()))
}

/// A name that passed every rule of the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireName(Vec<u8>);

impl WireName {
    /// Validates raw bytes from the wire.
    pub fn from_bytes(raw: &[u8]) -> Result<WireName, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(raw.len()));
        }
        if raw.starts_with(b"/") {
            return Err(NameError::Absolute);
        }
        if raw.contains(&0) {
            return Err(NameError::Nul);
        }
        let mut depth = 0;
        for comp in raw.split(|&b| b == b'/') {
            depth += 1;
            match comp {
                b"" => return Err(NameError::EmptyComponent),
                b"." => return Err(NameError::Dot),
                b".." => return Err(NameError::DotDot),
                c if c.len() > MAX_COMPONENT_LEN => {
                    return Err(NameError::ComponentTooLong(c.len()))
                }
                c if reserved(c) => return Err(NameError::Reserved),
                _ => {}
            }
        }
        if depth > MAX_DEPTH {
            return Err(NameError::TooDeep(depth));
        }
        Ok(WireName(raw.to_vec()))
    }

    /// Validates a name given as text.
    pub fn parse(s: &str) -> Result<WireName, NameError> {
        Self::from_bytes(s.as_bytes())
    }

    /// The name's bytes ('/'-separated), as on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as a path relative to the output directory.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The name escaped for a person or a log (never raw control bytes).
    pub fn shown(&self) -> String {
        crate::sanitize::escape_bytes(&self.0)
    }

    /// The components, parents first.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0.split(|&b| b == b'/').map(OsStr::from_bytes)
    }

    /// Splits into the parent components and the last component.
    pub fn split_last(&self) -> (Vec<&OsStr>, &OsStr) {
        let mut parts: Vec<&OsStr> = self.components().collect();
        let last = parts.pop().unwrap_or_default();
        (parts, last)
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn benign_names_are_accepted() {
        for n in [
            "a",
            "hi..txt",
            "a/..b",
            "..txt",
            "dir/sub/file.bin",
            "with space.txt",
            "ünïcødé/ファイル.txt",
            "...",
            ".hidden",
            "12:30.log",
            "notes.ftx-part",
            ".ftx-partial",
        ] {
            assert!(WireName::parse(n).is_ok(), "{n:?}");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/abs", NameError::Absolute),
            ("//tmp/x", NameError::Absolute),
            ("..", NameError::DotDot),
            ("../x", NameError::DotDot),
            ("a/../../x", NameError::DotDot),
            ("a/..", NameError::DotDot),
            ("./../x", NameError::Dot),
            (".", NameError::Dot),
            ("a/./b", NameError::Dot),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("a\0b", NameError::Nul),
            (".x.iso.ftx-part", NameError::Reserved),
            (".x.ftx-dir", NameError::Reserved),
            ("a/.b.ftx-dir/c", NameError::Reserved),
            ("d/.x.iso.ftx-state", NameError::Reserved),
            (".x.ftx-state.tmp", NameError::Reserved),
            (".abc.ftx-hpart", NameError::Reserved),
        ];
        for (n, want) in cases {
            assert_eq!(WireName::parse(n).as_ref(), Err(want), "{n:?}");
        }
    }

    #[test]
    fn bounds() {
        let long = "a".repeat(256);
        assert_eq!(
            WireName::parse(&long),
            Err(NameError::ComponentTooLong(256))
        );
        assert!(WireName::parse(&"a".repeat(255)).is_ok());
        let deep = vec!["d"; 129].join("/");
        assert_eq!(WireName::parse(&deep), Err(NameError::TooDeep(129)));
        let huge = vec!["d".repeat(200); 30].join("/");
        assert!(matches!(WireName::parse(&huge), Err(NameError::TooLong(_))));
        // Names are bytes: what a Linux file system holds is carried.
        for ok in [
            &b"a\xffb"[..],
            b"line\nbreak",
            b"tab\there",
            b"esc\x1b[1A",
            b"back\\slash",
            b"C:x",
        ] {
            assert!(WireName::from_bytes(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn split_last() {
        let n = WireName::parse("a/b/c").expect("valid");
        let os = |s: &'static str| OsStr::new(s);
        assert_eq!(n.split_last(), (vec![os("a"), os("b")], os("c")));
        let n = WireName::parse("c").expect("valid");
        assert_eq!(n.split_last(), (vec![], os("c")));
    }

    proptest! {
        #[test]
        fn valid_names_never_escape(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(n) = WireName::from_bytes(&raw) {
                prop_assert!(!n.as_bytes().starts_with(b"/"));
                prop_assert!(!n.as_bytes().contains(&0));
                prop_assert!(n.components().all(|c| !c.is_empty() && c != "." && c != ".."));
                prop_assert!(!n.shown().chars().any(char::is_control));
            }
        }
    }
}
