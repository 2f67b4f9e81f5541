//! Many files hashed at once: [`Hasher`], the engine of `verify`.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use vmrepo_format::IoBuf;

use super::md5::Md5;
use super::sha256::{Sha256Lane, update_many};
use super::{Digests, Endpoint, Region, Walker, Want, ZEROS, check_unchanged, open_nofollow, read_exact_at};
use crate::error::{Error, ErrorKind, Result};

/// Files a [`Hasher`] thread hashes at once (see `hashing/sha256.rs`).
pub const LANES: usize = 4;
/// Bytes a [`Hasher`] thread reads at a time into each of its files'
/// buffers: all stay in the core's L2 cache between the read and the hash.
const LANE_CHUNK: usize = 128 << 10;

/// Hashes files for several threads at once: one thread per core, each
/// hashing up to [`LANES`] files at a time, their SHA-256 interleaved on its
/// core (see `hashing/sha256.rs`: 1.6 times as fast a core as one file at a time).
/// `verify` hands it every image file, from [`LANES`] times as many threads
/// as it has, so that each of its threads has files enough.
pub struct Hasher<'a> {
    requests: Mutex<Requests>,
    /// Where the hashing threads wait for requests.
    arrived: Condvar,
    progress: &'a (dyn Fn(u64) + Sync),
    cancel: &'a AtomicBool,
}

struct Requests {
    waiting: VecDeque<Request>,
    /// No more requests will come, or no thread is left to serve them.
    closed: bool,
    /// Hashing threads running.
    threads: usize,
    /// Hashing threads waiting with no file: a request is theirs first, so
    /// that files spread over the cores before they share one.
    idle: usize,
}

struct Request {
    path: PathBuf,
    want: Want,
    reply: mpsc::Sender<Result<Digests>>,
}

impl<'a> Hasher<'a> {
    /// Runs `f` with a hasher of `threads` threads; `progress` receives the
    /// bytes read of every file, `cancel` stops every file with
    /// [`ErrorKind::Interrupted`].
    pub fn scope<R>(
        threads: usize,
        progress: &'a (dyn Fn(u64) + Sync),
        cancel: &'a AtomicBool,
        f: impl FnOnce(&Hasher<'a>) -> R,
    ) -> R {
        let threads = threads.max(1);
        let hasher = Hasher {
            requests: Mutex::new(Requests { waiting: VecDeque::new(), closed: false, threads, idle: 0 }),
            arrived: Condvar::new(),
            progress,
            cancel,
        };
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| hasher.serve());
            }
            // Even if `f` panics, the threads must stop for the scope to end.
            let _close = Close(&hasher);
            f(&hasher)
        })
    }

    /// Hashes a file as [`super::hash_path`] does, on one of the hasher's threads.
    ///
    /// # Errors
    /// As [`super::hash_path`].
    pub fn hash_path(&self, path: &Path, want: Want) -> Result<Digests> {
        let (reply, answer) = mpsc::channel();
        {
            let mut r = self.lock();
            if r.closed {
                return Err(Error::new(ErrorKind::Io, "the hashing threads stopped"));
            }
            r.waiting.push_back(Request { path: path.to_path_buf(), want, reply });
        }
        self.arrived.notify_one();
        // A request dropped unanswered means its thread died.
        answer.recv().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "a hashing thread failed")))
    }

    fn lock(&self) -> MutexGuard<'_, Requests> {
        // Each change under the lock is one push, pop or flag: a panic elsewhere leaves it consistent.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next request; with `wait`, waits for one. `None` when there is
    /// none (or, with `wait`, when the hasher is closed); without `wait`,
    /// also when another thread has no file (the request is for it).
    fn take(&self, wait: bool) -> Option<Request> {
        let mut r = self.lock();
        if !wait && r.idle > 0 {
            return None;
        }
        loop {
            if let Some(req) = r.waiting.pop_front() {
                return Some(req);
            }
            if r.closed || !wait {
                return None;
            }
            r.idle += 1;
            r = self.arrived.wait(r).unwrap_or_else(PoisonError::into_inner);
            r.idle -= 1;
        }
    }

    /// A hashing thread: keeps up to [`LANES`] files going.
    fn serve(&self) {
        let _exit = Exit(self);
        let mut lanes: Vec<Lane> = Vec::with_capacity(LANES);
        let mut spare: Vec<IoBuf> = Vec::new();
        loop {
            while lanes.len() < LANES {
                let Some(req) = self.take(lanes.is_empty()) else { break };
                match Lane::open(req, spare.pop()) {
                    Ok(lane) => lanes.push(lane),
                    Err((req, e)) => {
                        let _ = req.reply.send(Err(e));
                    }
                }
            }
            if lanes.is_empty() {
                return;
            }
            let mut i = 0;
            while i < lanes.len() {
                match lanes[i].refill(self.cancel, self.progress) {
                    Ok(true) => i += 1,
                    done => spare.push(lanes.swap_remove(i).finish(done.map(|_| ()))),
                }
            }
            Lane::hash_lanes(&mut lanes);
        }
    }
}

/// Closes a [`Hasher`] when dropped: its threads finish what they hold and stop.
struct Close<'h, 'a>(&'h Hasher<'a>);

impl Drop for Close<'_, '_> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.arrived.notify_all();
    }
}

/// Counts a hashing thread out when dropped; the last one fails what waits.
struct Exit<'h, 'a>(&'h Hasher<'a>);

impl Drop for Exit<'_, '_> {
    fn drop(&mut self) {
        let mut r = self.0.lock();
        r.threads = r.threads.saturating_sub(1);
        if r.threads == 0 {
            // Only after a panic can requests be left: dropping them answers
            // each with an error.
            r.closed = true;
            r.waiting.clear();
        }
    }
}

