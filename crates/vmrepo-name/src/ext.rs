use std::fmt;

use crate::{Field, NameError, check_safe};

/// A file extension (`qcow2`, `img`): lower-case letters and digits, starting
/// with a letter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extension(String);

/// The longest extension accepted.
pub const MAX_EXT_LEN: usize = 10;

/// Suffixes the sidecars use; an image cannot carry them.
const RESERVED: [&str; 2] = ["checksum", "txt"];

impl Extension {
    /// The extension a raw image takes, as in the specification's example
    /// `sl4_x86_32_sl08e_8GB_ec2.img`.
    pub fn raw() -> Extension {
        Extension("img".to_string())
    }

    /// # Errors
    /// Empty, too long, not lower-case alphanumeric, or a sidecar's suffix.
    pub fn parse(s: &str) -> Result<Extension, NameError> {
        check_safe(Field::Ext, s)?;
        if s.len() > MAX_EXT_LEN
            || !s.starts_with(|c: char| c.is_ascii_lowercase())
            || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NameError::new(
                Field::Ext,
                s,
                "expected lower-case letters and digits (qcow2, vmdk, vdi, vhd, vhdx, iso, img)",
            ));
        }
        if RESERVED.contains(&s) {
            return Err(NameError::new(Field::Ext, s, "is the suffix of a sidecar file (.checksum, .txt)"));
        }
        Ok(Extension(s.to_string()))
    }

    /// Parses what a person typed: any case, with or without the leading dot.
    ///
    /// # Errors
    /// As [`Extension::parse`].
    pub fn from_user(s: &str) -> Result<Extension, NameError> {
        // Errors name what the person typed, not what was made of it.
        check_safe(Field::Ext, s)?;
        Extension::parse(&s.strip_prefix('.').unwrap_or(s).to_ascii_lowercase())
            .map_err(|e| NameError::new(Field::Ext, s, e.problem().to_string()))
    }

    /// The extension without its dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Extension {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        for e in ["qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso", "img", "raw"] {
            assert_eq!(Extension::parse(e).unwrap().as_str(), e);
        }
        for e in ["", "QCOW2", "2img", "txt", "checksum", "a-b", "verylongextension"] {
            assert!(Extension::parse(e).is_err(), "{e:?}");
        }
        assert_eq!(Extension::from_user(".QCOW2").unwrap().as_str(), "qcow2");
    }
}
