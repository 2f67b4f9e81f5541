//! Everything known of one image: its catalog record and what its description
//! says. `vmrepo show --json` prints it and the server's `/api/v1/images/...`
//! answers it (docs/json.md, `show`).

use serde::Serialize;

use crate::catalog::{self, Catalog, ImageRecord};
use crate::description::{self, Description, Facts, FieldProblem};
use crate::error::Result;
use crate::layout::Sidecars;

/// One image, whole.
#[derive(Clone, Debug, Serialize)]
pub struct Shown {
    pub image: ImageRecord,
    /// The description's facts (empty when it cannot be read).
    pub description: Facts,
    pub description_problems: Vec<FieldProblem>,
    pub notes: Option<String>,
}

impl Shown {
    /// The image's file is gone and only its sidecars remain.
    pub fn missing(&self) -> bool {
        self.image.image_kind() == crate::layout::ImageKind::Missing
    }
}

/// The image `spec` names (`NAME`, `FILE`, `VM/NAME` or `vm/VM/FILE`), with its description.
///
/// # Errors
/// [`crate::ErrorKind::NotFound`] when no image answers to `spec`, or the
/// index failed. An unreadable description is not an error: its facts are
/// empty and the record's `description` state says why.
pub fn show(catalog: &Catalog, spec: &str) -> Result<Shown> {
    let rec = catalog.resolve(spec)?;
    Ok(of_record(catalog, rec))
}

/// [`show`] for a record already at hand.
pub fn of_record(catalog: &Catalog, rec: ImageRecord) -> Shown {
    let dir = catalog.repo().vm_root().join(&rec.folder);
    let sidecars = Sidecars::of(&dir, &rec.file, &rec.name, rec.image_kind());
    let bytes = catalog::read_capped(&sidecars.description, description::MAX_DESCRIPTION_FILE).ok();
    of_record_described(rec, bytes.as_deref())
}

/// [`of_record`] with the description's bytes already read (`None`: it
/// cannot be read), so that a caller that copies the file reads it once.
pub fn of_record_described(rec: ImageRecord, description: Option<&[u8]>) -> Shown {
    let parsed = description.and_then(|b| Description::parse(b).ok());
    let (facts, problems) = parsed.as_ref().map(Description::facts).unwrap_or_default();
    let notes = parsed.as_ref().and_then(Description::notes).map(str::to_string);
    Shown { image: rec, description: facts, description_problems: problems, notes }
}
