//! The `.checksum` sidecar: exactly what `md5sum FILE` prints, so that
//! `md5sum -c NAME.checksum` passes in the image's folder.
//!
//! One line per file: 32 lower-case hex digits, a space, a space (text mode)
//! or `*` (binary mode), the file name. md5sum prefixes a line with `\` when
//! the name holds a backslash or a newline and escapes them; image names never
//! do, but the reader accepts it.

use std::fmt::Write as _;

/// The largest `.checksum` read; an image of several files has one line per part.
pub const MAX_CHECKSUM_FILE: u64 = 256 * 1024;

/// One line of a `.checksum` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChecksumLine {
    /// The MD5 digest.
    pub md5: [u8; 16],
    /// The file name as written, relative to the sidecar's folder.
    pub path: String,
}

/// Why a `.checksum` is not in md5sum's format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ChecksumError {
    /// 1-based line number (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Formats the lines md5sum would print for these files, in this order.
pub fn format(lines: &[ChecksumLine]) -> String {
    let mut out = String::new();
    for l in lines {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}  {}", hex(&l.md5), l.path);
    }
    out
}

/// Parses a `.checksum` file.
///
/// # Errors
/// Empty content, a line that is not `<32 hex>  <name>`, or a name with a
/// path component that leaves the folder (`..`, an absolute path).
pub fn parse(text: &str) -> Result<Vec<ChecksumLine>, ChecksumError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let bad = |problem: &str| ChecksumError { line: n, problem: problem.to_string() };
        let (escaped, line) = match raw.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if line.is_empty() {
            return Err(bad("empty line"));
        }
        let Some(hex_part) = line.get(..32) else {
            return Err(bad("expected 32 hexadecimal digits, two spaces and a file name, as md5sum prints"));
        };
        let md5 = parse_hex::<16>(hex_part).ok_or_else(|| bad("the digest is not 32 hexadecimal digits"))?;
        let rest = &line[32..];
        let name = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *")).ok_or_else(|| {
            bad("expected two spaces (or a space and '*') after the digest, as md5sum prints")
        })?;
        if name.is_empty() {
            return Err(bad("no file name after the digest"));
        }
        let name = if escaped {
            unescape(name).ok_or_else(|| bad("bad escape in the file name"))?
        } else {
            name.to_string()
        };
        if name.starts_with('/') || name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(bad("the file name leaves the sidecar's folder"));
        }
        lines.push(ChecksumLine { md5, path: name });
    }
    if lines.is_empty() {
        return Err(ChecksumError { line: 0, problem: "empty: no checksum line".into() });
    }
    Ok(lines)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Lower-case hexadecimal of a digest.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses exactly `2*N` hexadecimal digits (either case).
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N.checked_mul(2)? {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sum_output_round_trip() {
        let text = "d41d8cd98f00b204e9800998ecf8427e  sl4_x86_32_sl08e_8GB_ec2.img\n";
        let lines = parse(text).unwrap();
        assert_eq!(lines[0].path, "sl4_x86_32_sl08e_8GB_ec2.img");
        assert_eq!(format(&lines), text);
    }

    #[test]
    fn binary_mode_and_escapes() {
        let l = parse("D41D8CD98F00B204E9800998ECF8427E *a.img\n").unwrap();
        assert_eq!(l[0].path, "a.img");
        let l = parse("\\d41d8cd98f00b204e9800998ecf8427e  a\\nb\n").unwrap();
        assert_eq!(l[0].path, "a\nb");
    }

    #[test]
    fn not_md5sum_format() {
        for bad in [
            "",
            "d41d8cd98f00b204e9800998ecf8427e\n",
            "d41d8cd98f00b204e9800998ecf8427e a.img\n",
            "d41d8cd98f00b204e9800998ecf8427  a.img\n",
            "zz1d8cd98f00b204e9800998ecf8427e  a.img\n",
            "d41d8cd98f00b204e9800998ecf8427e  ../a.img\n",
            "d41d8cd98f00b204e9800998ecf8427e  /etc/passwd\n",
            "MD5 (a.img) = d41d8cd98f00b204e9800998ecf8427e\n",
            "é41d8cd98f00b204e9800998ecf8427e  a.img\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
