//! Metalink 4 files (RFC 5854), one beside each published image:
//! `vm/<VM>/<file>.meta4` names the file, its size, its SHA-256 and its URL
//! on every mirror, so that `aria2c -M` downloads it from whichever answers
//! and checks what it got (docs/distribution.md).
//!
//! The file is rewritten only when what it says changes: its `<published>`
//! time is kept from the file already there when nothing else differs, so
//! publishing again leaves it untouched (mirrors that sync by time see no
//! change).

use std::fmt::Write as _;
use vmrepo_repo::{Error, ErrorKind, Result};

use crate::ledger::Entry;
use crate::place;
use crate::store::{self, Store};

/// The extension added to the image's file name.
pub const EXTENSION: &str = "meta4";
/// The largest `.meta4` read back (to keep its `<published>` time).
const MAX_METALINK_FILE: u64 = 1 << 20;

/// What one Metalink file says about one image.
#[derive(Clone, Debug)]
pub struct Metalink<'a> {
    /// The image's file name, as downloaded.
    pub file: &'a str,
    /// The image's path relative to every base URL (`vm/<VM>/<file>`), unencoded.
    pub path: &'a str,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: &'a str,
    /// The base URLs, without their trailing `/`: the first is priority 1.
    pub base_urls: &'a [String],
}

impl Metalink<'_> {
    /// The document, with `published` (RFC 3339) as its publication time.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when a name holds a character that XML 1.0
    /// cannot carry (a control character), even escaped.
    pub fn render(&self, published: &str) -> Result<String> {
        let mut x = String::with_capacity(512);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n");
        x.push_str("  <generator>vmrepo</generator>\n");
        let _ = writeln!(x, "  <published>{}</published>", escape(published)?);
        let _ = writeln!(x, "  <file name=\"{}\">", escape(self.file)?);
        let _ = writeln!(x, "    <size>{}</size>", self.size);
        let _ = writeln!(x, "    <hash type=\"sha-256\">{}</hash>", escape(self.sha256)?);
        let path = encode_path(self.path);
        for (i, base) in self.base_urls.iter().enumerate() {
            let url = format!("{base}/{path}");
            let _ = writeln!(x, "    <url priority=\"{}\">{}</url>", i + 1, escape(&url)?);
        }
        x.push_str("  </file>\n</metalink>\n");
        Ok(x)
    }

    /// Writes the document at `rel` in a publish destination (a folder or a
    /// bucket) unless the file already there says the same: then it is left
    /// untouched, and its `<published>` time stays. Returns whether it was
    /// written and, in a folder, what the ledger is to record for it.
    ///
    /// In a folder (a temporary file, rename: publish syncs the filesystem
    /// once), `known` is what the ledger recorded for it: its `<published>`
    /// time, and the inode that proves it unchanged without reading it. In a
    /// bucket the object is read back and compared.
    ///
    /// # Errors
    /// Those of [`Metalink::render`]; an I/O or network error naming the file.
    pub fn write_to(
        &self,
        store: &Store,
        rel: &str,
        published: &str,
        known: Option<&Entry>,
    ) -> Result<(bool, Option<Entry>)> {
        if let Store::Folder(dest) = store {
            let path = store::dest_path(dest, rel)?;
            // The time it was published: as the ledger recorded it, else as the file says.
            let before = known.and_then(|k| k.6.clone()).or_else(|| {
                let bytes = store.read_small(rel, MAX_METALINK_FILE).ok().flatten()?;
                previous_published(&bytes)
            });
            if let Some(before) = before
                && let Ok(same) = self.render(&before)
                && let Some(mut entry) = place::unchanged(&path, same.as_bytes(), known)?
            {
                entry.6 = Some(before);
                return Ok((false, Some(entry)));
            }
            let (written, mut entry) = place::place_small(&path, self.render(published)?.as_bytes(), None)?;
            entry.6 = Some(published.to_string());
            return Ok((written, Some(entry)));
        }
        let before = store.read_small(rel, MAX_METALINK_FILE).ok().flatten();
        if let Some(same) = self.unchanged(before.as_deref())? {
            return Ok((!same, None));
        }
        Ok((store.put_small(rel, self.render(published)?.as_bytes())?, None))
    }

    /// `Some(true)` when `before` (the file already there) says the same
    /// with its own `<published>` time; `None` when there is none to compare.
    fn unchanged(&self, before: Option<&[u8]>) -> Result<Option<bool>> {
        let Some(before) = before else { return Ok(None) };
        let Some(time) = previous_published(before) else { return Ok(None) };
        let same = self.render(&time)?;
        Ok((before == same.as_bytes()).then_some(true))
    }
}

