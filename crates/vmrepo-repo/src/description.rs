//! The `.txt` sidecar: the image's description, for people first.
//!
//! A person reads and edits it; vmrepo reads it back. Above a line `Notes:`
//! every line of the form `Key: value` whose key vmrepo knows (see [`keys`])
//! is a field; any other line (comments, keys vmrepo does not know, blank
//! lines) is kept as it is when vmrepo rewrites the file, and everything after
//! `Notes:` is free text kept byte for byte. Keys are matched without regard to
//! case. A value `unknown` is the same as no value.
//!
//! ```text
//! # sl4_x86_32_sl08e_8GB_ec2.img: STAR virtual machine image (written by vmrepo; edit freely).
//! Image: sl4_x86_32_sl08e_8GB_ec2.img
//! VM: xen
//! Operating system: sl4
//! ...
//! SHA-256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! Notes:
//! Built from the SL4 base with STAR SL08e for the EC2 tests.
//! ```

use std::fmt::Write as _;

use serde::Serialize;
use vmrepo_name::{Isa, MaxSize, Os, StarLib, Vm, WordSize};

use crate::checksum::{hex, parse_hex};

/// The largest `.txt` read.
pub const MAX_DESCRIPTION_FILE: u64 = 1024 * 1024;

/// The line after which free-form notes start.
pub const NOTES_MARKER: &str = "Notes:";

/// The keys vmrepo reads and writes, in the order it writes them.
pub mod keys {
    pub const IMAGE: &str = "Image";
    pub const VM: &str = "VM";
    pub const OS: &str = "Operating system";
    pub const OSINFO: &str = "Osinfo short-id";
    pub const KERNEL: &str = "Kernel version";
    pub const ISA: &str = "Instruction set";
    pub const WORD_SIZE: &str = "Word size";
    pub const LIB: &str = "STAR library";
    pub const MAX_SIZE: &str = "Maximum size";
    pub const STORAGE: &str = "Storage";
    pub const FORMAT: &str = "Format";
    pub const SUBFORMAT: &str = "Subformat";
    pub const VIRTUAL_SIZE: &str = "Virtual size";
    pub const ALLOCATED: &str = "Allocated";
    /// The image's length in bytes (a sparse file's apparent size).
    pub const FILE_SIZE: &str = "File size";
    /// What the image takes on the host's disk (its allocated blocks).
    pub const BYTES: &str = "Bytes on disk";
    pub const SHA256: &str = "SHA-256";
    pub const ADDED: &str = "Added";
    pub const ADDED_BY: &str = "Added by";
    // What the look inside the guest found, for people (rewritten by vmrepo).
    pub const GUEST_OS: &str = "Guest OS";
    pub const HOSTNAME: &str = "Hostname";
    pub const BOOTS: &str = "Boots on its own";
    pub const FILESYSTEM: &str = "Filesystem";
    pub const SWAP: &str = "Swap";
    pub const STAR_INSTALLED: &str = "STAR libraries installed";
    pub const STAR_ACCOUNT: &str = "star account";
    /// Whether root has a password. Not "Root password", which is what the
    /// specification tells administrators to write (the command that gives
    /// the month's password), and which vmrepo must keep as written.
    pub const ROOT_PASSWORD: &str = "Root password state";
    pub const AUTHORIZED_KEYS: &str = "SSH authorized keys";
    /// The command that gives the month's root password, when the image
    /// sets it at each boot (the command only, never a seed).
    pub const ROOT_PASSWORD_COMMAND: &str = "Root password command";
    pub const BUDGET: &str = "Budget";

    /// The keys of what the inspection found.
    pub const GUEST: [&str; 11] = [
        GUEST_OS,
        HOSTNAME,
        BOOTS,
        FILESYSTEM,
        SWAP,
        STAR_INSTALLED,
        STAR_ACCOUNT,
        ROOT_PASSWORD,
        ROOT_PASSWORD_COMMAND,
        AUTHORIZED_KEYS,
        BUDGET,
    ];

