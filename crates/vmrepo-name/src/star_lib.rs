use std::fmt;

use crate::{Field, NameError, check_safe};

/// A STAR library version: a release like `sl08e` (STAR writes `SL08e`; names
/// use lower case) or one of STAR's symbolic versions `pro`, `new`, `dev`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StarLib(String);

/// STAR's symbolic library names: the production, the next and the development version.
const SYMBOLIC: [&str; 3] = ["pro", "new", "dev"];

const EXPECTED: &str = "expected a STAR library like sl08e (sl, two digits, one letter) or pro, new, dev";

impl StarLib {
    /// Parses the field of a name: lower case only.
    ///
    /// # Errors
    /// Anything not of the form `slNNx`, or `SL08e` written in STAR's own case.
    pub fn parse(s: &str) -> Result<StarLib, NameError> {
        check_safe(Field::Lib, s)?;
        if SYMBOLIC.contains(&s) || is_release(s) {
            return Ok(StarLib(s.to_string()));
        }
        let lower = s.to_ascii_lowercase();
        if SYMBOLIC.contains(&lower.as_str()) || is_release(&lower) {
            return Err(NameError::new(Field::Lib, s, format!("names use lower case: {lower}")));
        }
        Err(NameError::new(Field::Lib, s, EXPECTED))
    }

    /// Parses what a person typed, in any case (`SL08e`, `PRO`).
    ///
    /// # Errors
    /// As [`StarLib::parse`], without the case rule.
    pub fn from_user(s: &str) -> Result<StarLib, NameError> {
        check_safe(Field::Lib, s)?;
        StarLib::parse(&s.to_ascii_lowercase()).map_err(|_| NameError::new(Field::Lib, s, EXPECTED))
    }

    /// The version as names write it (`sl08e`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version as STAR writes it (`SL08e`; symbolic names unchanged).
    pub fn star_spelling(&self) -> String {
        match self.0.strip_prefix("sl") {
            Some(rest) => format!("SL{rest}"),
            None => self.0.clone(),
        }
    }

    /// Whether this is `pro`, `new` or `dev` rather than a release.
    pub fn is_symbolic(&self) -> bool {
        SYMBOLIC.contains(&self.0.as_str())
    }
}

fn is_release(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b.starts_with(b"sl")
        && b[2].is_ascii_digit()
        && b[3].is_ascii_digit()
        && b[4].is_ascii_lowercase()
}

impl fmt::Display for StarLib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for StarLib {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_symbols() {
        for t in ["sl08e", "sl05a", "sl10k", "pro", "new", "dev"] {
            assert_eq!(StarLib::parse(t).unwrap().as_str(), t);
        }
        assert_eq!(StarLib::parse("sl08e").unwrap().star_spelling(), "SL08e");
        assert!(StarLib::parse("SL08e").unwrap_err().problem().contains("sl08e"));
        assert_eq!(StarLib::from_user("SL08e").unwrap().as_str(), "sl08e");
        for t in ["sl8e", "sl08", "sl08ee", "sl0xe", "prod", "", "sl08E"] {
            assert!(StarLib::parse(t).is_err(), "{t:?}");
        }
    }
}
