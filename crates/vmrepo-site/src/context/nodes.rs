//! Node lists as an admin types them: `rcas1..rcas64`, `rcas{01..64}`,
//! `rcas1,rcas5,web2`, mixes of these, and `@FILE` (one item a line, `#`
//! comments). Every name is a DNS label (RFC 1123: 1 to 63 characters of
//! `a-z`, `0-9` and `-`, no hyphen first or last); upper case is refused
//! with the lower-case spelling as advice, since host names compare without
//! case and two spellings of one node would make two seeds.

use std::collections::HashSet;
use std::path::Path;

use vmrepo_repo::{Error, ErrorKind, Result};

/// The most nodes one list may name.
pub const MAX_NODES: u64 = 65_536;
/// The largest node file read.
pub const MAX_NODE_FILE: u64 = 4 << 20;
/// The most digits a range bound may have.
const MAX_DIGITS: usize = 9;

/// One node: its host name, a DNS label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
}

/// A contiguous run of names: `prefix` + the number padded to `width` + `suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub prefix: String,
    pub first: u64,
    pub count: u64,
    /// Zero-padded to this many digits (1: no padding).
    pub width: usize,
    pub suffix: String,
}

impl Run {
    /// The name of the `i`th node of the run (0-based).
    pub fn name(&self, i: u64) -> String {
        format!("{}{:0w$}{}", self.prefix, self.first + i, self.suffix, w = self.width)
    }
}

fn bad(input: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("node list {input:?}: {msg}"))
}

/// Parses a node list; `@FILE` items are read relative to the current folder.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the bad part: a malformed or reversed
/// range, a name that is not a DNS label, a duplicate, more than
/// [`MAX_NODES`]; an unreadable `@FILE` as its I/O error.
pub fn parse(input: &str) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for item in input.split(',') {
        let item = item.trim();
        if let Some(file) = item.strip_prefix('@') {
            parse_file(Path::new(file), &mut out, &mut seen)?;
        } else {
            add_item(item, &mut out, &mut seen).map_err(|m| bad(item, m))?;
        }
    }
    if out.is_empty() {
        return Err(bad(input, "no node"));
    }
    Ok(out)
}

fn parse_file(path: &Path, out: &mut Vec<Node>, seen: &mut HashSet<String>) -> Result<()> {
    let bytes = read_capped(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, format!("{}: not UTF-8 text", path.display())))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        for item in line.split(',') {
            let item = item.trim();
            if item.starts_with('@') {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} line {}: {item:?}: a node file cannot name another", path.display(), n + 1),
                ));
            }
            add_item(item, out, seen).map_err(|m| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} line {}: {item:?}: {m}", path.display(), n + 1),
                )
            })?;
        }
    }
    Ok(())
}

fn read_capped(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = vmrepo_repo::fsutil::open_regular(path, true)?;
    let mut bytes = Vec::new();
    f.take(MAX_NODE_FILE + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > MAX_NODE_FILE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{}: larger than {MAX_NODE_FILE} bytes: not a node list", path.display()),
        ));
    }
    Ok(bytes)
}

/// Adds the nodes of one item (a name or a range); the message is the problem.
fn add_item(item: &str, out: &mut Vec<Node>, seen: &mut HashSet<String>) -> std::result::Result<(), String> {
    if item.is_empty() {
        return Err("an empty item (two commas, or a comma at an end)".into());
    }
    match range(item)? {
        Some(run) => {
            let total = (out.len() as u64).checked_add(run.count).filter(|&t| t <= MAX_NODES);
            if total.is_none() {
                return Err(format!("more than {MAX_NODES} nodes"));
            }
            for i in 0..run.count {
                push(run.name(i), out, seen)?;
            }
        }
        None => {
            if out.len() as u64 >= MAX_NODES {
                return Err(format!("more than {MAX_NODES} nodes"));
            }
            push(item.to_string(), out, seen)?;
        }
    }
    Ok(())
}

fn push(name: String, out: &mut Vec<Node>, seen: &mut HashSet<String>) -> std::result::Result<(), String> {
    check_label(&name)?;
    if !seen.insert(name.clone()) {
        return Err(format!("{name} is named twice"));
    }
    out.push(Node { name });
    Ok(())
}