    /// Every key, in writing order.
    pub const ALL: [&str; 30] = [
        IMAGE,
        VM,
        OS,
        OSINFO,
        KERNEL,
        ISA,
        WORD_SIZE,
        LIB,
        MAX_SIZE,
        STORAGE,
        FORMAT,
        SUBFORMAT,
        VIRTUAL_SIZE,
        ALLOCATED,
        FILE_SIZE,
        BYTES,
        SHA256,
        ADDED,
        ADDED_BY,
        GUEST_OS,
        HOSTNAME,
        BOOTS,
        FILESYSTEM,
        SWAP,
        STAR_INSTALLED,
        STAR_ACCOUNT,
        ROOT_PASSWORD,
        ROOT_PASSWORD_COMMAND,
        AUTHORIZED_KEYS,
        BUDGET,
    ];
}

/// The key under which the first vmrepo wrote whether root has a password,
/// and the values it wrote: such lines are replaced by
/// [`keys::ROOT_PASSWORD`]; any other line with this key is the
/// administrator's and is kept.
const LEGACY_ROOT_PASSWORD_KEY: &str = "Root password";
const LEGACY_ROOT_PASSWORD_VALUES: [&str; 4] =
    ["set", "empty: root logs in without a password", "locked", "unknown: no entry in /etc/shadow"];

/// How the image's storage grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// The file holds the whole virtual disk from the start.
    Fixed,
    /// The file grows as the guest writes, up to the maximum size.
    Dynamic,
}

impl Storage {
    /// The words the description uses.
    pub fn describe(self) -> &'static str {
        match self {
            Storage::Fixed => "fixed",
            Storage::Dynamic => "dynamically expanding",
        }
    }

    /// The short word the catalog and `--json` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Fixed => "fixed",
            Storage::Dynamic => "dynamic",
        }
    }

    fn parse(s: &str) -> Option<Storage> {
        let s = s.to_ascii_lowercase();
        if s.starts_with("fixed") {
            Some(Storage::Fixed)
        } else if s.starts_with("dynamic") {
            Some(Storage::Dynamic)
        } else {
            None
        }
    }
}

/// The SHA-256 of an image file, or of one part of an image folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartDigest {
    /// Hex in `--json`.
    #[serde(serialize_with = "ser_hex")]
    pub sha256: [u8; 32],
    /// The part's path relative to the VM folder (`stem/part.vmdk`); `None` for a single file.
    pub part: Option<String>,
}

fn ser_hex<S: serde::Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(d))
}

/// The typed content of a description: every key parameter of the specification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub image: Option<String>,
    pub vm: Option<Vm>,
    pub os: Option<Os>,
    pub osinfo: Option<String>,
    pub kernel: Option<String>,
    pub isa: Option<Isa>,
    pub word_size: Option<WordSize>,
    pub lib: Option<StarLib>,
    pub max_size: Option<MaxSize>,
    pub storage: Option<Storage>,
    pub format: Option<String>,
    pub subformat: Option<String>,
    pub virtual_size: Option<u64>,
    /// Guest bytes the image's own tables allocate.
    pub allocated: Option<u64>,
    /// The image's length (the sum of its files' for a folder).
    pub bytes: Option<u64>,
    /// What it takes on the host's disk (allocated blocks).
    pub disk_usage: Option<u64>,
    pub sha256: Vec<PartDigest>,
    pub added: Option<String>,
    pub added_by: Option<String>,
    /// What the inspection found, by key of [`keys::GUEST`]: one or more lines each.
    pub guest: Vec<(&'static str, Vec<String>)>,
}

/// A field of the description whose value vmrepo cannot read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// 1-based line number.
    pub line: usize,
    /// The key, as vmrepo spells it.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Why a `.txt` cannot be read at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("larger than {MAX_DESCRIPTION_FILE} bytes")]
    TooLarge,
    #[error("not UTF-8 text (byte {0})")]
    NotText(usize),
    #[error("contains a NUL byte (byte {0})")]
    Nul(usize),
}

/// A description, line by line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    header: Vec<String>,
    notes: Option<String>,
}

