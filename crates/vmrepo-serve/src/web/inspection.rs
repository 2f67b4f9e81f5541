//! The inspection of an image for its page, computed once and kept.
//!
//! Reading an image and looking inside its guest ([`vmrepo_repo::content::read`])
//! can take seconds on a large disk, and a hostile one may be made to take
//! long. It runs on the blocking pool, at most [`RUNNING`] at once, and its
//! result is kept in memory keyed by the file's identity (path, inode, size,
//! modification time), so that a replaced image is read again. A page waits
//! for it only [`BUDGET`]; past that it is shown without it, and a later
//! visit finds the result in the cache. A panic in the inspector is an
//! inspection that failed, never a page that does.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use vmrepo_inspect::Report;
use vmrepo_name::ImageName;

/// How long a page waits for an inspection before it is shown without it.
pub const BUDGET: Duration = Duration::from_secs(4);

/// Inspections running at once (the others wait for a turn).
pub const RUNNING: usize = 2;

/// Inspections kept, finished or running.
pub const KEPT: usize = 256;

/// What identifies the bytes inspected.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub path: PathBuf,
    pub ino: Option<u64>,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
}

/// What the inspection found.
#[derive(Debug)]
pub struct Inspected {
    /// The guest, as `vmrepo inspect` shows it; `None` when its bytes cannot be read.
    pub report: Option<Report>,
    /// The description's guest facts, as `add` would write them now.
    pub facts: Vec<(&'static str, Vec<String>)>,
    /// The budget against the name's maximum size.
    pub budget: Option<vmrepo_inspect::Budget>,
    /// Where the name or the VM folder disagrees with the content.
    pub disagreements: Vec<String>,
    /// Why the guest could not be read, when it could not.
    pub unreadable: Option<String>,
}

/// An inspection's end: what it found, or why it failed.
pub type Outcome = Result<Arc<Inspected>, String>;

/// What a page gets.
pub enum Lookup {
    Done(Outcome),
    /// Still running after the budget.
    Running,
    /// Too many inspections are running or queued to start one more.
    Busy,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, watch::Receiver<Option<Outcome>>>,
    order: VecDeque<Key>,
}

/// The cache of inspections.
pub struct Inspections {
    inner: Mutex<Inner>,
    turns: Arc<Semaphore>,
}

impl Default for Inspections {
    fn default() -> Inspections {
        Inspections { inner: Mutex::default(), turns: Arc::new(Semaphore::new(RUNNING)) }
    }
}

impl Inspections {
    /// The inspection of the image at `key.path` (of the VM `vm`, named
    /// `name`), started if it is not known, waited for at most `budget`.
    pub async fn get(
        &self,
        key: Key,
        vm: Option<vmrepo_name::Vm>,
        name: Option<ImageName>,
        budget: Duration,
    ) -> Lookup {
        let mut rx = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            match inner.entries.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    if !inner.evict() {
                        return Lookup::Busy;
                    }
                    let (tx, rx) = watch::channel(None);
                    inner.entries.insert(key.clone(), rx.clone());
                    inner.order.push_back(key.clone());
                    let turns = self.turns.clone();
                    tokio::spawn(async move {
                        // The semaphore is never closed: a turn always comes.
                        let _turn = turns.acquire_owned().await;
                        let path = key.path.clone();
                        let outcome = tokio::task::spawn_blocking(move || inspect(&path, vm, name.as_ref()))
                            .await
                            .unwrap_or_else(|e| Err(format!("the inspection failed: {e}")));
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        match tokio::time::timeout(budget, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => match v.as_ref() {
                Some(o) => Lookup::Done(o.clone()),
                None => Lookup::Running,
            },
            Ok(Err(_)) => Lookup::Done(Err("the inspection was abandoned".into())),
            Err(_) => Lookup::Running,
        }
    }
}

impl Inner {
    /// Makes room for one more entry, dropping the oldest finished ones;
    /// false when every entry kept is still running.
    fn evict(&mut self) -> bool {
        let mut tries = self.order.len();
        while self.entries.len() >= KEPT && tries > 0 {
            tries -= 1;
            let Some(k) = self.order.pop_front() else { break };
            let done = self.entries.get(&k).is_none_or(|rx| rx.borrow().is_some());
            if done {
                self.entries.remove(&k);
            } else {
                self.order.push_back(k);
            }
        }
        self.entries.len() < KEPT
    }
}

/// Reads the image and looks inside it (blocking).
fn inspect(path: &std::path::Path, vm: Option<vmrepo_name::Vm>, name: Option<&ImageName>) -> Outcome {
    let content = vmrepo_repo::content::read(path).map_err(|e| e.to_string())?;
    let mut disagreements: Vec<String> = Vec::new();
    let (facts, budget) = match name {
        Some(n) => {
            disagreements.extend(content.disagreements(n).into_iter().map(|d| d.message));
            let max = n.max_size().bytes_for(content.info.virtual_size);
            (content.facts_for(n).guest, content.guest.as_ref().map(|r| r.budget.against(max)))
        }
        None => (Vec::new(), content.guest.as_ref().map(|r| r.budget.clone())),
    };
    // With neither a root filesystem nor swap read, every part of the budget
    // is an unknown, not a zero.
    let budget =
        budget.filter(|_| content.guest.as_ref().is_some_and(|r| r.root().is_some() || !r.swap.is_empty()));
    if let Some(vm) = vm {
        disagreements.extend(content.vm_disagreements(vm).into_iter().map(|d| d.message));
    }
    Ok(Arc::new(Inspected {
        report: content.guest,
        facts,
        budget,
        disagreements,
        unreadable: content.unreadable,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &std::path::Path) -> Key {
        Key { path: path.to_path_buf(), ino: Some(1), size: Some(5), mtime_ns: Some(7) }
    }

    #[tokio::test]
    async fn a_page_that_cannot_wait_gets_the_result_on_its_next_visit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
        let cache = Inspections::default();
        // No time at all: the inspection goes on without the page.
        let first = cache.get(key(&path), None, None, Duration::ZERO).await;
        assert!(matches!(first, Lookup::Running | Lookup::Done(_)));
        match cache.get(key(&path), None, None, Duration::from_secs(30)).await {
            Lookup::Done(Ok(i)) => assert!(i.report.is_some()),
            Lookup::Done(Err(e)) => panic!("{e}"),
            _ => panic!("the inspection did not finish"),
        }
        // Kept: the same identity is not read again, even once the file is gone.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(cache.get(key(&path), None, None, Duration::ZERO).await, Lookup::Done(Ok(_))));
        // A file that cannot be read is an inspection that failed, said as such.
        let gone = tmp.path().join("gone.img");
        assert!(matches!(
            cache.get(key(&gone), None, None, Duration::from_secs(30)).await,
            Lookup::Done(Err(_))
        ));
    }

    #[tokio::test]
    async fn the_cache_keeps_at_most_its_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Inspections::default();
        for i in 0..KEPT + 10 {
            let path = tmp.path().join(format!("{i}"));
            let _ = cache.get(key(&path), None, None, Duration::from_secs(30)).await;
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.entries.len() <= KEPT);
        assert_eq!(inner.entries.len(), inner.order.len());
    }
}