/// One file being hashed by a [`Hasher`] thread.
struct Lane {
    request: Request,
    file: File,
    len: u64,
    walker: Walker,
    buf: IoBuf,
    /// What is read and not yet hashed.
    held: Held,
    md5: Option<Md5>,
    sha: Option<Sha256Lane>,
}

/// Bytes a [`Lane`] holds.
enum Held {
    /// `buf[from..to]`.
    Data { from: usize, to: usize },
    /// This many zeros of a hole.
    Zeros(u64),
}

impl Lane {
    /// Opens the request's file; gives the request back with the error.
    fn open(request: Request, buf: Option<IoBuf>) -> std::result::Result<Lane, (Request, Error)> {
        let opened = open_nofollow(&request.path).and_then(|file| {
            let md = file.metadata().map_err(|e| Error::io("read the size of", &request.path, e))?;
            Ok((file, md.len()))
        });
        let (file, len) = match opened {
            Ok(f) => f,
            Err(e) => return Err((request, e)),
        };
        let _ = rustix::fs::fadvise(file.as_fd(), 0, None, rustix::fs::Advice::Sequential);
        let want = request.want;
        Ok(Lane {
            request,
            file,
            len,
            walker: Walker::new(len, LANE_CHUNK),
            buf: buf.unwrap_or_else(|| IoBuf::zeroed(LANE_CHUNK)),
            held: Held::Zeros(0),
            md5: want.md5.then(Md5::new),
            sha: want.sha256.then(Sha256Lane::new),
        })
    }

    /// Reads the next region if nothing is held: `false` at the end.
    fn refill(&mut self, cancel: &AtomicBool, progress: &(dyn Fn(u64) + Sync)) -> Result<bool> {
        if !self.held_bytes().is_empty() {
            return Ok(true);
        }
        let Some(region) = self.walker.next(&self.file, cancel)? else { return Ok(false) };
        match region {
            Region::Hole(n) => {
                self.held = Held::Zeros(n);
                progress(n);
            }
            Region::Data(offset, n) => {
                let src = Endpoint { file: &self.file, path: &self.request.path };
                read_exact_at(src, &mut self.buf[..n], offset)?;
                self.held = Held::Data { from: 0, to: n };
                progress(n as u64);
            }
        }
        Ok(true)
    }

    /// What is held, at most [`ZEROS`] bytes of a hole at a time.
    fn held_bytes(&self) -> &[u8] {
        match self.held {
            Held::Data { from, to } => &self.buf[from..to],
            // The minimum is at most ZEROS.len(), a usize.
            Held::Zeros(n) => &ZEROS[..usize::try_from(n.min(ZEROS.len() as u64)).unwrap_or(0)],
        }
    }

    /// Marks `n` held bytes hashed, after feeding them to MD5 if wanted.
    fn consume(&mut self, n: usize) {
        if let Some(md5) = self.md5.as_mut() {
            let bytes = match self.held {
                Held::Data { from, .. } => &self.buf[from..from + n],
                Held::Zeros(_) => &ZEROS[..n],
            };
            md5.update(bytes);
        }
        match &mut self.held {
            Held::Data { from, .. } => *from += n,
            Held::Zeros(z) => *z -= n as u64,
        }
    }

    /// Hashes all that is held.
    fn hash_all(&mut self) {
        let n = self.held_bytes().len();
        if let Some(sha) = self.sha.as_mut() {
            let bytes = match self.held {
                Held::Data { from, to } => &self.buf[from..to],
                Held::Zeros(_) => &ZEROS[..n],
            };
            sha.update(bytes);
        }
        self.consume(n);
    }

    /// Hashes what the lanes hold: SHA-256 interleaved over the lanes that
    /// have whole blocks for it, as far as all of them have.
    fn hash_lanes(lanes: &mut [Lane]) {
        let ready = |l: &Lane| l.sha.as_ref().is_some_and(Sha256Lane::aligned) && l.held_bytes().len() >= 64;
        let together = lanes.iter().filter(|l| ready(l)).count();
        let n = lanes.iter().filter(|l| ready(l)).map(|l| l.held_bytes().len()).min().unwrap_or(0) / 64 * 64;
        if together < 2 {
            for lane in lanes.iter_mut() {
                lane.hash_all();
            }
            return;
        }
        let mut group: Vec<(&mut Sha256Lane, &[u8])> = Vec::with_capacity(LANES);
        for lane in lanes.iter_mut() {
            if !ready(lane) {
                continue;
            }
            let Lane { sha: Some(sha), held, buf, .. } = lane else { continue };
            let bytes = match *held {
                Held::Data { from, .. } => &buf[from..from + n],
                Held::Zeros(_) => &ZEROS[..n],
            };
            group.push((sha, bytes));
        }
        update_many(&mut group);
        for lane in lanes.iter_mut() {
            if ready(lane) {
                lane.consume(n);
            } else {
                // A tail shorter than a block, a partial block pending, or no SHA-256 wanted.
                lane.hash_all();
            }
        }
    }

    /// Answers the request: the digests, or the error that ended the file.
    /// Gives the buffer back for the next file.
    fn finish(self, ended: Result<()>) -> IoBuf {
        let src = Endpoint { file: &self.file, path: &self.request.path };
        let result = ended.and_then(|()| check_unchanged(src, self.len)).map(|()| Digests {
            md5: self.md5.map(Md5::finalize),
            sha256: self.sha.map(Sha256Lane::finalize),
            bytes: self.len,
        });
        // The asker may have gone (interrupted): nobody to tell.
        let _ = self.request.reply.send(result);
        self.buf
    }
}