impl Description {
    /// A new description for `facts`, with `notes` below the marker.
    pub fn new(facts: &Facts, notes: Option<&str>) -> Description {
        let title = facts.image.as_deref().unwrap_or("image");
        let mut d = Description {
            header: vec![
                format!("# {title}: STAR virtual machine image, described by vmrepo."),
                "# Lines \"Key: value\" above \"Notes:\" are read back by vmrepo; edit them freely."
                    .to_string(),
                "# Lines vmrepo does not know are kept, and everything after \"Notes:\" is yours."
                    .to_string(),
            ],
            notes: Some(String::new()),
        };
        d.apply(facts);
        if let Some(n) = notes {
            d.set_notes(n);
        }
        d
    }

    /// Renames the image in the title line vmrepo wrote (`# old.img: ...`),
    /// if the first line is that title.
    pub fn retitle(&mut self, old: &str, new: &str) {
        if let Some(first) = self.header.first_mut()
            && let Some(rest) = first.strip_prefix(&format!("# {old}:"))
        {
            *first = format!("# {new}:{rest}");
        }
    }

    /// Reads a description from the bytes of a `.txt` file.
    ///
    /// # Errors
    /// More than [`MAX_DESCRIPTION_FILE`] bytes, not UTF-8, or a NUL byte.
    pub fn parse(bytes: &[u8]) -> Result<Description, DescriptionError> {
        if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_DESCRIPTION_FILE) {
            return Err(DescriptionError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|e| DescriptionError::NotText(e.valid_up_to()))?;
        if let Some(at) = text.find('\0') {
            return Err(DescriptionError::Nul(at));
        }
        let mut header = Vec::new();
        let mut notes = None;
        let mut rest = text;
        while !rest.is_empty() {
            let (line, next) = match rest.find('\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let trimmed = line.trim();
            if trimmed.len() >= NOTES_MARKER.len()
                && trimmed.is_char_boundary(NOTES_MARKER.len())
                && trimmed[..NOTES_MARKER.len()].eq_ignore_ascii_case(NOTES_MARKER)
            {
                let inline = trimmed[NOTES_MARKER.len()..].trim_start();
                notes = Some(if inline.is_empty() { next.to_string() } else { format!("{inline}\n{next}") });
                break;
            }
            header.push(line.strip_suffix('\r').unwrap_or(line).to_string());
            rest = next;
        }
        Ok(Description { header, notes })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            out.push_str(line);
            out.push('\n');
        }
        if let Some(notes) = &self.notes {
            out.push_str(NOTES_MARKER);
            out.push('\n');
            out.push_str(notes);
        }
        out
    }

    /// The free-form notes (what follows `Notes:`).
    pub fn notes(&self) -> Option<&str> {
        self.notes.as_deref()
    }

    /// Replaces the notes.
    pub fn set_notes(&mut self, notes: &str) {
        let mut n = notes.to_string();
        if !n.is_empty() && !n.ends_with('\n') {
            n.push('\n');
        }
        self.notes = Some(n);
    }

