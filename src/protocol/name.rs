//! [`WireName`]: a validated relative path as carried in FILE and DIR.
//!
//! The receiver validates every name it is offered, whatever the sender
//! checked. A valid name is relative and '/'-separated; each component is
//! 1..=255 bytes, not "." or "..", and free of NUL, backslash and control
//! characters (C0, DEL, C1); the first component is not a drive letter
//! ("C:"); no component is one of ftx's own partial/state names
//! (`.X.ftx-part`, `.X.ftx-state`, ...); the whole name is at most 4096
//! bytes and 128 components deep, and valid UTF-8. Benign names such as `hi..txt` or `a/..b` are accepted.

use super::limits::{MAX_COMPONENT_LEN, MAX_DEPTH, MAX_NAME_LEN};
use std::fmt;

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
    /// Not valid UTF-8.
    #[error("name is not valid UTF-8")]
    NotUtf8,
    /// Starts with '/'.
    #[error("absolute path not allowed")]
    Absolute,
    /// Starts with a drive letter such as `C:`.
    #[error("drive letter prefix not allowed")]
    DriveLetter,
    /// Contains a backslash.
    #[error("backslash not allowed in a name")]
    Backslash,
    /// Contains NUL.
    #[error("NUL byte not allowed in a name")]
    Nul,
    /// Contains a control character.
    #[error("control character U+{0:04X} not allowed in a name")]
    Control(u32),
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
pub const RESERVED_SUFFIXES: [&str; 6] = [
    ".ftx-part",
    ".ftx-state",
    ".ftx-state.tmp",
    ".ftx-hpart",
    ".ftx-hstate",
    ".ftx-hstate.tmp",
];

fn reserved(component: &str) -> bool {
    component.starts_with('.') && RESERVED_SUFFIXES.iter().any(|s| component.ends_with(s))
}

/// A name that passed every rule of the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireName(String);

impl WireName {
    /// Validates raw bytes from the wire.
    pub fn from_bytes(raw: &[u8]) -> Result<WireName, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(raw.len()));
        }
        let s = std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
        Self::parse(s)
    }

    /// Validates a name given as text.
    pub fn parse(s: &str) -> Result<WireName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        if s.starts_with('/') {
            return Err(NameError::Absolute);
        }
        let b = s.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(NameError::DriveLetter);
        }
        for c in s.chars() {
            match c {
                '\0' => return Err(NameError::Nul),
                '\\' => return Err(NameError::Backslash),
                c if c.is_control() => return Err(NameError::Control(c as u32)),
                _ => {}
            }
        }
        let mut depth = 0;
        for comp in s.split('/') {
            depth += 1;
            match comp {
                "" => return Err(NameError::EmptyComponent),
                "." => return Err(NameError::Dot),
                ".." => return Err(NameError::DotDot),
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
        Ok(WireName(s.to_owned()))
    }

    /// The name as text ('/'-separated).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, parents first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Splits into the parent components and the last component.
    pub fn split_last(&self) -> (Vec<&str>, &str) {
        let mut parts: Vec<&str> = self.components().collect();
        let last = parts.pop().unwrap_or_default();
        (parts, last)
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

impl fmt::Display for WireName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
            ("..\\..\\x", NameError::Backslash),
            ("C:\\x", NameError::DriveLetter),
            ("C:x", NameError::DriveLetter),
            ("\\\\srv\\share", NameError::Backslash),
            ("a\0b", NameError::Nul),
            ("\u{1b}[1A", NameError::Control(0x1b)),
            ("a\nb", NameError::Control(0x0a)),
            ("a\rb", NameError::Control(0x0d)),
            ("\u{7f}", NameError::Control(0x7f)),
            ("a\u{85}b", NameError::Control(0x85)),
            (".x.iso.ftx-part", NameError::Reserved),
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
        assert_eq!(WireName::from_bytes(b"a\xffb"), Err(NameError::NotUtf8));
    }

    #[test]
    fn split_last() {
        let n = WireName::parse("a/b/c").expect("valid");
        assert_eq!(n.split_last(), (vec!["a", "b"], "c"));
        let n = WireName::parse("c").expect("valid");
        assert_eq!(n.split_last(), (vec![], "c"));
    }

    proptest! {
        #[test]
        fn valid_names_never_escape(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(n) = WireName::from_bytes(&raw) {
                prop_assert!(!n.as_str().starts_with('/'));
                prop_assert!(n.components().all(|c| !c.is_empty() && c != "." && c != ".."));
                prop_assert!(!n.as_str().chars().any(|c| c.is_control() || c == '\\'));
            }
        }
    }
}
