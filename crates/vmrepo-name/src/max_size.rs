use std::fmt;

use crate::{Field, NameError, check_safe};

/// The size to which an image may grow, as a name writes it: a whole number
/// and a unit, `500MB`, `8GB`, `1536GB`.
///
/// A unit has two readings: binary, as qemu-img counts (1GB is 2^30 bytes),
/// and decimal, as disk makers and clouds count (1GB is 10^9 bytes). A name
/// [`matches`](MaxSize::matches) a disk of exactly either size, so that a
/// disk of 10 GiB and one of 10,000,000,000 bytes are both `10GB`. The
/// binary reading is the one [`bytes`](MaxSize::bytes) gives, that the
/// catalog stores and sorts by, and that `find maxsize>=10GB` compares.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaxSize {
    text: String,
    /// The binary reading.
    bytes: u64,
    /// The decimal reading (never more than the binary one).
    decimal: u64,
}

/// A unit as names spell it, with its binary and its decimal size in bytes.
struct Unit {
    name: &'static str,
    binary: u64,
    decimal: u64,
}

/// Units in the spelling names use, smallest first.
const UNITS: [Unit; 7] = [
    Unit { name: "B", binary: 1, decimal: 1 },
    Unit { name: "KB", binary: 1 << 10, decimal: 1_000 },
    Unit { name: "MB", binary: 1 << 20, decimal: 1_000_000 },
    Unit { name: "GB", binary: 1 << 30, decimal: 1_000_000_000 },
    Unit { name: "TB", binary: 1 << 40, decimal: 1_000_000_000_000 },
    Unit { name: "PB", binary: 1 << 50, decimal: 1_000_000_000_000_000 },
    Unit { name: "EB", binary: 1 << 60, decimal: 1_000_000_000_000_000_000 },
];

/// At most this many digits after the decimal point in what a person types
/// (`1.125T`); names take none.
const MAX_FRACTION_DIGITS: usize = 3;
/// At most this many digits in the number: [`MAX_BYTES`] has 19.
const MAX_INTEGER_DIGITS: usize = 19;
/// The largest size any format can describe and SQLite can store as an
/// integer: the binary reading of a name never exceeds it.
pub const MAX_BYTES: u64 = i64::MAX as u64;

const EXPECTED: &str =
    "expected a whole number and a unit like 500MB, 8GB or 1536GB (B, KB, MB, GB, TB, PB, EB)";
const TOO_LARGE: &str = "larger than any disk image can be (8EB)";

