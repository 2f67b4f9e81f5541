//! How long operations report their progress; the binary draws bars, tests ignore it.

/// Receives progress of long operations. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// Work of `total` bytes starts; `what` names it.
    fn start(&self, _total: u64, _what: &str) {}
    /// `bytes` more are done.
    fn advance(&self, _bytes: u64) {}
    /// Something a person may want to know now ("waiting for the lock").
    fn note(&self, _message: &str) {}
    /// The work is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
