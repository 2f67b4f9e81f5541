use std::fmt;

use crate::{Field, NameError, check_safe};

/// The size to which an image may grow, as a name writes it: `500MB`, `8GB`,
/// `1.5TB`. Units are binary, as qemu-img counts them: 1GB is 2^30 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaxSize {
    text: String,
    bytes: u64,
}

/// Units in the spelling names use, with their size in bytes.
const UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("KB", 1 << 10),
    ("MB", 1 << 20),
    ("GB", 1 << 30),
    ("TB", 1 << 40),
    ("PB", 1 << 50),
    ("EB", 1 << 60),
];

/// At most this many digits after the decimal point (`1.125TB`).
const MAX_FRACTION_DIGITS: usize = 3;
/// At most this many digits before it.
const MAX_INTEGER_DIGITS: usize = 19;
/// The largest size any format can describe and SQLite can store as an integer.
pub const MAX_BYTES: u64 = i64::MAX as u64;

const EXPECTED: &str =
    "expected a number and a unit like 500MB, 8GB or 1.5TB (binary units: B, KB, MB, GB, TB, PB, EB)";

impl MaxSize {
    /// Parses the field of a name: a number without leading zeros, at most
    /// three decimals without trailing zeros, and an upper-case unit.
    ///
    /// # Errors
    /// A malformed number, an unknown unit or one in another spelling
    /// (`8G`, `8gb`, `8GiB`), a size of zero, a fraction of a byte, or a size
    /// past [`MAX_SIZE_BYTES`](crate::MAX_SIZE_BYTES).
    pub fn parse(s: &str) -> Result<MaxSize, NameError> {
        check_safe(Field::MaxSize, s)?;
        let (number, unit) = split_unit(s);
        let Some(&(_, unit_bytes)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(match canonical_unit(unit) {
                Some(u) => {
                    NameError::new(Field::MaxSize, s, format!("names write the unit {u:?}: {number}{u}"))
                }
                None => NameError::new(Field::MaxSize, s, EXPECTED),
            });
        };
        let (int, frac) = match number.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (number, None),
        };
        let plain_digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !plain_digits(int) || frac.is_some_and(|f| !plain_digits(f)) {
            return Err(NameError::new(Field::MaxSize, s, EXPECTED));
        }
        if int.len() > MAX_INTEGER_DIGITS || frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
            return Err(NameError::new(Field::MaxSize, s, "too many digits"));
        }
        if int.len() > 1 && int.starts_with('0') || int == "0" && frac.is_none() {
            return Err(NameError::new(
                Field::MaxSize,
                s,
                "a size is written without leading zeros and is not zero",
            ));
        }
        if int == "0" {
            return Err(NameError::new(
                Field::MaxSize,
                s,
                "write a size under one unit with the next smaller unit (512MB, not 0.5GB)",
            ));
        }
        if frac.is_some_and(|f| f.ends_with('0')) {
            return Err(NameError::new(Field::MaxSize, s, "a fraction is written without trailing zeros"));
        }
        if unit_bytes == 1 && frac.is_some() {
            return Err(NameError::new(Field::MaxSize, s, "not a whole number of bytes"));
        }
        let bytes = to_bytes(int, frac.unwrap_or(""), unit_bytes)
            .map_err(|why| NameError::new(Field::MaxSize, s, why))?;
        Ok(MaxSize { text: s.to_string(), bytes })
    }

    /// Parses what a person typed: `8G`, `8g`, `8GiB`, `8GB`, `1.50TB`, or a
    /// plain number of bytes, turned into the spelling names use.
    ///
    /// # Errors
    /// As [`MaxSize::parse`] once the spelling is normalised.
    pub fn from_user(s: &str) -> Result<MaxSize, NameError> {
        check_safe(Field::MaxSize, s)?;
        let (number, unit) = split_unit(s);
        if unit.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
            let bytes: u64 = number.parse().map_err(|_| NameError::new(Field::MaxSize, s, "too large"))?;
            return MaxSize::from_bytes(bytes)
                .map_err(|e| NameError::new(Field::MaxSize, s, e.problem().to_string()));
        }
        let unit = canonical_unit(unit).ok_or_else(|| NameError::new(Field::MaxSize, s, EXPECTED))?;
        let number = match number.split_once('.') {
            Some((i, f)) => {
                let f = f.trim_end_matches('0');
                let i = i.trim_start_matches('0');
                let i = if i.is_empty() { "0" } else { i };
                if f.is_empty() { i.to_string() } else { format!("{i}.{f}") }
            }
            None => {
                let i = number.trim_start_matches('0');
                if i.is_empty() { "0".to_string() } else { i.to_string() }
            }
        };
        MaxSize::parse(&format!("{number}{unit}"))
            .map_err(|e| NameError::new(Field::MaxSize, s, e.problem().to_string()))
    }

    /// The shortest exact spelling of a byte count, in the largest unit that
    /// keeps at most three decimals: 8589934592 is `8GB`, 1.5 TiB is `1.5TB`.
    ///
    /// # Errors
    /// Zero, or more than [`MAX_SIZE_BYTES`](crate::MAX_SIZE_BYTES).
    pub fn from_bytes(bytes: u64) -> Result<MaxSize, NameError> {
        if bytes == 0 || bytes > MAX_BYTES {
            return Err(NameError::new(Field::MaxSize, &bytes.to_string(), "must be between 1 byte and 8EB"));
        }
        for &(unit, size) in UNITS.iter().rev() {
            if bytes < size {
                continue;
            }
            let int = bytes / size;
            let rem = bytes % size;
            // rem * 1000 fits: rem < 2^60 would overflow, so divide the unit instead.
            let thousandths_exact = (u128::from(rem) * 1000) % u128::from(size) == 0;
            if rem == 0 {
                return MaxSize::parse(&format!("{int}{unit}"));
            }
            if thousandths_exact {
                let frac = (u128::from(rem) * 1000) / u128::from(size);
                let frac = format!("{frac:03}");
                return MaxSize::parse(&format!("{int}.{}{unit}", frac.trim_end_matches('0')));
            }
        }
        MaxSize::parse(&format!("{bytes}B"))
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The text as the name writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn split_unit(s: &str) -> (&str, &str) {
    let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    s.split_at(at)
}

/// The names' spelling of a unit written some other common way (`g`, `GiB`, `Gb`).
fn canonical_unit(unit: &str) -> Option<&'static str> {
    let u = unit.to_ascii_uppercase();
    let u = u.strip_suffix("IB").map(|p| format!("{p}B")).unwrap_or(u);
    let u = if u.len() == 1 && u != "B" { format!("{u}B") } else { u };
    UNITS.iter().map(|(name, _)| *name).find(|name| *name == u)
}

