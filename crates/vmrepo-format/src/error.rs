//! Errors: a small stable kind, a one-line message naming the file, the
//! structure and the offset, and the cause.

use std::fmt;
use std::io;

/// The class of a format error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading the file failed.
    Io,
    /// A format or a feature vmrepo does not read (`unsupported format: bochs`,
    /// an unknown incompatible qcow2 feature bit).
    Unsupported,
    /// The file contradicts its own format: a field out of range, a table
    /// pointing past the end, a checksum that does not match.
    Malformed,
    /// A table or count larger than vmrepo accepts (see the `MAX_*` caps).
    TooLarge,
    /// Reading needs a file this one references (extent, data file, backing
    /// file), which is only opened when asked (`OpenOptions::follow`).
    NeedsReferenced,
    /// A referenced file outside the image's own folder, a link, or a
    /// referenced file that is not a regular file.
    Refused,
    /// The path names something that is not a disk image file: a FIFO, a
    /// socket, a character device (`/dev/zero`) or a folder. Only regular
    /// files and block devices are opened, and a FIFO is never waited on.
    NotAFile,
}

/// A format error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }

    /// A malformed structure: `what` at `offset` (in the file).
    pub(crate) fn malformed(what: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Malformed, what.to_string())
    }

    pub(crate) fn too_large(what: impl fmt::Display) -> Error {
        Error::new(ErrorKind::TooLarge, what.to_string())
    }

    pub(crate) fn unsupported(what: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Unsupported, what.to_string())
    }

    /// An I/O error while doing `what` (writing output, for a caller).
    pub fn from_io(what: impl fmt::Display, err: io::Error) -> Error {
        Error::io(what, err)
    }

    pub(crate) fn io(what: impl fmt::Display, err: io::Error) -> Error {
        Error { kind: ErrorKind::Io, message: what.to_string(), source: Some(err) }
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Puts `what` (a file name, a format) in front of the message.
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl Error {
    /// The underlying I/O error, if this is one (a closed pipe, say).
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

/// The cause is part of the message (one line, for people and logs), so it
/// is not repeated as a `source`.
impl std::error::Error for Error {}

/// Shorthand: fails with [`ErrorKind::Malformed`] unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::error::Error::malformed(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;
