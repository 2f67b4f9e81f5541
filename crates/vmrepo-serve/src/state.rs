//! What every request shares: the repository, a pool of open catalogs, the
//! limits and the counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vmrepo_repo::{Catalog, Repository};

use crate::auth::TokenStore;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Limits on what a client may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request target (path and query) accepted, in bytes.
    pub max_uri: usize,
    /// Most records in one page of `/api/v1/images`.
    pub max_page: usize,
    /// Records in a page when the client does not say.
    pub default_page: usize,
    /// Bytes read from the disk per chunk of a download, at most.
    pub max_chunk: usize,
    /// The read buffers of all downloads together stay under this, shrinking
    /// each one's chunk when many run at once. A chunk lives until the
    /// socket has taken it, so this is about the memory downloads hold.
    pub download_buffers: usize,
    /// Time a client has to send its request headers (slowloris).
    pub header_timeout: Duration,
    /// Time in-flight downloads get to finish after SIGTERM.
    pub grace: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// The largest upload accepted, in bytes (`413` above).
    pub max_upload: u64,
    /// Uploads received at once (`503` above).
    pub max_uploads: usize,
    /// Time an upload may go without a byte arriving (slowloris) before it
    /// is rolled back.
    pub body_timeout: Duration,
    /// Bytes a second an upload must average over each `body_timeout`
    /// (a client trickling a byte at a time holds an upload slot otherwise).
    pub min_rate: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_uri: 4096,
            max_page: 10_000,
            default_page: 1000,
            max_chunk: 1 << 20,
            download_buffers: 16 << 20,
            header_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            max_connections: 1024,
            max_upload: 4 << 40,
            max_uploads: 4,
            body_timeout: Duration::from_secs(60),
            min_rate: 1024,
        }
    }
}

/// The state behind every handler.
pub struct AppState {
    pub repo: Repository,
    pub read_only: bool,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Catalogs not in use by a request (each an SQLite connection).
    pool: Mutex<Vec<Catalog>>,
    /// One permit per catalog that may be in use at once: further requests
    /// wait their turn here (in order) rather than each opening a catalog of
    /// its own, which under a few hundred connections cost memory and time
    /// enough for the last ones to wait seconds.
    catalogs: Arc<tokio::sync::Semaphore>,
    /// When the last refresh of the index started. Refreshes run one at a
    /// time: each is an SQLite write transaction, and side by side they
    /// would wait on SQLite's busy handler, which sleeps milliseconds at a
    /// time. And they are shared: see [`AppState::take_catalog`].
    refreshed: Mutex<Option<Instant>>,
    /// The URL people reach the server at, for the commands the web page
    /// shows (`https://vm.example.org`); `None`: the host they asked.
    pub public_url: Option<String>,
    /// `http` or `https`, for the same commands when `public_url` is not set.
    pub scheme: &'static str,
    /// Answers of the read API kept while nothing they depend on changes.
    pub answers: crate::answers::Answers,
    /// With `--sign-key`: the key and the signed catalog (`/catalog.json`).
    pub signing: Option<crate::signed::Signing>,
    /// With `--keys-rsa-key`: the RSA key of `/keys/authorized_keys.sig`, and the list last signed.
    pub ssh_keys: crate::ssh_keys::SshKeys,
    /// Inspections of images for their pages.
    pub inspections: crate::web::inspection::Inspections,
    /// Set at shutdown: a wait for the repository lock gives up, an import
    /// under way is undone.
    pub stopping: AtomicBool,
    /// Told at shutdown, for uploads waiting on their client to give up.
    pub stop: tokio::sync::watch::Sender<bool>,
    /// Who may write.
    pub tokens: TokenStore,
    /// One permit per upload being received.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Bytes announced by the uploads being received, not yet on the disk
    /// in full: free space is counted without them.
    pub reserved: AtomicU64,
}

/// Catalogs kept open between requests, and in use at most at once.
const POOL_MAX: usize = 16;

impl AppState {
    pub fn new(repo: Repository, read_only: bool, limits: Limits) -> AppState {
        AppState {
            pool: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(false),
            tokens: TokenStore::new(&repo),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(limits.max_uploads)),
            reserved: AtomicU64::new(0),
            repo,
            read_only,
            limits,
            metrics: Metrics::default(),
            catalogs: Arc::new(tokio::sync::Semaphore::new(POOL_MAX)),
            refreshed: Mutex::new(None),
            public_url: None,
            scheme: "http",
            answers: Default::default(),
            signing: None,
            ssh_keys: Default::default(),
            inspections: Default::default(),
        }
    }

    /// Runs `f` on a catalog brought up to date with the files, on a thread
    /// where blocking is allowed (SQLite and the file system block).
    ///
    /// # Errors
    /// The catalog cannot be opened or refreshed, or `f`'s error.
    pub async fn with_catalog<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Catalog) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        let arrived = Instant::now();
        let permit = self
            .catalogs
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(format!("the catalogs are closed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            // Held until the catalog is back in the pool, even when the
            // request is dropped while this runs.
            let _permit = permit;
            let mut catalog = state.take_catalog(arrived)?;
            let r = f(&mut catalog);
            state.give_back(catalog);
            r
        })
        .await
        .map_err(|e| ApiError::internal(format!("a request's task failed: {e}")))?
    }

    /// Begins the shutdown: imports under way are undone, uploads being
    /// received are rolled back.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
    }

    /// A catalog up to date with the files as they were when the request
    /// `arrived`.
    fn take_catalog(&self, arrived: Instant) -> Result<Catalog, ApiError> {
        let pooled = self.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some(mut c) = pooled else {
            // Opening refreshes.
            return Ok(Catalog::open(self.repo.clone(), &self.stopping)?);
        };
        let mut last = self.refreshed.lock().unwrap_or_else(PoisonError::into_inner);
        // A refresh that started after the request arrived, and has ended
        // (the lock is ours), saw every change made before it: the index
        // all catalogs share holds them.
        if last.is_none_or(|started| started < arrived) {
            let started = Instant::now();
            // Cheap when nothing changed: a stat of vm/ and of each VM folder.
            c.refresh()?;
            *last = Some(started);
        }
        Ok(c)
    }

    fn give_back(&self, catalog: Catalog) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(catalog);
        }
    }
}
