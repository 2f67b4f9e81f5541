//! The exports: every file of the published tree that is made from the
//! catalog rather than copied from the repository. Each export is a file of
//! its own here and renders its files in memory ([`OutFile`]); publish
//! writes them in the order that keeps readers consistent
//! (docs/distribution.md): every image first, then the files of stage
//! [`Stage::Signed`] (signatures before what they sign, in the order an
//! export lists them), then those of stage [`Stage::Index`], the entry
//! points that name the signed files.
//!
//! vmrepo's own `catalog.json` and its minisign signature are the first
//! export ([`catalog`]). Then simplestreams ([`simplestreams`]) and
//! virt-builder's index ([`virtbuilder`]), signed with the OpenPGP key
//! when there is one, the HEPiX image list, S/MIME-signed ([`hepix`]), and
//! the static page `index.html` ([`html`]).

pub mod catalog;
pub mod hepix;
pub mod html;
pub mod keys;
pub mod simplestreams;
pub mod virtbuilder;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use vmrepo_repo::Result;

use crate::schema::CatalogDoc;

/// When a file is renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Catalogs and their signatures: after every image is in place.
    Signed,
    /// Index files that point at the signed catalogs: last.
    Index,
}

/// One file an export writes.
#[derive(Clone, Debug)]
pub struct OutFile {
    /// Relative to DEST, `/`-separated, without `..`.
    pub path: String,
    pub bytes: Vec<u8>,
    pub stage: Stage,
}

/// The keys publish signs with. The minisign key is always there; the
/// others are optional and an export that needs one it lacks is skipped
/// with the reason in the report.
pub struct Signers {
    pub minisign_secret: minisign::SecretKey,
    pub minisign_public: minisign::PublicKey,
    /// The OpenPGP key (`--openpgp-key`) for the formats whose clients check
    /// OpenPGP signatures (simplestreams, virt-builder).
    pub openpgp: Option<crate::openpgp::OpenPgpSigner>,
    /// The X.509 certificate and key of the S/MIME signature (the HEPiX image list).
    pub smime: Option<crate::smime::SmimeSigner>,
}

impl Signers {
    /// The minisign key alone (vmrepo's own catalog, as `vmrepo serve` signs it).
    pub fn minisign(minisign_secret: minisign::SecretKey, minisign_public: minisign::PublicKey) -> Signers {
        Signers { minisign_secret, minisign_public, smime: None, openpgp: None }
    }
}

/// What every export reads.
pub struct Context<'a> {
    /// The catalog being published, every image already in place.
    pub doc: &'a CatalogDoc,
    /// `--base-url` then every `--mirror`, without trailing `/`; empty
    /// without `--base-url`.
    pub base_urls: &'a [String],
    pub generated: Timestamp,
    pub expires: Timestamp,
    /// The SHA-512 of every image, keyed by its SHA-256 (lower-case hex),
    /// for the formats that name an image by SHA-512.
    pub sha512: &'a BTreeMap<String, String>,
    pub signers: &'a Signers,
    /// Every file placed under `vm/` for this catalog (images, sidecars,
    /// Metalink files), relative to DEST: what a page may link to.
    pub files: &'a BTreeSet<String>,
}

/// An export that was not written, and why (no key for it, no base URL).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    pub export: &'static str,
    pub reason: String,
}

/// Whether an export that will be written names images by SHA-512 (then
/// publish fills [`Context::sha512`], computing what the repository's
/// `.vmrepo/sha512.json` does not hold yet: [`crate::digests`]).
pub fn wants_sha512(signers: &Signers) -> bool {
    // virt-builder's index (written with or without a key) names each image by it.
    let _ = signers;
    true
}

/// Every export's files, in the order they are to be renamed within their stage.
///
/// # Errors
/// An export that cannot be rendered (encoding, signing).
pub fn render_all(ctx: &Context<'_>, skipped: &mut Vec<Skipped>) -> Result<Vec<OutFile>> {
    // vmrepo's catalog and the page on a second thread, the others here: a
    // catalog of 20,000 images takes a few hundred milliseconds each way,
    // and a machine has two cores at least.
    let (own, others) = std::thread::scope(|s| {
        let own = s.spawn(|| -> Result<(Vec<OutFile>, Vec<OutFile>)> {
            Ok((catalog::render(ctx)?, html::render(ctx)?))
        });
        let others = (|| -> Result<Vec<OutFile>> {
            let mut files = simplestreams::render(ctx, skipped)?;
            files.extend(virtbuilder::render(ctx, skipped)?);
            files.extend(hepix::render(ctx, skipped)?);
            Ok(files)
        })();
        (own.join(), others)
    });
    let (catalog, page) = own.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    // The same order as rendered one after the other: the catalog, the
    // other exports, the page.
    let mut files = catalog;
    files.extend(others?);
    files.extend(page);
    folders_left_out(ctx, &files, skipped);
    // Sorted by stage only: within a stage, each export's own order stands.
    files.sort_by_key(|f| f.stage);
    Ok(files)
}

/// The formats that name one file per image (simplestreams' items as
/// vmrepo writes them, virt-builder's `file=`, the HEPiX list's `hv:uri`)
/// leave image folders out: each written with folders to list says so.
fn folders_left_out(ctx: &Context<'_>, files: &[OutFile], skipped: &mut Vec<Skipped>) {
    if ctx.doc.folders.is_empty() {
        return;
    }
    let paths: Vec<&str> = ctx.doc.folders.iter().map(|f| f.path.as_str()).collect();
    let reason = format!(
        "image folders (several files) are not listed: the format names one file per image: {}",
        paths.join(", ")
    );
    for (export, file) in [
        ("simplestreams entries", simplestreams::INDEX),
        ("virt-builder index entries", virtbuilder::INDEX),
        ("hepix entries", hepix::FILE),
    ] {
        if files.iter().any(|f| f.path == file) {
            skipped.push(Skipped { export, reason: reason.clone() });
        }
    }
}
