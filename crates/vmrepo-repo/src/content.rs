//! What an image file really is, from the format layer: its format and
//! virtual size fill the record, and a name that disagrees with them is
//! refused (by `add`, unless forced) or reported (by `lint`).

use std::path::{Path, PathBuf};

use vmrepo_format::{Format, Info, OpenOptions};
use vmrepo_name::{Extension, ImageName, MaxSize};

use crate::description::{Facts, Storage};
use crate::error::{Error, ErrorKind, Result};

/// Extensions a raw image may take besides `.img` (the specification lets
/// `--ext` choose one).
const RAW_EXTENSIONS: [&str; 4] = ["img", "raw", "dsk", "bin"];

/// What the format layer says of an image.
#[derive(Clone, Debug)]
pub struct Content {
    /// The file that was opened (the descriptor of an image folder).
    pub entry: PathBuf,
    pub info: Info,
}

/// One way a name disagrees with the image's content.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Disagreement {
    /// Stable code: extension-mismatch, maxsize-mismatch, has-backing-file,
    /// has-parent, has-data-file, corrupt, unreadable.
    pub code: &'static str,
    pub message: String,
}

/// The file that stands for an image folder: its VMDK descriptor, or its only file.
///
/// # Errors
/// The folder cannot be listed, or holds several files none of which is a descriptor.
pub fn folder_entry(dir: &Path) -> Result<PathBuf> {
    let (parts, _) = crate::layout::folder_parts(dir)?;
    if let [(only, _)] = parts.as_slice() {
        return Ok(dir.join(only));
    }
    for (name, md) in &parts {
        if md.len() <= 64 * 1024 {
            let head = std::fs::read(dir.join(name)).unwrap_or_default();
            if String::from_utf8_lossy(&head).contains("# Disk DescriptorFile") {
                return Ok(dir.join(name));
            }
        }
    }
    Err(Error::new(
        ErrorKind::BadImage,
        format!("{} holds {} files and none is a VMDK descriptor", dir.display(), parts.len()),
    ))
}

/// Reads what an image file (or image folder) is. The files a folder's
/// descriptor names are opened, inside the folder only; a file's references
/// (a backing file) are not.
///
/// # Errors
/// The file is malformed or of a format vmrepo does not read
/// ([`ErrorKind::BadImage`]), or cannot be read.
pub fn read(path: &Path) -> Result<Content> {
    let is_dir = std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?.is_dir();
    let entry = if is_dir { folder_entry(path)? } else { path.to_path_buf() };
    let image = vmrepo_format::open(&entry, &OpenOptions { follow: is_dir, format: None })?;
    Ok(Content { entry, info: image.info })
}

impl Content {
    /// The extension a name of this content takes.
    pub fn extension(&self) -> &'static str {
        self.info.format.extension()
    }

    /// The facts the format layer gives for the description.
    pub fn facts(&self) -> Facts {
        Facts {
            format: Some(self.info.format.name().to_string()),
            subformat: self.info.subformat.clone(),
            virtual_size: Some(self.info.virtual_size),
            allocated: self.info.allocated_size,
            storage: Some(match self.info.storage {
                vmrepo_format::Storage::Fixed => Storage::Fixed,
                vmrepo_format::Storage::Dynamic => Storage::Dynamic,
            }),
            ..Facts::default()
        }
    }

    /// The maximum size a name should give this image: its virtual size.
    ///
    /// # Errors
    /// An empty disk, which no name can describe.
    pub fn max_size(&self) -> Result<MaxSize> {
        MaxSize::from_bytes(self.info.virtual_size).map_err(|e| {
            Error::new(ErrorKind::BadImage, format!("{}: {}", self.entry.display(), e.problem()))
        })
    }

    /// Where `name` (and the image's own references) disagree with the content.
    pub fn disagreements(&self, name: &ImageName) -> Vec<Disagreement> {
        let mut out = Vec::new();
        let mut say = |code, message: String| out.push(Disagreement { code, message });
        let fmt = self.info.format;
        if let Some(ext) = name.ext()
            && !ext_fits(fmt, ext)
        {
            say(
                "extension-mismatch",
                format!(
                    "the name ends in .{ext} but the file is {} (.{})",
                    describe(&self.info),
                    fmt.extension()
                ),
            );
        }
        let v = self.info.virtual_size;
        let max = name.max_size().bytes();
        // VHD sizes are rounded to a disk geometry: a hundredth is close enough.
        if v > max || v < max - max / 100 {
            say(
                "maxsize-mismatch",
                format!(
                    "the name says {} but the virtual size is {} ({v} bytes)",
                    name.max_size(),
                    crate::description::human_bytes(v)
                ),
            );
        }
        if let Some(b) = &self.info.backing_filename {
            say(
                "has-backing-file",
                format!("the image reads through the backing file {b:?}, which is not stored with it"),
            );
        }
        if let Some(d) = &self.info.data_file {
            say("has-data-file", format!("the image keeps its data in {d:?}, which is not stored with it"));
        }
        if self.info.parent.is_some() {
            say("has-parent", "a differencing image: its parent is not stored with it".into());
        }
        if self.info.corrupt {
            say("corrupt", "the image is marked corrupt".into());
        }
        out
    }
}

/// Whether a name with this extension may hold this format.
fn ext_fits(fmt: Format, ext: &Extension) -> bool {
    ext.as_str() == fmt.extension() || fmt == Format::Raw && RAW_EXTENSIONS.contains(&ext.as_str())
}

fn describe(info: &Info) -> String {
    match &info.subformat {
        Some(s) => format!("{} ({s})", info.format.name()),
        None => info.format.name().to_string(),
    }
}

/// The extension `--ext` may choose for this content, or why not.
///
/// # Errors
/// An extension of another format than the content's.
pub fn check_extension(content: &Content, ext: &Extension) -> Result<()> {
    let fmt = content.info.format;
    if ext_fits(fmt, ext) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::BadImage,
            format!(
                "--ext {ext}: the file is {} (.{}); pass --force to name it otherwise",
                describe(&content.info),
                fmt.extension()
            ),
        ))
    }
}
