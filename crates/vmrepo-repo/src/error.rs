//! One error type for the repository: a small, stable kind, a one-line message
//! that names the file and the problem, and the underlying cause.

use std::fmt;
use std::io;
use std::path::Path;

/// The class of a failure. The `vmrepo` binary maps each to a documented exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The folder is not a vmrepo repository, or its metadata is unusable.
    NotARepository,
    /// No image by that name, or a file that vanished.
    NotFound,
    /// A name matches images in several VM folders.
    Ambiguous,
    /// The target already exists (an import without `--replace`).
    AlreadyExists,
    /// A malformed name, field, query or argument.
    InvalidInput,
    /// A sidecar (`.checksum`, `.txt`) that cannot be read or parsed.
    BadSidecar,
    /// The disk or quota is full.
    NoSpace,
    /// Another process holds the repository lock past the waiting time.
    Locked,
    /// Interrupted by a signal; what was under way was undone.
    Interrupted,
    /// The SQLite index failed.
    Index,
    /// An image file that is malformed, of a format vmrepo does not read, or
    /// whose content disagrees with its name (without `--force`).
    BadImage,
    /// Reading an image needs a file it references (extent, backing file).
    NeedsReferenced,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    /// The documented exit code (README, docs/json.md) and the name `--json`
    /// and the HTTP API give the kind.
    pub fn code_and_name(self) -> (u8, &'static str) {
        match self {
            ErrorKind::NotARepository => (3, "not-a-repository"),
            ErrorKind::NotFound => (4, "not-found"),
            ErrorKind::AlreadyExists => (5, "already-exists"),
            ErrorKind::InvalidInput | ErrorKind::Ambiguous | ErrorKind::BadSidecar => (6, "invalid-input"),
            ErrorKind::NoSpace => (8, "no-space"),
            ErrorKind::Locked => (9, "locked"),
            ErrorKind::Index => (10, "index"),
            ErrorKind::BadImage => (11, "bad-image"),
            ErrorKind::NeedsReferenced => (12, "needs-referenced-file"),
            ErrorKind::Interrupted => (130, "interrupted"),
            ErrorKind::Io => (7, "io"),
        }
    }
}

/// A repository error: see [`ErrorKind`].
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a one-line message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }

    /// An I/O error while doing `what` to `path` ("cannot read /x: ...").
    /// A full disk or quota becomes [`ErrorKind::NoSpace`], a missing file
    /// [`ErrorKind::NotFound`].
    pub fn io(what: &str, path: &Path, err: io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ErrorKind::NoSpace,
            _ if err.kind() == io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ if err.kind() == io::ErrorKind::Interrupted => ErrorKind::Io,
            _ => ErrorKind::Io,
        };
        Error { kind, message: format!("cannot {what} {}", path.display()), source: Some(Box::new(err)) }
    }

    /// An index (SQLite) failure while doing `what`. A full disk is
    /// [`ErrorKind::NoSpace`], like any other write that fails for room.
    pub fn index(what: &str, err: rusqlite::Error) -> Error {
        let kind = match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => ErrorKind::NoSpace,
            _ => ErrorKind::Index,
        };
        let unwritable = crate::index::is_unwritable(&err);
        Error {
            kind,
            message: format!("index: cannot {what}"),
            source: Some(Box::new(IndexCause { err, unwritable })),
        }
    }

    /// Whether this is an index failure that means its file cannot be
    /// written here (a full disk, a read-only place), rather than a fault.
    pub fn index_unwritable(&self) -> bool {
        self.source.as_ref().and_then(|s| s.downcast_ref::<IndexCause>()).is_some_and(|c| c.unwritable)
    }

    /// The user asked to stop.
    pub fn interrupted() -> Error {
        Error::new(ErrorKind::Interrupted, "interrupted")
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Adds what was being done in front of the message ("add x.img: ...").
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

/// An SQLite error, and whether it says the index cannot be written.
#[derive(Debug)]
struct IndexCause {
    err: rusqlite::Error,
    unwritable: bool,
}

impl fmt::Display for IndexCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.err.fmt(f)
    }
}

impl std::error::Error for IndexCause {}

/// The cause is part of the message (one line, for people and logs), so it
/// is not repeated as a `source`.
impl std::error::Error for Error {}

impl From<vmrepo_format::Error> for Error {
    fn from(e: vmrepo_format::Error) -> Error {
        let kind = match e.kind() {
            vmrepo_format::ErrorKind::Io => ErrorKind::Io,
            vmrepo_format::ErrorKind::NeedsReferenced => ErrorKind::NeedsReferenced,
            vmrepo_format::ErrorKind::NotAFile => ErrorKind::InvalidInput,
            _ => ErrorKind::BadImage,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<vmrepo_name::NameError> for Error {
    fn from(e: vmrepo_name::NameError) -> Error {
        Error::new(ErrorKind::InvalidInput, e.to_string())
    }
}
