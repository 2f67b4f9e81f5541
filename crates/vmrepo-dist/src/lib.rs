//! Distribution: what leaves the repository for sites that hold no vmrepo.
//!
//! This crate owns vmrepo's signed catalog: its schema ([`schema`], with the
//! serial that only grows), the minisign keys that sign it ([`key`]) and
//! publishing the selected images with the catalog into a folder that a
//! plain web server can serve ([`mod@publish`], writes in the order that keeps
//! readers consistent: docs/distribution.md). The other exports (simplestreams,
//! virt-builder, HEPiX), the S3 store and the `pull` client are to come, each
//! in a file of its own.
//!
//! Errors are [`vmrepo_repo::Error`], so that the binary maps them to the
//! same exit codes as every other command.

pub mod key;
pub mod place;
pub mod publish;
pub mod schema;

pub use key::{GeneratedKey, generate_key};
pub use publish::{PublishOptions, PublishReport, publish};
pub use schema::{CatalogDoc, CatalogImage};