/// The `<published>` time of a Metalink file's bytes, if it has one.
fn previous_published(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find("<published>")? + "<published>".len();
    let len = text.get(start..)?.find("</published>")?;
    let t = text.get(start..start + len)?;
    // Only a time as this module writes it (nothing to unescape).
    t.bytes().all(|b| b.is_ascii_alphanumeric() || b":-.+".contains(&b)).then(|| t.to_string())
}

/// `s` as XML character data or an attribute value (either quote).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a character XML 1.0 does not allow.
pub fn escape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c if c < ' ' || matches!(c, '\u{fffe}' | '\u{ffff}') => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{s:?}: holds a character a Metalink (XML) file cannot carry"),
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A relative path for a URL: each `/`-separated segment percent-encoded
/// (every byte but the unreserved ones of RFC 3986).
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn hostile_names_and_urls_are_escaped() {
        let bases = urls(&["https://vm.example.org/star?a=1&b=<2>", "http://m.example.org/\"x'"]);
        let m = Metalink {
            file: "a&b<c>\"d'e f%.img",
            path: "vm/k&v/a&b<c>\"d'e f%.img",
            size: 42,
            sha256: &"ab".repeat(32),
            base_urls: &bases,
        };
        let x = m.render("2026-01-01T00:00:00Z").unwrap();
        assert!(x.contains("<file name=\"a&amp;b&lt;c&gt;&quot;d&apos;e f%.img\">"), "{x}");
        assert!(
            x.contains(
                "<url priority=\"1\">https://vm.example.org/star?a=1&amp;b=&lt;2&gt;/vm/k%26v/a%26b%3Cc%3E%22d%27e%20f%25.img</url>"
            ),
            "{x}"
        );
        assert!(x.contains("<url priority=\"2\">http://m.example.org/&quot;x&apos;/vm/k%26v/"), "{x}");
        assert!(
            x.contains("<size>42</size>")
                && x.contains(&format!("<hash type=\"sha-256\">{}</hash>", "ab".repeat(32)))
        );
        assert!(
            x.contains("xmlns=\"urn:ietf:params:xml:ns:metalink\"")
                && x.contains("<published>2026-01-01T00:00:00Z</published>")
        );
        // A control character cannot be carried at all.
        let bad = Metalink { file: "a\u{1}.img", ..m.clone() };
        assert_eq!(bad.render("2026-01-01T00:00:00Z").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(escape("a\tb").unwrap(), "a&#9;b");
        assert_eq!(encode_path("vm/kvm/sl5.3_x86-64~1.img"), "vm/kvm/sl5.3_x86-64~1.img");
        assert_eq!(encode_path("vm/kvm/é.img"), "vm/kvm/%C3%A9.img");
    }

    #[test]
    fn an_unchanged_metalink_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.img.meta4");
        let store = Store::Folder(dir.path().to_path_buf());
        let bases = urls(&["http://127.0.0.1:1"]);
        let sha = "0".repeat(64);
        let m = Metalink { file: "a.img", path: "vm/kvm/a.img", size: 1, sha256: &sha, base_urls: &bases };
        assert!(m.write_to(&store, "a.img.meta4", "2026-01-01T00:00:00Z", None).unwrap().0);
        let before = fs::metadata(&dest).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A later publish with nothing changed: same inode, same mtime, the first time kept.
        assert!(!m.write_to(&store, "a.img.meta4", "2026-02-01T00:00:00Z", None).unwrap().0);
        let after = fs::metadata(&dest).unwrap();
        assert_eq!(
            (before.ino(), before.mtime(), before.mtime_nsec()),
            (after.ino(), after.mtime(), after.mtime_nsec())
        );
        assert!(fs::read_to_string(&dest).unwrap().contains("2026-01-01T00:00:00Z"));
        // A new mirror changes it, with the new time.
        let more = urls(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let m2 = Metalink { base_urls: &more, ..m.clone() };
        assert!(m2.write_to(&store, "a.img.meta4", "2026-02-01T00:00:00Z", None).unwrap().0);
        let text = fs::read_to_string(&dest).unwrap();
        assert!(text.contains("2026-02-01T00:00:00Z") && text.contains("priority=\"2\""), "{text}");
        assert_ne!(fs::metadata(&dest).unwrap().ino(), before.ino());
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
