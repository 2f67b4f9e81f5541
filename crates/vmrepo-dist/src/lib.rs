//! Distribution: what leaves the repository for sites that hold no vmrepo.
//!
//! This crate owns vmrepo's signed catalog: its schema ([`schema`], with the
//! serial that only grows), the minisign keys that sign it ([`key`]) and
//! publishing the selected images with the catalog into a folder that a
//! plain web server can serve, or into an S3 bucket ([`mod@publish`] through
//! [`store`] and [`s3`], writes in the order that keeps
//! readers consistent: docs/distribution.md), with a Metalink 4 file per
//! image for download clients such as aria2c ([`metalink`]). The other side is here too: the
//! keys a repository trusts ([`trust`]) and `pull` ([`mod@pull`], over the
//! sources in [`fetch`], each image's transfer in [`download`]), which fetches a catalog, proves it and imports its
//! images. Every file made from the catalog (vmrepo's own signed catalog and
//! the other clients' formats) is an export in [`export`], one file each;
//! [`digests`] keeps the SHA-512 some of them name images by, and
//! [`smime`] signs with an X.509 certificate (the HEPiX image list).
//! [`entries`] makes the catalog's entries from the records, for publish and
//! for `vmrepo serve --sign-key` ([`served`]).
//! [`openpgp`] the OpenPGP key and cleartext signatures that simplestreams
//! and virt-builder check.
//!
//! Errors are [`vmrepo_repo::Error`], so that the binary maps them to the
//! same exit codes as every other command.

pub mod digests;
pub mod download;
pub mod entries;
pub mod export;
pub mod fetch;
pub mod key;
pub mod ledger;
pub mod metalink;
pub mod mirror;
pub mod openpgp;
pub mod place;
pub mod publish;
pub mod pull;
pub mod rsasig;
pub mod s3;
pub mod schema;
pub mod served;
pub mod smime;
pub mod store;
pub mod trust;

pub use download::{NoPullProgress, PullProgress};
pub use key::{GeneratedKey, generate_key};
pub use publish::{PublishOptions, PublishReport, publish};
pub use pull::{PullOptions, PullReport, Select, pull};
pub use schema::{CatalogDoc, CatalogImage};