fn to_bytes(int: &str, frac: &str, unit: u64) -> Result<u64, &'static str> {
    const TOO_LARGE: &str = "larger than any disk image can be (8EB)";
    let int: u128 = int.parse().map_err(|_| "malformed number")?;
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| "malformed number")? };
    let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| "too many digits")?);
    let numerator = int
        .checked_mul(scale)
        .and_then(|n| n.checked_add(frac_value))
        .and_then(|n| n.checked_mul(u128::from(unit)))
        .ok_or(TOO_LARGE)?;
    if numerator % scale != 0 {
        return Err("not a whole number of bytes");
    }
    let bytes = numerator / scale;
    if bytes > u128::from(MAX_BYTES) {
        return Err(TOO_LARGE);
    }
    u64::try_from(bytes).map_err(|_| TOO_LARGE)
}

impl fmt::Display for MaxSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for MaxSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_as_qemu_img_counts() {
        assert_eq!(MaxSize::parse("500MB").unwrap().bytes(), 500 << 20);
        assert_eq!(MaxSize::parse("2GB").unwrap().bytes(), 2 << 30);
        assert_eq!(MaxSize::parse("8GB").unwrap().bytes(), 8 << 30);
        assert_eq!(MaxSize::parse("1.5TB").unwrap().bytes(), 3 << 39);
        assert_eq!(MaxSize::parse("1.125TB").unwrap().bytes(), 9 << 37);
        assert_eq!(MaxSize::parse("512B").unwrap().bytes(), 512);
    }

    #[test]
    fn strict_in_names() {
        for bad in [
            "8G",
            "8gb",
            "8GiB",
            "08GB",
            "1.50TB",
            "0GB",
            "0.5GB",
            "1.3KB",
            "GB",
            "8",
            "8.GB",
            ".5GB",
            "-8GB",
            "8EB",
            "1.1B",
            "12345678901234567890123GB",
            "99999999999999999999EB",
        ] {
            assert!(MaxSize::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(MaxSize::parse("8gb").unwrap_err().problem().contains("8GB"));
    }

    #[test]
    fn lenient_from_people() {
        assert_eq!(MaxSize::from_user("8G").unwrap().as_str(), "8GB");
        assert_eq!(MaxSize::from_user("8GiB").unwrap().as_str(), "8GB");
        assert_eq!(MaxSize::from_user("1.50t").unwrap().as_str(), "1.5TB");
        assert_eq!(MaxSize::from_user("8589934592").unwrap().as_str(), "8GB");
        assert_eq!(MaxSize::from_user("1536M").unwrap().as_str(), "1536MB");
        assert!(MaxSize::from_user("0").is_err());
        assert!(MaxSize::from_user("eight").is_err());
    }

    #[test]
    fn from_bytes_shortest_exact() {
        assert_eq!(MaxSize::from_bytes(8 << 30).unwrap().as_str(), "8GB");
        assert_eq!(MaxSize::from_bytes(3 << 39).unwrap().as_str(), "1.5TB");
        assert_eq!(MaxSize::from_bytes(1536 << 20).unwrap().as_str(), "1.5GB");
        assert_eq!(MaxSize::from_bytes(1000).unwrap().as_str(), "1000B");
        assert_eq!(MaxSize::from_bytes(MAX_BYTES).unwrap().bytes(), MAX_BYTES);
        assert!(MaxSize::from_bytes(0).is_err());
        for b in [1u64, 512, 1 << 20, 10 << 30, (1 << 40) + (1 << 30), 123_456_789 << 9] {
            let m = MaxSize::from_bytes(b).unwrap();
            assert_eq!(m.bytes(), b, "{m}");
            assert_eq!(MaxSize::parse(m.as_str()).unwrap(), m);
        }
    }
}
