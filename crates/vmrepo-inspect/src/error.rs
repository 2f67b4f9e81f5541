//! The inspector's error: a one-line message. Inspection itself rarely fails:
//! what cannot be read becomes a warning in the report.

use std::fmt;

/// An error while reading the guest.
#[derive(Debug)]
pub struct Error(String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }

    pub(crate) fn bounds(offset: u64, len: usize, dev_len: u64) -> Error {
        Error(format!("a read of {len} bytes at {offset} runs past the end of the device ({dev_len} bytes)"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<vmrepo_format::Error> for Error {
    fn from(e: vmrepo_format::Error) -> Error {
        Error(e.to_string())
    }
}
