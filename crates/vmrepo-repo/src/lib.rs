//! The vmrepo image repository.
//!
//! A repository is a folder holding `vm/<VM>/` folders of images laid out as
//! the STAR specification says (see [`layout`]), each image beside its
//! `.checksum` (md5sum's output) and `.txt` (its description). This crate
//! imports images crash-safely ([`add()`]), keeps an SQLite catalog derived from
//! the files ([`Catalog`]), verifies them ([`verify()`]), finds what breaks the
//! convention ([`lint()`]) and removes images ([`remove()`]).
//!
//! ```no_run
//! use vmrepo_repo::{Catalog, Query, Repository};
//!
//! let (repo, _) = Repository::init("/tmp/star-vm".as_ref())?;
//! let stop = std::sync::atomic::AtomicBool::new(false);
//! let catalog = Catalog::open(repo, &stop)?;
//! for image in catalog.find(&Query::parse(&["os=sl5.3"])?)? {
//!     println!("{} {}", image.path, image.size.unwrap_or(0));
//! }
//! # Ok::<(), vmrepo_repo::Error>(())
//! ```
//!
//! # Guarantees
//! * An import is invisible until the image and both sidecars are complete and
//!   fsynced; a crash at any point leaves the tree as it was or, once the
//!   publication had started, as it should be (see [`txn`]).
//! * Commands that change the tree take the repository lock only for their
//!   final renames; several imports run at once.
//! * The index is only a cache: every command notices changes made behind its
//!   back, and `reindex` rebuilds it.
//!
//! # Errors
//! Every fallible function returns an [`Error`] whose [`ErrorKind`] classifies
//! the failure and whose message names the file and the problem.

pub mod add;
pub mod catalog;
pub mod checksum;
pub mod content;
pub mod convert;
pub mod description;
pub mod error;
pub mod fsutil;
pub mod hashing;
pub mod index;
pub mod layout;
pub mod lint;
pub mod lock;
pub mod naming;
pub mod progress;
pub mod query;
pub mod remove;
pub mod rename;
pub mod show;
pub mod txn;
pub mod verify;

pub use add::{AddOutcome, AddRequest, Prehashed, add};
pub use catalog::{Catalog, Identity, ImageRecord, Inventory, ScanStats, Totals};
pub use description::{Description, Facts, Storage};
pub use error::{Error, ErrorKind, Result};
pub use layout::{ImageKind, InitOutcome, Repository};
pub use lint::{Finding, Severity, lint};
pub use progress::{NoProgress, Progress};
pub use query::Query;
pub use remove::{RemoveOutcome, remove};
pub use rename::{RenameOutcome, RenameRequest, rename};
pub use verify::{VerifyOptions, VerifyReport, VerifyResult, verify};