impl MaxSize {
    /// Parses the field of a name: a whole number without leading zeros and
    /// an upper-case unit.
    ///
    /// # Errors
    /// A malformed number, an unknown unit or one in another spelling
    /// (`8G`, `8gb`, `8GiB`), a fraction (`1.5TB`: the error names `1536GB`),
    /// a size of zero, or a binary reading past
    /// [`MAX_SIZE_BYTES`](crate::MAX_SIZE_BYTES).
    pub fn parse(s: &str) -> Result<MaxSize, NameError> {
        check_safe(Field::MaxSize, s)?;
        let (number, unit_text) = split_unit(s);
        let Some(unit) = UNITS.iter().find(|u| u.name == unit_text) else {
            return Err(match canonical_unit(unit_text) {
                Some(u) => NameError::new(
                    Field::MaxSize,
                    s,
                    format!("names write the unit {:?}: {number}{}", u.name, u.name),
                ),
                None => NameError::new(Field::MaxSize, s, EXPECTED),
            });
        };
        if let Some((int, frac)) = number.split_once('.') {
            let why = match fraction_bytes(int, frac, unit).and_then(|b| whole_name(b).ok()) {
                Some(m) => format!("a maximum size is a whole number of its unit: {m}"),
                None => "a maximum size is a whole number of its unit, and of bytes".to_string(),
            };
            return Err(NameError::new(Field::MaxSize, s, why));
        }
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NameError::new(Field::MaxSize, s, EXPECTED));
        }
        if number.len() > MAX_INTEGER_DIGITS {
            return Err(NameError::new(Field::MaxSize, s, "too many digits"));
        }
        if number.starts_with('0') {
            return Err(NameError::new(
                Field::MaxSize,
                s,
                "a size is written without leading zeros and is not zero",
            ));
        }
        let count: u64 = number.parse().map_err(|_| NameError::new(Field::MaxSize, s, TOO_LARGE))?;
        let bytes = count
            .checked_mul(unit.binary)
            .filter(|b| *b <= MAX_BYTES)
            .ok_or_else(|| NameError::new(Field::MaxSize, s, TOO_LARGE))?;
        // decimal <= binary for every unit, so this cannot overflow either.
        let decimal =
            count.checked_mul(unit.decimal).ok_or_else(|| NameError::new(Field::MaxSize, s, TOO_LARGE))?;
        Ok(MaxSize { text: s.to_string(), bytes, decimal })
    }

    /// Parses what a person typed: `8G`, `8g`, `8GiB`, `8GB`, a plain number
    /// of bytes (named as [`MaxSize::from_bytes`] names it), or a fraction of
    /// a unit, read in binary and named by the largest binary unit of which it
    /// is a whole number (`1.5T` is `1536GB`, `0.5G` is `512MB`).
    ///
    /// # Errors
    /// As [`MaxSize::parse`] once the spelling is normalised; a fraction of
    /// more than three digits or one that is not a whole number of bytes.
    pub fn from_user(s: &str) -> Result<MaxSize, NameError> {
        check_safe(Field::MaxSize, s)?;
        let (number, unit) = split_unit(s);
        if unit.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
            let bytes: u64 = number.parse().map_err(|_| NameError::new(Field::MaxSize, s, TOO_LARGE))?;
            return MaxSize::from_bytes(bytes)
                .map_err(|e| NameError::new(Field::MaxSize, s, e.problem().to_string()));
        }
        let unit = canonical_unit(unit).ok_or_else(|| NameError::new(Field::MaxSize, s, EXPECTED))?;
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let frac = frac.trim_end_matches('0');
        let int = int.trim_start_matches('0');
        if frac.is_empty() {
            let int = if int.is_empty() { "0" } else { int };
            return MaxSize::parse(&format!("{int}{}", unit.name))
                .map_err(|e| NameError::new(Field::MaxSize, s, e.problem().to_string()));
        }
        let plain_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if !plain_digits(int) || !plain_digits(frac) || int.len() > MAX_INTEGER_DIGITS {
            return Err(NameError::new(Field::MaxSize, s, EXPECTED));
        }
        if frac.len() > MAX_FRACTION_DIGITS {
            return Err(NameError::new(
                Field::MaxSize,
                s,
                format!("at most {MAX_FRACTION_DIGITS} digits after the decimal point"),
            ));
        }
        let bytes = fraction_bytes(int, frac, unit)
            .ok_or_else(|| NameError::new(Field::MaxSize, s, "not a whole number of bytes"))?;
        whole_name(bytes).map_err(|e| NameError::new(Field::MaxSize, s, e.problem().to_string()))
    }

    /// The name of a disk of exactly `bytes`: the largest unit of which it is
    /// a whole number in either reading, the binary one when both readings
    /// give one (it is then the smaller number). 8589934592 is `8GB` (binary), 10000000000 is `10GB`
    /// (decimal), 1.5 TiB is `1536GB`, 1000 is `1KB`, 1023 is `1023B`.
    ///
    /// # Errors
    /// Zero, or more than [`MAX_SIZE_BYTES`](crate::MAX_SIZE_BYTES).
    pub fn from_bytes(bytes: u64) -> Result<MaxSize, NameError> {
        MaxSize::from_rounded(bytes, |_| None)
    }

    /// The name of a disk of `bytes` made by a tool that rounds the size it
    /// is asked for (`qemu-img create -f vpc` rounds up to a disk geometry):
    /// `round(asked)` is the size the tool makes when asked for `asked`. The
    /// largest unit, in either reading, of which a whole number is `bytes`
    /// or is rounded to exactly `bytes`; as [`MaxSize::from_bytes`] when
    /// nothing is rounded to it.
    ///
    /// # Errors
    /// As [`MaxSize::from_bytes`].
    pub fn from_rounded(bytes: u64, round: impl Fn(u64) -> Option<u64>) -> Result<MaxSize, NameError> {
        if bytes == 0 {
            return Err(NameError::new(
                Field::MaxSize,
                "0",
                "a disk of 0 bytes is empty: nothing can name it",
            ));
        }
        if bytes > MAX_BYTES {
            return Err(NameError::new(Field::MaxSize, &bytes.to_string(), TOO_LARGE));
        }
        for unit in UNITS.iter().rev() {
            // The binary reading first: in the same unit it is the smaller number.
            // The largest whole number of the unit at or under the size: a
            // tool rounds up, and rounds a smaller size to a smaller one.
            let found = [unit.binary, unit.decimal]
                .into_iter()
                .map(|size| (bytes / size, bytes - bytes % size))
                .filter(|&(count, asked)| count > 0 && (asked == bytes || round(asked) == Some(bytes)))
                .find_map(|(count, _)| MaxSize::parse(&format!("{count}{}", unit.name)).ok());
            if let Some(m) = found {
                return Ok(m);
            }
        }
        MaxSize::parse(&format!("{bytes}B"))
    }

    /// The size in bytes in the binary reading (`10GB` is 10737418240): what
    /// the catalog stores, sorts and queries by.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The size in bytes in the decimal reading (`10GB` is 10000000000).
    pub fn decimal_bytes(&self) -> u64 {
        self.decimal
    }

    /// Whether a disk of exactly `bytes` has this maximum size, in either
    /// reading.
    pub fn matches(&self, bytes: u64) -> bool {
        bytes == self.bytes || bytes == self.decimal
    }

    /// The size in bytes in the reading a disk of `actual` bytes is in: the
    /// decimal one when `actual` is exactly it, else the binary one. What a
    /// description or a budget should say the maximum is.
    pub fn bytes_for(&self, actual: u64) -> u64 {
        if actual == self.decimal { self.decimal } else { self.bytes }
    }

    /// The text as the name writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The name of `bytes` in the largest binary unit of which it is a whole
