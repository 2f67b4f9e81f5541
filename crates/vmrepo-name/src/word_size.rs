use std::fmt;

use crate::{Field, NameError};

/// The instruction set's word size in bits: one of 8, 16, 32, 64, 128, 512.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WordSize(u16);

impl WordSize {
    /// The sizes the specification lists.
    pub const ALLOWED: [u16; 6] = [8, 16, 32, 64, 128, 512];

    /// # Errors
    /// A size not in [`WordSize::ALLOWED`].
    pub fn new(bits: u16) -> Result<WordSize, NameError> {
        if Self::ALLOWED.contains(&bits) {
            Ok(WordSize(bits))
        } else {
            Err(NameError::new(Field::WordSize, &bits.to_string(), "expected one of 8, 16, 32, 64, 128, 512"))
        }
    }

    /// Parses the field of a name (`64`; no sign, no leading zero).
    ///
    /// # Errors
    /// Anything but one of the allowed sizes written plainly.
    pub fn parse(s: &str) -> Result<WordSize, NameError> {
        let err = || NameError::new(Field::WordSize, s, "expected one of 8, 16, 32, 64, 128, 512");
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
            return Err(err());
        }
        let bits: u16 = s.parse().map_err(|_| err())?;
        WordSize::new(bits).map_err(|_| err())
    }

    /// The size in bits.
    pub fn bits(self) -> u16 {
        self.0
    }
}

impl fmt::Display for WordSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for WordSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_only() {
        for b in ["8", "16", "32", "64", "128", "512"] {
            assert_eq!(WordSize::parse(b).unwrap().to_string(), b);
        }
        for b in ["", "0", "064", "33", "256", "+64", "64 ", "99999999999"] {
            assert!(WordSize::parse(b).is_err(), "{b:?}");
        }
    }
}