    /// The first value of a key (case-insensitive), trimmed; `unknown` and empty are `None`.
    pub fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.values(key).next().map(|(_, v)| v).filter(|v| !is_unknown(v))
    }

    fn values<'a, 'k: 'a>(&'a self, key: &'k str) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        self.header.iter().enumerate().filter_map(move |(i, line)| {
            let (k, v) = split_field(line)?;
            k.eq_ignore_ascii_case(key).then_some((i, v))
        })
    }

    /// Sets a key to one value: the first line with that key is rewritten in
    /// place, later ones removed; a missing key is added after the known keys
    /// that precede it in [`keys::ALL`].
    pub fn set(&mut self, key: &str, value: &str) {
        self.set_all(key, &[value.to_string()]);
    }

    /// Sets a key to several values, one line each (the SHA-256 of each part).
    pub fn set_all(&mut self, key: &str, values: &[String]) {
        let canonical = keys::ALL.iter().find(|k| k.eq_ignore_ascii_case(key)).copied().unwrap_or(key);
        let positions: Vec<usize> = self.values(key).map(|(i, _)| i).collect();
        let new_lines: Vec<String> = values.iter().map(|v| format!("{canonical}: {v}")).collect();
        let at = match positions.first() {
            Some(&first) => first,
            None => self.insertion_point(canonical),
        };
        for &i in positions.iter().rev() {
            self.header.remove(i);
        }
        for (offset, line) in new_lines.into_iter().enumerate() {
            self.header.insert(at + offset, line);
        }
    }

    /// After the last line holding a key that comes before `key` in writing order,
    /// else after the leading comment lines.
    fn insertion_point(&self, key: &str) -> usize {
        let order = keys::ALL.iter().position(|k| *k == key).unwrap_or(keys::ALL.len());
        let mut at = None;
        for (i, line) in self.header.iter().enumerate() {
            if let Some((k, _)) = split_field(line)
                && let Some(p) = keys::ALL.iter().position(|known| known.eq_ignore_ascii_case(k))
                && p < order
            {
                at = Some(i + 1);
            }
        }
        at.unwrap_or_else(|| self.header.iter().take_while(|l| l.starts_with('#')).count())
    }

    /// Writes every fact into the description; facts that are not known are
    /// written `unknown` for the specification's key parameters, so that a
    /// reader sees what is missing, and left alone otherwise.
    pub fn apply(&mut self, f: &Facts) {
        fn or_unknown<T: ToString>(v: &Option<T>) -> String {
            v.as_ref().map_or_else(|| "unknown".to_string(), ToString::to_string)
        }
        if let Some(image) = &f.image {
            self.set(keys::IMAGE, image);
        }
        self.set(keys::VM, &or_unknown(&f.vm));
        self.set(keys::OS, &or_unknown(&f.os));
        if let Some(id) = &f.osinfo {
            self.set(keys::OSINFO, id);
        }
        self.set(keys::KERNEL, &or_unknown(&f.kernel));
        self.set(keys::ISA, &or_unknown(&f.isa));
        self.set(keys::WORD_SIZE, &or_unknown(&f.word_size));
        self.set(keys::LIB, &or_unknown(&f.lib));
        // The bytes in the reading the disk is in: 10GB of a 10,000,000,000-byte disk is decimal.
        let max = f
            .max_size
            .as_ref()
            .map(|m| format!("{m} ({} bytes)", f.virtual_size.map_or(m.bytes(), |v| m.bytes_for(v))));
        self.set(keys::MAX_SIZE, &or_unknown(&max));
        self.set(keys::STORAGE, &or_unknown(&f.storage.map(Storage::describe)));
        self.set(keys::FORMAT, &or_unknown(&f.format));
        if let Some(s) = &f.subformat {
            self.set(keys::SUBFORMAT, s);
        }
        self.set(keys::VIRTUAL_SIZE, &or_unknown(&f.virtual_size.map(bytes_value)));
        if let Some(a) = f.allocated {
            self.set(keys::ALLOCATED, &bytes_value(a));
        }
        if let Some(b) = f.bytes {
            self.set(keys::FILE_SIZE, &bytes_value(b));
        }
        if let Some(b) = f.disk_usage {
            self.set(keys::BYTES, &bytes_value(b));
        }
        if !f.sha256.is_empty() {
            let values: Vec<String> = f
                .sha256
                .iter()
                .map(|d| match &d.part {
                    Some(p) => format!("{}  {p}", hex(&d.sha256)),
                    None => hex(&d.sha256),
                })
                .collect();
            self.set_all(keys::SHA256, &values);
        }
        if let Some(a) = &f.added {
            self.set(keys::ADDED, a);
        }
        if let Some(a) = &f.added_by {
            self.set(keys::ADDED_BY, a);
        }
        // Lines the first vmrepo wrote under the key administrators use for
        // the password command, recognised by their exact values.
        self.header.retain(|line| {
            !split_field(line).is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case(LEGACY_ROOT_PASSWORD_KEY) && LEGACY_ROOT_PASSWORD_VALUES.contains(&v)
            })
        });
        // What the guest holds describes this image only: lines about an
        // image it replaces go.
        for key in keys::GUEST {
            if !f.guest.iter().any(|(k, v)| *k == key && !v.is_empty()) {
                self.set_all(key, &[]);
            }
        }
        for (key, values) in &f.guest {
            if !values.is_empty() {
                self.set_all(key, values);
            }
        }
    }

    /// Reads the facts back; a value vmrepo cannot read is a [`FieldProblem`]
    /// and leaves its fact unknown.
    pub fn facts(&self) -> (Facts, Vec<FieldProblem>) {
        let mut f = Facts::default();
        let mut problems = Vec::new();
        for (i, line) in self.header.iter().enumerate() {
            let Some((k, v)) = split_field(line) else { continue };
            let Some(key) = keys::ALL.iter().copied().find(|known| known.eq_ignore_ascii_case(k)) else {
                continue;
            };
            if is_unknown(v) {
                continue;
            }
            let mut problem = |p: String| problems.push(FieldProblem { line: i + 1, key, problem: p });
            match key {
                keys::IMAGE => f.image = Some(v.to_string()),
                keys::VM => match Vm::from_user(v) {
                    Ok(vm) => f.vm = Some(vm),
                    Err(e) => problem(e.problem().to_string()),
                },
                keys::OS => match Os::from_user(v) {
                    Ok(os) => f.os = Some(os),
                    Err(e) => problem(e.problem().to_string()),
                },
                keys::OSINFO => f.osinfo = Some(v.to_string()),
                keys::KERNEL => f.kernel = Some(v.to_string()),
                keys::ISA => match Isa::from_user(v) {
                    Ok((isa, _)) => f.isa = Some(isa),
                    Err(e) => problem(e.problem().to_string()),
                },
                keys::WORD_SIZE => match WordSize::parse(v.trim_end_matches("-bit").trim_end_matches(" bit"))
                {
                    Ok(w) => f.word_size = Some(w),
                    Err(e) => problem(e.problem().to_string()),
                },
                keys::LIB => match StarLib::from_user(v) {
                    Ok(l) => f.lib = Some(l),
                    Err(e) => problem(e.problem().to_string()),
                },
                keys::MAX_SIZE => match MaxSize::from_user(first_word(v)) {
                    Ok(m) if first_word(v).contains(|c: char| c.is_ascii_alphabetic()) => {
                        f.max_size = Some(m)
                    }
                    Ok(_) => problem("expected a size with its unit, like 8GB".into()),
                    Err(e) => problem(e.problem().to_string()),
                },
                keys::STORAGE => match Storage::parse(v) {
                    Some(s) => f.storage = Some(s),
                    None => problem("expected \"fixed\" or \"dynamically expanding\"".into()),
                },
                keys::FORMAT => f.format = Some(v.to_string()),
                keys::SUBFORMAT => f.subformat = Some(v.to_string()),
                keys::ALLOCATED => match leading_u64(v) {
                    Some(n) => f.allocated = Some(n),
                    None => problem("expected a number of bytes".into()),
                },
                keys::VIRTUAL_SIZE => match leading_u64(v) {
                    Some(n) => f.virtual_size = Some(n),
                    None => problem("expected a number of bytes".into()),
                },
                keys::FILE_SIZE => match leading_u64(v) {
                    Some(n) => f.bytes = Some(n),
                    None => problem("expected a number of bytes".into()),
                },
                keys::BYTES => match leading_u64(v) {
                    Some(n) => f.disk_usage = Some(n),
                    None => problem("expected a number of bytes".into()),
                },
                keys::SHA256 => {
                    let (digest, part) = match v.split_once(char::is_whitespace) {
                        Some((d, p)) => (d, Some(p.trim().to_string()).filter(|p| !p.is_empty())),
                        None => (v, None),
                    };
                    match parse_hex::<32>(digest) {
                        Some(sha256) => f.sha256.push(PartDigest { sha256, part }),
                        None => problem("expected 64 hexadecimal digits".into()),
                    }
                }
                keys::ADDED => f.added = Some(v.to_string()),
                keys::ADDED_BY => f.added_by = Some(v.to_string()),
                k if keys::GUEST.contains(&k) => match f.guest.iter_mut().find(|(gk, _)| *gk == k) {
                    Some((_, vals)) => vals.push(v.to_string()),
                    None => f.guest.push((k, vec![v.to_string()])),
                },
                _ => {}
            }
        }
        (f, problems)
    }
}

