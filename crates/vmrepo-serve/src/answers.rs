//! Answers of the read API kept while nothing they depend on changes, so
//! that a repeated query is answered without the index (`bench/serve.sh`:
//! `find` under `wrk -c 64`).
//!
//! An answer depends on the index and, through the refresh that brings the
//! index up to date, on the tree. It is kept with two witnesses taken before
//! it was computed, and served again only while both still hold:
//!
//! * the **stamp** of the tree: the inode and modification time of `vm/`, of
//!   each folder in it and of the index file. Any import, removal or rename
//!   changes a folder's time. A stamp with a time within the catalog's racy
//!   window ([`vmrepo_repo::catalog::RACY_WINDOW_NS`]) of now is not trusted
//!   (a second change within the same clock tick keeps the time), and the
//!   answer is not kept.
//! * the index's **data version** (`PRAGMA data_version` on a connection of
//!   its own, which never writes): it changes with every commit of any other
//!   connection or process, such as a `verify` recording its results.
//!
//! Both are taken before the answer's refresh and query, so a change that
//! lands meanwhile makes the kept answer look older than it is, never newer.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use vmrepo_repo::fsutil::mtime_ns;
use vmrepo_repo::{Catalog, Repository};

/// Answers kept at most.
const MAX_ENTRIES: usize = 256;
/// Bytes of kept answers at most.
const MAX_BYTES: usize = 16 << 20;

/// What a kept answer depends on in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(Vec<(u64, i64)>);

/// A kept answer.
#[derive(Debug)]
pub struct Answer {
    pub stamp: Stamp,
    pub version: i64,
    pub body: Bytes,
    pub etag: String,
    /// Headers particular to the answer (`X-Total-Count`, `Link`).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Arc<Answer>>,
    order: VecDeque<String>,
    bytes: usize,
}

/// The kept answers and the witnesses.
#[derive(Default)]
pub struct Answers {
    /// The catalog whose data version is read, with the inode of the index
    /// file it opened (reopened when the file is replaced).
    watcher: Mutex<Option<(Catalog, u64)>>,
    entries: Mutex<Entries>,
}

impl Answers {
    /// The tree's stamp now, or `None` when it cannot be taken or is too
    /// recent to be trusted.
    pub fn stamp(&self, repo: &Repository) -> Option<Stamp> {
        let vm = repo.vm_root();
        let mut marks = Vec::with_capacity(8);
        let mut newest = i64::MIN;
        let mut note = |md: &std::fs::Metadata| {
            let t = mtime_ns(md);
            newest = newest.max(t);
            marks.push((md.ino(), t));
        };
        note(&std::fs::symlink_metadata(&vm).ok()?);
        let mut folders: Vec<_> = std::fs::read_dir(&vm)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
            .collect();
        if folders.len() > 4096 {
            return None;
        }
        folders.sort_by_key(std::fs::DirEntry::file_name);
        for f in folders {
            note(&std::fs::symlink_metadata(f.path()).ok()?);
        }
        let index = std::fs::metadata(repo.index_path()).ok()?;
        marks.push((index.ino(), 0));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        let now = i64::try_from(now.as_nanos()).ok()?;
        (now.saturating_sub(newest) > vmrepo_repo::catalog::RACY_WINDOW_NS).then_some(Stamp(marks))
    }

    /// The index's data version, or `None` when it cannot be read (the
    /// index is only a copy in memory, or failed). The watching catalog is
    /// opened (or opened again, when the index file was replaced) only when
    /// `may_open`: opening may wait for the repository lock, which an async
    /// task must not.
    pub fn version(&self, repo: &Repository, stopping: &AtomicBool, may_open: bool) -> Option<i64> {
        let ino = std::fs::metadata(repo.index_path()).ok()?.ino();
        let mut w = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if w.as_ref().is_none_or(|(_, opened)| *opened != ino) {
            if !may_open {
                return None;
            }
            let c = Catalog::open(repo.clone(), stopping).ok()?;
            if c.in_memory().is_some() {
                return None;
            }
            *w = Some((c, ino));
        }
        w.as_ref().and_then(|(c, _)| c.data_version().ok())
    }

    /// The answer kept for `key`, if the witnesses still hold.
    pub fn get(&self, key: &str, stamp: &Stamp, version: i64) -> Option<Arc<Answer>> {
        let e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        e.map.get(key).filter(|a| a.stamp == *stamp && a.version == version).cloned()
    }

    /// Keeps an answer, making room by forgetting the oldest.
    pub fn put(&self, key: String, answer: Answer) {
        let size = answer.body.len() + key.len();
        if size > MAX_BYTES / 4 {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = e.map.insert(key.clone(), Arc::new(answer)) {
            e.bytes -= old.body.len() + key.len();
            e.order.retain(|k| *k != key);
        }
        e.bytes += size;
        e.order.push_back(key);
        while e.map.len() > MAX_ENTRIES || e.bytes > MAX_BYTES {
            let Some(k) = e.order.pop_front() else { break };
            if let Some(old) = e.map.remove(&k) {
                e.bytes -= old.body.len() + k.len();
            }
        }
    }
}
