//! The repository lock: an exclusive `flock` on `.vmrepo/lock`, held only
//! while a command changes the tree (the last step of an import, a removal,
//! recovery). Copying and hashing happen outside it, so several imports run
//! side by side and only their final renames take turns. `flock` is released
//! by the kernel when a process dies, so a killed command never leaves the
//! repository locked; on NFS, Linux maps it to a lock the server keeps.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, ErrorKind, Result};

/// How long a command waits for another one's lock by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(120);
/// Environment variable overriding [`DEFAULT_LOCK_WAIT`], in seconds.
pub const LOCK_WAIT_ENV: &str = "VMREPO_LOCK_WAIT";

/// Held while alive.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl RepoLock {
    /// Takes the lock of the repository whose metadata folder is `meta`,
    /// waiting for other holders up to [`DEFAULT_LOCK_WAIT`] (or
    /// `VMREPO_LOCK_WAIT` seconds). `waiting` is called once if the lock is
    /// busy; `cancel` (Ctrl-C, SIGTERM) stops the wait at once.
    ///
    /// # Errors
    /// [`ErrorKind::Locked`] after the wait; [`ErrorKind::Interrupted`];
    /// [`ErrorKind::InvalidInput`] for a `VMREPO_LOCK_WAIT` that is not a
    /// number of seconds; an I/O error if the lock file cannot be created (a
    /// read-only tree).
    pub fn acquire(meta: &Path, waiting: &dyn Fn(), cancel: &AtomicBool) -> Result<RepoLock> {
        let wait = lock_wait()?;
        let path = meta.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(&path)
            .map_err(|e| Error::io("open the lock file", &path, e))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(RepoLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io("lock", &path, e.into())),
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            if !told {
                waiting();
                told = true;
            }
            if start.elapsed() >= wait {
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!(
                        "{} is held by another vmrepo command after {}s of waiting (set {LOCK_WAIT_ENV} to wait longer)",
                        path.display(),
                        wait.as_secs()
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// How often a busy lock is tried again (and the stop flag looked at).
const POLL: Duration = Duration::from_millis(20);

/// The wait from `VMREPO_LOCK_WAIT`, or the default.
///
/// # Errors
/// A value that is not a whole number of seconds.
pub fn lock_wait() -> Result<Duration> {
    match std::env::var(LOCK_WAIT_ENV) {
        Err(_) => Ok(DEFAULT_LOCK_WAIT),
        Ok(s) => s.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{LOCK_WAIT_ENV}={s:?}: expected a whole number of seconds to wait for the lock"),
            )
        }),
    }
}

/// Tries to take an exclusive lock on an open file without waiting.
pub(crate) fn try_lock(file: &File) -> bool {
    flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive).is_ok()
}
