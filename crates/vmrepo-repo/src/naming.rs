//! Naming an image from what a person says of it and what its content shows.
//!
//! The CLI's `add` and `name format`, the server's upload and `pull` all call
//! [`build_name`]: a field given is taken (and checked against the content
//! where the content can say), a field not given is read from the guest
//! (OS, instruction set, word size, STAR library) or the container (maximum
//! size, extension), and a field neither gives is an error naming the flag.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vmrepo_name::{Detail, Extension, ImageName, Isa, MaxSize, NameParts, Os, StarLib, WordSize};

use crate::error::{Error, ErrorKind, Result};

/// Extensions taken over from the source file when none is given.
const KNOWN_EXTENSIONS: [&str; 8] = ["img", "raw", "iso", "qcow2", "vmdk", "vdi", "vhd", "vhdx"];

/// The fields of a name as a person gives them (flags, form fields, query
/// parameters); each may be left out for the content to fill in.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NameFields {
    pub os: Option<String>,
    pub arch: Option<String>,
    pub bits: Option<u16>,
    pub lib: Option<String>,
    #[serde(alias = "max-size", alias = "maxsize")]
    pub max_size: Option<String>,
    pub detail: Option<String>,
    pub ext: Option<String>,
}

/// A name's fields as `--json` prints them (docs/json.md: `name check`'s `fields`).
pub fn name_json(n: &ImageName) -> serde_json::Value {
    serde_json::json!({
        "stem": n.stem(),
        "os": n.os().to_string(),
        "osinfo": n.os().osinfo_id(),
        "arch": n.isa().as_str(),
        "bits": n.word_size().bits(),
        "lib": n.lib().as_str(),
        "maxsize": n.max_size().as_str(),
        "maxsize_bytes": n.max_size().bytes(),
        "detail": n.detail().map(|d| d.as_str()),
        "ext": n.ext().map(|e| e.as_str()),
    })
}

/// What is known of the file being named.
pub struct SourceInfo<'a> {
    pub path: &'a Path,
    pub is_folder: bool,
    /// What the format layer found, if it could read the file.
    pub content: Option<&'a crate::content::Content>,
    pub force: bool,
}

/// The name of an image from the fields given and, where a source is
/// given, its content.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when a field is malformed, contradicts another
/// or the content, or is missing and the content does not say.
pub fn build_name(f: &NameFields, source: Option<&SourceInfo<'_>>) -> Result<ImageName> {
    let guest = source.and_then(|s| s.content).and_then(|c| c.guest.as_ref());
    let missing = |flag: &str, what: &str, why: &str| -> Error {
        let mut msg = format!("{flag} is required: {what}");
        if guest.is_some() {
            msg.push_str(&format!(" ({why})"));
        }
        Error::new(ErrorKind::InvalidInput, msg)
    };
    let os = match (&f.os, guest.and_then(|g| g.os.as_ref())) {
        (Some(o), _) => Os::from_user(o)?,
        (None, Some(info)) => match &info.token {
            Some(t) => {
                tracing::info!("--os {t}: from {}", info.source);
                Os::from_user(t)?
            }
            None => {
                return Err(missing(
                    "--os",
                    "the operating system, like sl5.3",
                    &format!("the guest is {}, which no name token stands for", info.product_name),
                ));
            }
        },
        (None, None) => {
            return Err(missing(
                "--os",
                "the operating system, like sl5.3",
                "the guest's release files do not say",
            ));
        }
    };
    let arch = guest.and_then(|g| g.arch.as_ref());
    let (isa, implied) = match (&f.arch, arch) {
        (Some(a), _) => Isa::from_user(a)?,
        (None, Some(a)) => {
            tracing::info!("--arch {} --bits {}: from {}", a.isa, a.bits, a.from);
            (Isa::parse(&a.isa)?, None)
        }
        (None, None) => {
            return Err(missing(
                "--arch",
                "the instruction set, like x86",
                "no ELF binary of the guest could be read",
            ));
        }
    };
    let word_size = match (f.bits, implied) {
        (Some(b), Some(i)) if b != i.bits() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "--bits {b} contradicts --arch {}, which is {}-bit",
                    f.arch.as_deref().unwrap_or(""),
                    i.bits()
                ),
            ));
        }
        (Some(b), _) => WordSize::new(b)?,
        (None, Some(i)) => i,
        (None, None) => match arch {
            Some(a) => WordSize::new(a.bits)?,
            None => {
                return Err(missing(
                    "--bits",
                    "the word size, 32 or 64",
                    "no ELF binary of the guest could be read",
                ));
            }
        },
    };
    let lib = match (&f.lib, guest) {
        (Some(l), _) => StarLib::from_user(l).map_err(|e| {
            // A link (pro, new, dev) in this guest: say which version it is.
            let target =
                guest.and_then(|g| g.star.symbolic.iter().find(|(link, _)| link.eq_ignore_ascii_case(l)));
            match target {
                Some((link, to)) => {
                    let version = to.trim_end_matches('/').rsplit('/').next().unwrap_or(to);
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("{e}; in this image {link} points to {version}: --lib {version}"),
                    )
                }
                None => Error::from(e),
            }
        })?,
        (None, Some(g)) => match g.star.libraries.as_slice() {
            [one] => {
                tracing::info!("--lib {}: from {}", one.name, one.path);
                StarLib::from_user(&one.name)?
            }
            [] => {
                return Err(missing(
                    "--lib",
                    "the STAR library, like sl08e",
                    "the guest holds no STAR library",
                ));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|l| l.name.as_str()).collect();
                return Err(missing(
                    "--lib",
                    "the STAR library, like sl08e",
                    &format!("the guest holds several: {}", names.join(", ")),
                ));
            }
        },
        (None, None) => return Err(missing("--lib", "the STAR library, like sl08e", "")),
    };
    let max_size = match (&f.max_size, source.and_then(|s| s.content)) {
        (Some(m), _) => MaxSize::from_user(m)?,
        // The virtual size is the size the image may grow to.
        (None, Some(c)) => c.max_size()?,
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "--max-size is required: the maximum size, like 8GB",
            ));
        }
    };
    let detail = f.detail.as_deref().map(Detail::parse).transpose()?;
    let ext = match (source, &f.ext) {
        (Some(s), _) if s.is_folder => None,
        (Some(s), Some(e)) => {
            let ext = Extension::from_user(e)?;
            if let (Some(c), false) = (s.content, s.force) {
                crate::content::check_extension(c, &ext)?;
            }
            Some(ext)
        }
        (None, Some(e)) => Some(Extension::from_user(e)?),
        (Some(s), None) => match s.content {
            // The format decides, whatever the file was called.
            Some(c) => Some(Extension::parse(c.extension())?),
            None => Some(
                s.path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .filter(|e| KNOWN_EXTENSIONS.contains(&e.as_str()))
                    .map(|e| Extension::parse(&e))
                    .transpose()?
                    .unwrap_or_else(Extension::raw),
            ),
        },
        (None, None) => Some(Extension::raw()),
    };
    Ok(ImageName::new(NameParts { os, isa, word_size, lib, max_size, detail, ext })?)
}