/// `Key: value` with a key of letters, digits, spaces and `-` (so that a
/// comment or a sentence with a colon in the notes area is not a field).
fn split_field(line: &str) -> Option<(&str, &str)> {
    if line.starts_with('#') {
        return None;
    }
    let (k, v) = line.split_once(':')?;
    let k = k.trim();
    if k.is_empty() || k.len() > 40 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
        return None;
    }
    Some((k, v.trim()))
}

fn is_unknown(v: &str) -> bool {
    v.is_empty() || v.eq_ignore_ascii_case("unknown")
}

fn first_word(v: &str) -> &str {
    v.split_whitespace().next().unwrap_or("")
}

fn leading_u64(v: &str) -> Option<u64> {
    first_word(v).parse().ok()
}

/// `8589934592 bytes (8 GiB)`.
fn bytes_value(n: u64) -> String {
    format!("{n} bytes ({})", human_bytes(n))
}

/// A byte count in binary units with at most one decimal: `8 GiB`, `1.5 TiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut value = n;
    while value >= 1024 && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let divisor = 1u128 << (10 * unit);
    let tenths = (u128::from(n) * 10 + divisor / 2) / divisor;
    let mut s = String::new();
    if tenths.is_multiple_of(10) {
        let _ = write!(s, "{} {}", tenths / 10, UNITS[unit]);
    } else {
        let _ = write!(s, "{}.{} {}", tenths / 10, tenths % 10, UNITS[unit]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_facts() -> Facts {
        Facts {
            image: Some("sl4_x86_32_sl08e_8GB_ec2.img".into()),
            vm: Some(Vm::Xen),
            os: Some(Os::parse("sl4").unwrap()),
            isa: Some(Isa::X86),
            word_size: Some(WordSize::new(32).unwrap()),
            lib: Some(StarLib::parse("sl08e").unwrap()),
            max_size: Some(MaxSize::parse("8GB").unwrap()),
            bytes: Some(1 << 20),
            sha256: vec![PartDigest { sha256: [0xab; 32], part: None }],
            added: Some("2026-11-26T06:47:19Z".into()),
            added_by: Some("star@rcas6016".into()),
            subformat: Some("monolithicSparse".into()),
            allocated: Some(4 << 20),
            guest: vec![
                (keys::GUEST_OS, vec!["Scientific Linux release 4.8 (Beryllium)".into()]),
                (keys::FILESYSTEM, vec!["p1 ext3 /boot, 100 MiB".into(), "p2 ext3 /, 7.9 GiB".into()]),
                (keys::ROOT_PASSWORD, vec!["set".into()]),
            ],
            ..Facts::default()
        }
    }

    #[test]
    fn every_key_reads_back_as_a_key() {
        for k in keys::ALL {
            assert_eq!(split_field(&format!("{k}: x")), Some((k, "x")), "{k}");
        }
    }

    #[test]
    fn guest_lines_are_written_in_order_and_replaced() {
        let d = Description::new(&sample_facts(), None);
        let text = d.render();
        let keys_in_order: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .take_while(|l| *l != NOTES_MARKER)
            .filter_map(|l| split_field(l).map(|(k, _)| k))
            .collect();
        let rank = |k: &str| keys::ALL.iter().position(|a| *a == k).unwrap();
        assert!(keys_in_order.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "{text}");
        assert!(
            text.contains("Filesystem: p1 ext3 /boot, 100 MiB\nFilesystem: p2 ext3 /, 7.9 GiB\n"),
            "{text}"
        );
        // The description of a replacing image loses the old image's lines.
        let mut f = sample_facts();
        f.guest = vec![(keys::HOSTNAME, vec!["rcas2".into()])];
        let mut again = Description::parse(text.as_bytes()).unwrap();
        again.apply(&f);
        let out = again.render();
        assert!(out.contains("Hostname: rcas2\n"), "{out}");
        assert!(
            !out.contains("Filesystem:")
                && !out.contains("Guest OS:")
                && !out.contains("Root password state"),
            "{out}"
        );
    }

    #[test]
    fn facts_round_trip() {
        let d = Description::new(&sample_facts(), Some("Built for EC2.\nSecond line."));
        let text = d.render();
        assert!(text.contains("Word size: 32\n"), "{text}");
        assert!(text.contains("Kernel version: unknown\n"), "{text}");
        assert!(text.ends_with("Notes:\nBuilt for EC2.\nSecond line.\n"), "{text}");
        let back = Description::parse(text.as_bytes()).unwrap();
        let (facts, problems) = back.facts();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(facts, sample_facts());
        assert_eq!(back.render(), text);
    }

    #[test]
    fn keeps_unknown_lines_and_notes_when_rewriting() {
        let text = "Image: a.img\nword SIZE: 32\nContact: jlauret@bnl.gov\n\n# a comment\nNotes:\nKey: not a field here\n\n  indented\n";
        let mut d = Description::parse(text.as_bytes()).unwrap();
        assert_eq!(d.facts().0.word_size.unwrap().bits(), 32);
        d.apply(&sample_facts());
        let out = d.render();
        assert!(out.contains("Contact: jlauret@bnl.gov\n"), "{out}");
        assert!(out.contains("# a comment\n"), "{out}");
        assert!(out.contains("Word size: 32\n"), "{out}");
        assert!(!out.contains("word SIZE"), "{out}");
        assert!(out.ends_with("Notes:\nKey: not a field here\n\n  indented\n"), "{out}");
        // Idempotent: applying twice changes nothing.
        let mut again = Description::parse(out.as_bytes()).unwrap();
        again.apply(&sample_facts());
        assert_eq!(again.render(), out);
    }

    #[test]
    fn the_administrators_password_line_keeps_its_place_and_text() {
        let admin = "Root password: date '+%y%m SEED=someLongString' | md5sum | base64 | sed 's|\\(...........\\).*|\\1|'";
        let text =
            format!("Image: a.img\nVM: xen\n{admin}\nContact: jlauret\nRoot password: set\nNotes:\nmine\n");
        let mut d = Description::parse(text.as_bytes()).unwrap();
        d.apply(&sample_facts());
        let out = d.render();
        let lines: Vec<&str> = out.lines().collect();
        let at = lines.iter().position(|l| *l == admin).unwrap_or_else(|| panic!("{out}"));
        assert_eq!(lines[at + 1], "Contact: jlauret", "{out}");
        assert!(out.contains("Root password state: set\n"), "{out}");
        assert!(!out.contains("Root password: set"), "{out}");
        assert!(out.ends_with("Notes:\nmine\n"), "{out}");
        // And again: nothing moves.
        let mut again = Description::parse(out.as_bytes()).unwrap();
        again.apply(&sample_facts());
        assert_eq!(again.render(), out);
    }

    #[test]
    fn bad_values_are_problems_not_failures() {
        let d = Description::parse(
            b"Word size: sixty-four\nSHA-256: xyz\nMaximum size: 8 gigs\nOperating system: sl5.3\n",
        )
        .unwrap();
        let (f, problems) = d.facts();
        assert_eq!(f.os.unwrap().to_string(), "sl5.3");
        let keys: Vec<&str> = problems.iter().map(|p| p.key).collect();
        assert_eq!(keys, [keys::WORD_SIZE, keys::SHA256, keys::MAX_SIZE]);
        assert_eq!(problems[0].line, 1);
    }

    #[test]
    fn unreadable() {
        assert_eq!(Description::parse(b"ok\n\xff\xfe"), Err(DescriptionError::NotText(3)));
        assert_eq!(Description::parse(b"a\0b"), Err(DescriptionError::Nul(1)));
        let big = vec![b'a'; usize::try_from(MAX_DESCRIPTION_FILE).unwrap() + 1];
        assert_eq!(Description::parse(&big), Err(DescriptionError::TooLarge));
    }

    #[test]
    fn parts_of_a_folder_image() {
        let mut f = sample_facts();
        f.sha256 = vec![
            PartDigest { sha256: [1; 32], part: Some("x/a.vmdk".into()) },
            PartDigest { sha256: [2; 32], part: Some("x/a-f001.vmdk".into()) },
        ];
        let d = Description::new(&f, None);
        let (back, problems) = Description::parse(d.render().as_bytes()).unwrap().facts();
        assert!(problems.is_empty());
        assert_eq!(back.sha256, f.sha256);
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(8 << 30), "8 GiB");
        assert_eq!(human_bytes(3 << 39), "1.5 TiB");
        assert_eq!(human_bytes(u64::MAX), "16 EiB");
    }
}
