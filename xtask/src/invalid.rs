//! Text that breaks a rule of its grammar: an image reference, a platform, a tag of the
//! vendoring list; or a catalog whose images cannot make a graph (a cycle, an image named that
//! is neither the catalog's nor vendored). The error says what is wrong in words; the caller puts in front of it where
//! the text came from (the setting, the line, the file). A type rather than a `String`, so that
//! a signature says how it fails; and no run's `Failure`: nothing was tried yet.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(String);

impl Invalid {
    /// What is wrong, as a sentence without the text's origin.
    pub fn new(what: impl Into<String>) -> Invalid {
        Invalid(what.into())
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}
