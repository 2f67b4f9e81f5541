//! The audit log of writes: `.vmrepo/audit.log` ([`AUDIT_FILE`]), one JSON
//! object a line.
//!
//! Every write request that names a token appends a line once it is
//! answered: the time (UTC), the token's name (`null` when the token was not
//! recognised), the peer's address, the action (`put`, `post`, `delete`),
//! the image's path, its SHA-256 and size when bytes were received, the
//! HTTP status and a one-line message. Never the token nor any header. A
//! line is written with one `write` to a file opened `O_APPEND`, so that
//! lines of several requests (and servers) never interleave; the lines of
//! writes that changed the repository are fsynced before the answer is
//! sent, refusals are not (a client sending bad tokens in a loop must not
//! cost a disk flush each). A write whose line cannot be written is still
//! answered, and the failure is logged.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::Serialize;

/// The audit log, in the repository's metadata folder.
pub const AUDIT_FILE: &str = "audit.log";

/// One line of the audit log.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub time: String,
    pub token: Option<String>,
    pub peer: String,
    pub action: &'static str,
    pub path: String,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    pub status: u16,
    pub message: String,
}

/// Appends `entry` to `log`, fsynced when `durable`.
pub fn append(log: PathBuf, entry: &Entry, durable: bool) {
    let mut line = match serde_json::to_vec(entry) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot write the audit line: {e}");
            return;
        }
    };
    line.push(b'\n');
    let result =
        std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(&log).and_then(|mut f| {
            f.write_all(&line)?;
            if durable { f.sync_data() } else { Ok(()) }
        });
    if let Err(e) = result {
        tracing::error!("cannot append to {}: {e}", log.display());
    }
}

/// The current time as the log writes it.
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
