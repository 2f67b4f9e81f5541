//! vmrepo's own catalog: `catalog.json` and `catalog.json.minisig`, the
//! signature listed first so that whoever sees the new catalog finds its
//! signature already there.

use vmrepo_repo::{Error, ErrorKind, Result};

use super::{Context, OutFile, Stage};
use crate::key;
use crate::schema::{CATALOG_FILE, SIGNATURE_FILE};

/// The catalog and its signature.
///
/// # Errors
/// The catalog cannot be encoded or signed.
pub fn render(ctx: &Context<'_>) -> Result<Vec<OutFile>> {
    let doc = ctx.doc;
    let mut json = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the catalog: {e}")))?;
    json.push(b'\n');
    let comment = format!(
        "vmrepo-catalog serial:{} generated:{} expires:{} file:{CATALOG_FILE}",
        doc.serial, doc.generated, doc.expires
    );
    let sig = key::sign(&ctx.signers.minisign_secret, &ctx.signers.minisign_public, &json, &comment)?;
    Ok(vec![
        OutFile { path: SIGNATURE_FILE.into(), bytes: sig.into_bytes(), stage: Stage::Signed },
        OutFile { path: CATALOG_FILE.into(), bytes: json, stage: Stage::Signed },
    ])
}
