use std::fmt;

use crate::{Field, NameError, check_safe};

/// The optional additional detail of a name (`ec2`, `v2`, `xen-pv`):
/// letters, digits, `-` and `.`, not starting with `-` or `.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Detail(String);

/// The longest detail a name may carry.
pub const MAX_DETAIL_LEN: usize = 64;

impl Detail {
    /// # Errors
    /// Other characters (`_` separates fields), a leading `-` or `.`, a
    /// trailing `.`, or more than [`MAX_DETAIL_LEN`] characters.
    pub fn parse(s: &str) -> Result<Detail, NameError> {
        check_safe(Field::Detail, s)?;
        if s.len() > MAX_DETAIL_LEN {
            return Err(NameError::new(Field::Detail, s, format!("longer than {MAX_DETAIL_LEN} characters")));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.')) {
            let why = if c == '_' {
                "'_' separates the fields of a name; a detail uses letters, digits, '-' and '.'".to_string()
            } else {
                format!("contains {c:?}; a detail uses letters, digits, '-' and '.'")
            };
            return Err(NameError::new(Field::Detail, s, why));
        }
        if s.starts_with(['-', '.']) || s.ends_with('.') {
            return Err(NameError::new(Field::Detail, s, "may not start with '-' or '.' nor end with '.'"));
        }
        Ok(Detail(s.to_string()))
    }

    /// The detail as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_characters() {
        for d in ["ec2", "v2", "xen-pv", "r1.2", "A-b.3"] {
            assert_eq!(Detail::parse(d).unwrap().as_str(), d);
        }
        for d in ["", "a_b", "-x", ".x", "x.", "a b", "a/b", "a..b", "é", &"x".repeat(65)] {
            assert!(Detail::parse(d).is_err(), "{d:?}");
        }
    }
}