/// number: what a fraction of a binary unit typed by a person becomes.
fn whole_name(bytes: u64) -> Result<MaxSize, NameError> {
    let unit = UNITS.iter().rev().find(|u| bytes.is_multiple_of(u.binary)).unwrap_or(&UNITS[0]);
    MaxSize::parse(&format!("{}{}", bytes / unit.binary, unit.name))
}

/// `int.frac` units in bytes, binary reading first, decimal if the binary is
/// not a whole number of bytes; `None` if neither is, or past [`MAX_BYTES`].
fn fraction_bytes(int: &str, frac: &str, unit: &Unit) -> Option<u64> {
    if frac.len() > MAX_FRACTION_DIGITS || int.len() > MAX_INTEGER_DIGITS {
        return None;
    }
    let digits = |d: &str| -> Option<u128> {
        if d.is_empty() {
            Some(0)
        } else if d.bytes().all(|b| b.is_ascii_digit()) {
            d.parse().ok()
        } else {
            None
        }
    };
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let scaled = digits(int)?.checked_mul(scale)?.checked_add(digits(frac)?)?;
    [unit.binary, unit.decimal].into_iter().find_map(|size| {
        let n = scaled.checked_mul(u128::from(size))?;
        (n % scale == 0)
            .then(|| n / scale)
            .and_then(|b| u64::try_from(b).ok())
            .filter(|b| (1..=MAX_BYTES).contains(b))
    })
}