/// Checks an RFC 1123 label in lower case.
///
/// # Errors
/// The problem, in a few words.
pub fn check_label(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} is not a host name: 1 to 63 characters"));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{name:?}: host names are written in lower case here: {}",
            name.to_ascii_lowercase()
        ));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("{name:?} is not a host name: {c:?} (only a-z, 0-9 and -)"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!("{name:?} is not a host name: a hyphen first or last"));
    }
    Ok(())
}

/// The run an item names, `None` for a plain name.
fn range(item: &str) -> std::result::Result<Option<Run>, String> {
    if let Some(open) = item.find('{') {
        let close = item[open..].find('}').map(|c| open + c).ok_or("a { without }")?;
        let (prefix, inner, suffix) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
        if suffix.contains(['{', '}']) || prefix.contains('}') {
            return Err("one {A..B} per item".into());
        }
        if prefix.contains("..") || suffix.contains("..") {
            return Err("a .. outside the braces".into());
        }
        let (a, b) = inner.split_once("..").ok_or("expected {A..B} inside the braces")?;
        let (first, last) = (number(a)?, number(b)?);
        // As bash pads {01..64}: when either bound starts with a zero.
        let padded = (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0'));
        let width = if padded { a.len().max(b.len()) } else { 1 };
        return run(prefix, first, last, width, suffix).map(Some);
    }
    if item.contains('}') {
        return Err("a } without {".into());
    }
    let Some((left, right)) = item.split_once("..") else { return Ok(None) };
    if right.contains("..") {
        return Err("more than one ..".into());
    }
    let (lp, ld) = split_digits(left);
    let (rp, rd) = split_digits(right);
    if ld.is_empty() {
        return Err(format!("{item:?}: {left:?} does not end in a number (a range is rcas1..rcas64)"));
    }
    if rd.is_empty() {
        return Err(format!("{item:?}: {right:?} does not end in a number (a range is rcas1..rcas64)"));
    }
    if !rp.is_empty() && rp != lp {
        return Err(format!("the two ends have different names ({lp:?} and {rp:?})"));
    }
    let (first, last) = (number(ld)?, number(rd)?);
    let width = if ld.len() > 1 && ld.starts_with('0') { ld.len() } else { 1 };
    run(lp, first, last, width, "").map(Some)
}

fn run(prefix: &str, first: u64, last: u64, width: usize, suffix: &str) -> std::result::Result<Run, String> {
    if last < first {
        return Err(format!("a reversed range ({first} > {last})"));
    }
    let count = last - first + 1;
    if count > MAX_NODES {
        return Err(format!("{count} nodes: more than {MAX_NODES}"));
    }
    Ok(Run { prefix: prefix.into(), first, count, width, suffix: suffix.into() })
}

fn split_digits(s: &str) -> (&str, &str) {
    let cut = s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    s.split_at(cut)
}

fn number(s: &str) -> std::result::Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    if s.len() > MAX_DIGITS {
        return Err(format!("{s:?}: more than {MAX_DIGITS} digits"));
    }
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

/// The single run that names exactly `nodes` in order, if there is one
/// (what `--format ec2` needs: node `i` is the `i`th launched copy).
pub fn as_run(nodes: &[Node]) -> Option<Run> {
    let first = nodes.first()?;
    let (prefix, digits) = split_digits(&first.name);
    let start = number(digits).ok()?;
    let width = if digits.len() > 1 && digits.starts_with('0') { digits.len() } else { 1 };
    let r =
        Run { prefix: prefix.into(), first: start, count: nodes.len() as u64, width, suffix: String::new() };
    nodes.iter().enumerate().all(|(i, n)| n.name == r.name(i as u64)).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        parse(s).unwrap().into_iter().map(|n| n.name).collect()
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn ranges_lists_and_padding() {
        assert_eq!(names("rcas1..rcas3"), ["rcas1", "rcas2", "rcas3"]);
        assert_eq!(names("rcas8..11"), ["rcas8", "rcas9", "rcas10", "rcas11"]);
        assert_eq!(names("rcas{01..03}"), ["rcas01", "rcas02", "rcas03"]);
        assert_eq!(names("n{9..011}"), ["n009", "n010", "n011"]);
        assert_eq!(names("rcas{1..2}-a"), ["rcas1-a", "rcas2-a"]);
        assert_eq!(names("rcas08..rcas10"), ["rcas08", "rcas09", "rcas10"]);
        assert_eq!(names(" rcas1 , rcas5,web2"), ["rcas1", "rcas5", "web2"]);
        assert_eq!(names("web2,rcas1..rcas2,x{3..3}"), ["web2", "rcas1", "rcas2", "x3"]);
        assert_eq!(names("a-1"), ["a-1"]);
        assert_eq!(names("7"), ["7"]);
        assert_eq!(parse("rcas1..rcas64").unwrap().len(), 64);
    }

    #[test]
    fn refused_with_the_bad_part() {
        for (input, part) in [
            ("rcas5..rcas1", "reversed"),
            ("rcas{5..1}", "reversed"),
            ("rcas1..web3", "different names"),
            ("rcas..rcas3", "does not end in a number"),
            ("rcas1..", "does not end in a number"),
            ("rcas1..rcas2..rcas3", "more than one"),
            ("rcas{1..3", "without }"),
            ("rcas1..3}", "without {"),
            ("rcas{a..c}", "not a number"),
            ("rcas{1-3}", "expected {A..B}"),
            ("r{1..2}{1..2}", "one {A..B}"),
            ("rcas1,,rcas2", "empty item"),
            ("rcas1,", "empty item"),
            ("", "empty item"),
            ("RCAS1", "lower case here: rcas1"),
            ("rcas_1", "'_'"),
            ("-rcas", "hyphen"),
            ("rcas-", "hyphen"),
            ("rcas1.example.org", "'.'"),
            ("r\u{e9}", "only a-z"),
            ("rcas1,rcas1", "named twice"),
            ("rcas1..rcas3,rcas2", "named twice"),
            ("n0..n65536", "more than 65536"),
            ("n1..n65536,x", "more than 65536"),
            ("n{0..99999999999999999999}", "digits"),
            ("n1..n1234567890", "digits"),
        ] {
            let e = err(input);
            assert!(e.contains(part), "{input:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let long = "a".repeat(64);
        assert!(err(&long).contains("1 to 63"));
        assert_eq!(names(&"a".repeat(63)).len(), 1);
        // A range whose names grow too long is refused at the name.
        assert!(err(&format!("{}{{1..2}}", "a".repeat(63))).contains("1 to 63"));
    }

    #[test]
    fn the_cap_is_exact() {
        assert_eq!(parse("n1..n65536").unwrap().len(), 65_536);
    }

    #[test]
    fn a_node_file() {
        let dir = std::env::temp_dir().join(format!("vmrepo-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("nodes");
        std::fs::write(&f, "# the farm\nrcas1..rcas2 # two\n\n  web1, web2\r\n").unwrap();
        let spec = format!("@{},db1", f.display());
        assert_eq!(names(&spec), ["rcas1", "rcas2", "web1", "web2", "db1"]);
        std::fs::write(&f, "rcas1\nrcas{2..1}\n").unwrap();
        let e = err(&format!("@{}", f.display()));
        assert!(e.contains("line 2") && e.contains("reversed"), "{e}");
        std::fs::write(&f, "@/etc/passwd\n").unwrap();
        assert!(err(&format!("@{}", f.display())).contains("cannot name another"));
        std::fs::write(&f, b"rcas\xff\n").unwrap();
        assert!(err(&format!("@{}", f.display())).contains("UTF-8"));
        assert!(err(&format!("@{}", dir.display())).contains(&dir.display().to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_for_ec2() {
        let r = as_run(&parse("rcas{01..12}").unwrap()).unwrap();
        assert_eq!((r.prefix.as_str(), r.first, r.count, r.width), ("rcas", 1, 12, 2));
        assert!(as_run(&parse("rcas1,rcas3").unwrap()).is_none());
        assert!(as_run(&parse("web").unwrap()).is_none());
        assert_eq!(as_run(&parse("rcas5..rcas6").unwrap()).unwrap().name(1), "rcas6");
    }
}
