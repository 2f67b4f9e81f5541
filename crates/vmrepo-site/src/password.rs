//! The month's root password.
//!
//! The specification sets root's password at each boot from the month and a
//! secret seed, and lets the person who starts an image compute the same
//! password with
//!
//! ```text
//! date '+%y%m SEED=someLongString' | md5sum | base64 | sed 's|\(...........\).*|\1|'
//! ```
//!
//! that is: the line `YYMM SEED=<seed>\n` that `date` prints, its MD5 as
//! `md5sum` prints it (`<32 hex digits>  -\n`), that line in base64, and
//! the first 11 characters. (The specification's second form keeps the first
//! 11 hex digits before base64: the first 11 characters are the same.)
//! [`Scheme::Spec`] is that, byte for byte. It has about 33 bits (11 base64
//! characters of hex digits) and MD5: [`Scheme::Hmac`] is
//! HMAC-SHA-256(seed, `YYMM`), 20 characters from 62 (about 119 bits), for
//! new images.
//!
//! A seed is a secret: it is never printed, logged, nor put in an error.

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use vmrepo_repo::{Error, ErrorKind, Result};

/// The longest seed taken (the specification's is "someLongString").
pub const MAX_SEED: usize = 4096;
/// The characters of an [`Scheme::Hmac`] password.
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// The length of an [`Scheme::Hmac`] password: 20 × log2(62) ≈ 119 bits.
pub const HMAC_LEN: usize = 20;

/// How a month's password is made from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// The specification's pipeline: MD5, base64, 11 characters (~33 bits).
    Spec,
    /// HMAC-SHA-256 of the month under the seed, 20 characters of
    /// `[A-Za-z0-9]` (~119 bits).
    Hmac,
}

/// A month, as `date +%y%m` prints it: two digits of the year, two of the month.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Month {
    yy: u8,
    mm: u8,
}

impl Month {
    /// `YYMM` (`2612`: December 2026).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for anything but four digits with a month 01 to 12.
    pub fn parse(s: &str) -> Result<Month> {
        let bad = || Error::new(ErrorKind::InvalidInput, format!("{s:?}: a month is YYMM, such as 2612"));
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let yy: u8 = s[..2].parse().map_err(|_| bad())?;
        let mm: u8 = s[2..].parse().map_err(|_| bad())?;
        if !(1..=12).contains(&mm) {
            return Err(bad());
        }
        Ok(Month { yy, mm })
    }

    /// The month of a time in seconds since 1970 (UTC, as `date -u`).
    #[must_use]
    pub fn of_unix(secs: i64) -> Month {
        // Days to civil date (Howard Hinnant's algorithm).
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        Month { yy: u8::try_from(y.rem_euclid(100)).unwrap_or(0), mm: u8::try_from(m).unwrap_or(1) }
    }

    /// `YYMM`.
    #[must_use]
    pub fn yymm(self) -> String {
        format!("{:02}{:02}", self.yy, self.mm)
    }
}

/// Refuses a seed the pipeline cannot carry as given: empty, too long, with
/// a line break or NUL (`date` would print a second line, the shell cannot
/// pass a NUL), or with `%` (`date` would read it as a conversion and the
/// password would be another's). The message never contains the seed.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] saying what is wrong.
pub fn check_seed(seed: &[u8]) -> Result<()> {
    let why = if seed.is_empty() {
        "it is empty"
    } else if seed.len() > MAX_SEED {
        "it is longer than 4096 bytes"
    } else if seed.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0) {
        "it holds a line break or a NUL"
    } else if seed.contains(&b'%') {
        "it holds '%', which date(1) would read as a conversion in the specification's command"
    } else {
        return Ok(());
    };
    Err(Error::new(ErrorKind::InvalidInput, format!("the password seed cannot be used: {why}")))
}

/// The month's password under `scheme`.
///
/// # Errors
/// A seed [`check_seed`] refuses.
pub fn password(scheme: Scheme, seed: &[u8], month: Month) -> Result<String> {
    check_seed(seed)?;
    Ok(match scheme {
        Scheme::Spec => spec(seed, month),
        Scheme::Hmac => hmac(seed, month),
    })
}

fn spec(seed: &[u8], month: Month) -> String {
    // What date prints: "YYMM SEED=<seed>\n".
    let mut line = format!("{} SEED=", month.yymm()).into_bytes();
    line.extend_from_slice(seed);
    line.push(b'\n');
    // What md5sum prints for standard input: "<hex>  -\n".
    let out = format!("{}  -\n", vmrepo_repo::checksum::hex(&Md5::digest(&line)));
    let encoded = base64::engine::general_purpose::STANDARD.encode(out.as_bytes());
    encoded[..11].to_string()
}

fn hmac(seed: &[u8], month: Month) -> String {
    // Characters drawn without bias: a byte is kept only below 248 (4 × 62),
    // then taken modulo 62; blocks HMAC(seed, "YYMM" || counter) until 20 are kept.
    let mut out = String::with_capacity(HMAC_LEN);
    let mut counter: u8 = 0;
    while out.len() < HMAC_LEN {
        let mut mac = Hmac::<Sha256>::new_from_slice(seed).expect("HMAC takes a key of any length");
        mac.update(month.yymm().as_bytes());
        mac.update(&[counter]);
        for b in mac.finalize().into_bytes() {
            if b < 248 && out.len() < HMAC_LEN {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        counter = counter.wrapping_add(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_parsed_and_computed() {
        assert_eq!(Month::parse("2612").unwrap().yymm(), "2612");
        for bad in ["261", "2613", "2600", "26a2", "+612", "２６１２"] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
        // 2026-12-02T00:00:00Z, 2000-02-29, 1999-12-31T23:59:59Z.
        assert_eq!(Month::of_unix(1_796_169_600).yymm(), "2612");
        assert_eq!(Month::of_unix(951_782_400).yymm(), "0002");
        assert_eq!(Month::of_unix(946_684_799).yymm(), "9912");
    }

    #[test]
    fn seeds_that_the_pipeline_cannot_carry_are_refused_without_being_named() {
        for bad in [&b""[..], b"a\nb", b"a\0b", b"50%off"] {
            let e = password(Scheme::Spec, bad, Month::parse("2612").unwrap()).unwrap_err();
            assert!(!e.to_string().contains("off"), "{e}");
        }
    }

    #[test]
    fn the_hmac_scheme_has_twenty_characters_of_the_alphabet() {
        let p = password(Scheme::Hmac, b"seed", Month::parse("2612").unwrap()).unwrap();
        assert_eq!(p.len(), HMAC_LEN);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(p, password(Scheme::Hmac, b"seed", Month::parse("2701").unwrap()).unwrap());
    }
}