fn split_unit(s: &str) -> (&str, &str) {
    let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    s.split_at(at)
}

/// The names' spelling of a unit written some other common way (`g`, `GiB`, `Gb`).
fn canonical_unit(unit: &str) -> Option<&'static Unit> {
    let u = unit.to_ascii_uppercase();
    let u = u.strip_suffix("IB").map(|p| format!("{p}B")).unwrap_or(u);
    let u = if u.len() == 1 && u != "B" { format!("{u}B") } else { u };
    UNITS.iter().find(|unit| unit.name == u)
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
        assert_eq!(MaxSize::parse("1536GB").unwrap().bytes(), 3 << 39);
        assert_eq!(MaxSize::parse("512B").unwrap().bytes(), 512);
        assert_eq!(MaxSize::parse("7EB").unwrap().bytes(), 7 << 60);
    }

    #[test]
    fn either_reading_matches_exactly() {
        let ten = MaxSize::parse("10GB").unwrap();
        assert_eq!(ten.decimal_bytes(), 10_000_000_000);
        assert!(ten.matches(10 << 30));
        assert!(ten.matches(10_000_000_000));
        for near in [(10 << 30) - 1, (10 << 30) + 1, 10_000_000_001, 9_999_999_999, 10 << 20] {
            assert!(!ten.matches(near), "{near}");
        }
        assert_eq!(ten.bytes_for(10_000_000_000), 10_000_000_000);
        assert_eq!(ten.bytes_for(10 << 30), 10 << 30);
        assert_eq!(ten.bytes_for(123), 10 << 30);
        let b = MaxSize::parse("512B").unwrap();
        assert!(b.matches(512) && b.decimal_bytes() == 512);
        // The decimal reading of a size whose binary reading is too large
        // for the catalog is not a name.
        assert!(MaxSize::parse("8EB").is_err());
        assert!(MaxSize::parse("9EB").is_err());
    }

    #[test]
    fn strict_in_names() {
        for bad in [
            "8G",
            "8gb",
            "8GiB",
            "08GB",
            "0GB",
            "0.5GB",
            "1.5TB",
            "1.3KB",
            "1.50TB",
            "GB",
            "8",
            "8.GB",
            ".5GB",
            "-8GB",
            "+8GB",
            "8EB",
            "1.1B",
            "8 GB",
            "12345678901234567890123GB",
            "99999999999999999999EB",
            "49999999999999.5KB",
        ] {
            assert!(MaxSize::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(MaxSize::parse("8gb").unwrap_err().problem().contains("8GB"));
    }

    #[test]
    fn a_fraction_in_a_name_names_the_whole_number() {
        let hint = |s: &str| MaxSize::parse(s).unwrap_err().problem().to_string();
        assert!(hint("1.5TB").ends_with(": 1536GB"), "{}", hint("1.5TB"));
        assert!(hint("0.5GB").ends_with(": 512MB"), "{}", hint("0.5GB"));
        assert!(hint("1.125TB").ends_with(": 1152GB"), "{}", hint("1.125TB"));
        // Not whole in binary, whole in decimal.
        assert!(hint("1.3KB").ends_with(": 1300B"), "{}", hint("1.3KB"));
        assert!(hint("1.1B").contains("whole number"), "{}", hint("1.1B"));
        assert!(hint("49999999999999.5KB").contains("whole number"), "{}", hint("49999999999999.5KB"));
    }

    #[test]
    fn lenient_from_people() {
        let user = |s: &str| MaxSize::from_user(s).unwrap().as_str().to_string();
        assert_eq!(user("8G"), "8GB");
        assert_eq!(user("8GiB"), "8GB");
        assert_eq!(user("8gb"), "8GB");
        assert_eq!(user("008GB"), "8GB");
        assert_eq!(user("1.5T"), "1536GB");
        assert_eq!(user("1.50t"), "1536GB");
        assert_eq!(user("1.5TiB"), "1536GB");
        assert_eq!(user("0.5G"), "512MB");
        assert_eq!(user("2.0G"), "2GB");
        assert_eq!(user("8589934592"), "8GB");
        assert_eq!(user("10000000000"), "10GB");
        assert_eq!(user("1536M"), "1536MB");
        assert_eq!(MaxSize::from_user("1.5T").unwrap().bytes(), 3 << 39);
        for bad in ["0", "0G", "eight", "1.0001G", "1.1B", "G", "1.5.5G", "9EB", "1e9"] {
            assert!(MaxSize::from_user(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn from_rounded_names_the_size_asked_for() {
        // A tool that rounds up to a whole number of 3-sector tracks.
        let tracks = |asked: u64| Some(asked.div_ceil(1536) * 1536);
        let made = tracks(10 << 30).unwrap();
        assert_ne!(made, 10 << 30);
        assert_eq!(MaxSize::from_rounded(made, tracks).unwrap().as_str(), "10GB");
        assert_eq!(MaxSize::from_bytes(made).unwrap().as_str(), "10737418752B");
        let made = tracks(10_000_000_000).unwrap();
        assert_eq!(MaxSize::from_rounded(made, tracks).unwrap().as_str(), "10GB");
        // A size the tool made exactly keeps its own name.
        assert_eq!(MaxSize::from_rounded(8 << 30, tracks).unwrap().as_str(), "8GB");
        // Nothing rounds to it: its own name.
        assert_eq!(MaxSize::from_rounded(1023, tracks).unwrap().as_str(), "1023B");
        assert!(MaxSize::from_rounded(0, tracks).is_err());
    }

    #[test]
    fn from_bytes_largest_unit_in_either_reading() {
        let name = |b: u64| MaxSize::from_bytes(b).unwrap().as_str().to_string();
        assert_eq!(name(8 << 30), "8GB");
        assert_eq!(name(10_000_000_000), "10GB");
        assert_eq!(name(3 << 39), "1536GB");
        assert_eq!(name(1536 << 20), "1536MB");
        assert_eq!(name(1000), "1KB");
        assert_eq!(name(1024), "1KB");
        assert_eq!(name(1023), "1023B");
        assert_eq!(name(500_000_000_000), "500GB");
        assert_eq!(name(1 << 40), "1TB");
        assert_eq!(name(1_000_000_000_000), "1TB");
        // Both readings give KB: the smaller number.
        assert_eq!(name(1_024_000), "1000KB");
        // 1000 GiB: GB in binary, only KB in decimal.
        assert_eq!(name(1000 << 30), "1000GB");
        // 9EB in decimal: its binary reading is past what the catalog
        // stores, so the next unit that divides, in binary.
        assert_eq!(name(9_000_000_000_000_000_000), "8789062500000000KB");
        assert_eq!(name(9_000_000_000_000_000_001), "9000000000000000001B");
        assert_eq!(MaxSize::from_bytes(MAX_BYTES).unwrap().bytes(), MAX_BYTES);
        assert!(MaxSize::from_bytes(0).unwrap_err().problem().contains("empty"));
        assert!(MaxSize::from_bytes(MAX_BYTES + 1).is_err());
        for b in [
            1u64,
            512,
            1 << 20,
            10 << 30,
            (1 << 40) + (1 << 30),
            123_456_789 << 9,
            10_000_000_000,
            99_999_999_999_999 * 512,
            MAX_BYTES,
        ] {
            let m = MaxSize::from_bytes(b).unwrap();
            assert!(m.matches(b), "{m} does not match {b}");
            assert!(!m.as_str().contains('.'), "{m}");
            assert_eq!(MaxSize::parse(m.as_str()).unwrap(), m);
        }
    }
}
