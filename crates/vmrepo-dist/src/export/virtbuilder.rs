//! virt-builder's index (`index`, and with an OpenPGP key `index.asc`, the
//! same clearsigned), in the format libguestfs' index parser reads
//! (builder/index-parse.y): one `[section]` per image, `key=value` lines,
//! a value continued on the next lines by a leading space (an empty line of
//! notes is a line of one space), a blank line between sections.
//!
//! Each image is a section named after it (`[<name>]`, `[<VM>-<name>]` when
//! the name is published from more than one VM folder): `name`, `osinfo`,
//! `arch`, `file` (relative to the index), `checksum[sha512]`, `format`,
//! `size` (the virtual size), `compressed_size` (the file's size), `expand`
//! when inspection found the root filesystem on a partition, `notes` and
//! `revision` (the time it was added, `YYYYMMDDHHMMSS`, so that
//! virt-builder's cache holds an image until it is replaced). An image
//! whose virtual size is not known (virt-builder requires it) is left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use vmrepo_repo::{Error, ErrorKind, Result};

use super::{Context, OutFile, Skipped, Stage};
use crate::openpgp;
use crate::schema::CatalogImage;

pub const INDEX: &str = "index";
pub const SIGNED_INDEX: &str = "index.asc";

/// `index`, and `index.asc` with an OpenPGP key (else a [`Skipped`]).
///
/// # Errors
/// An image without its SHA-512, or signing fails.
pub fn render(ctx: &Context<'_>, skipped: &mut Vec<Skipped>) -> Result<Vec<OutFile>> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &ctx.doc.images {
        *count.entry(i.name.as_str()).or_default() += 1;
    }
    let mut text = String::new();
    let mut left_out = Vec::new();
    for image in &ctx.doc.images {
        let section = section_name(if count.get(image.name.as_str()) == Some(&1) {
            image.name.clone()
        } else {
            format!("{}-{}", image.vm, image.name)
        });
        let Some(size) = virtual_size(image) else {
            left_out.push(image.path.clone());
            continue;
        };
        let sha512 = ctx.sha512.get(&image.sha256).ok_or_else(|| {
            Error::new(ErrorKind::Io, format!("{}: no SHA-512 for virt-builder's index", image.path))
        })?;
        if !text.is_empty() {
            text.push('\n');
        }
        section_text(&mut text, &section, image, size, sha512, ctx.generated);
    }
    if !left_out.is_empty() {
        skipped.push(Skipped {
            export: "virt-builder index entries",
            reason: format!("virtual size not known (virt-builder requires it): {}", left_out.join(", ")),
        });
    }
    let mut files = Vec::new();
    match &ctx.signers.openpgp {
        Some(signer) => files.push(OutFile {
            path: SIGNED_INDEX.into(),
            bytes: openpgp::clearsign(signer, &text)?.into_bytes(),
            stage: Stage::Index,
        }),
        None => skipped.push(Skipped {
            export: "virt-builder index.asc",
            reason: "no OpenPGP key (--openpgp-key): only the unsigned index was written".into(),
        }),
    }
    files.push(OutFile { path: INDEX.into(), bytes: text.into_bytes(), stage: Stage::Index });
    Ok(files)
}

/// The virtual size: recorded, or the file's size for a raw image.
fn virtual_size(image: &CatalogImage) -> Option<u64> {
    image.virtual_size.or_else(|| (image.format.as_deref() == Some("raw")).then_some(image.size))
}

fn section_text(
    out: &mut String,
    section: &str,
    image: &CatalogImage,
    size: u64,
    sha512: &str,
    generated: Timestamp,
) {
    let added = image.added.as_deref().and_then(|a| a.parse::<Timestamp>().ok());
    let revision = added.unwrap_or(generated).strftime("%Y%m%d%H%M%S").to_string();
    // Writing to a String does not fail.
    let _ = writeln!(out, "[{section}]");
    let _ = writeln!(out, "name={}", one_line(&format!("{} ({})", image.name, image.vm)));
    if let Some(o) = &image.osinfo {
        let _ = writeln!(out, "osinfo={}", one_line(o));
    }
    let _ = writeln!(out, "arch={}", virt_arch(&image.arch, image.bits));
    let _ = writeln!(out, "file={}", url_path(&image.path));
    let _ = writeln!(out, "checksum[sha512]={sha512}");
    let _ = writeln!(out, "format={}", image.format.as_deref().unwrap_or("raw"));
    let _ = writeln!(out, "size={size}");
    let _ = writeln!(out, "compressed_size={}", image.size);
    if let Some(dev) = root_partition(&image.description) {
        let _ = writeln!(out, "expand={dev}");
    }
    let mut notes =
        vec![format!("STAR VM image {} from the {} folder.", image.name, image.vm), String::new()];
    notes.push(format!(
        "OS {}, {} {}-bit, STAR library {}, maximum size {}.",
        image.os, image.arch, image.bits, image.lib, image.maxsize
    ));
    if let Some(d) = &image.detail {
        notes.push(format!("Detail: {d}"));
    }
    if let Some(a) = &image.added {
        notes.push(format!("Added {a}."));
    }
    if let Some(guest) = image.description.get("guest").and_then(|g| g.as_array())
        && !guest.is_empty()
    {
        notes.push(String::new());
        for pair in guest {
            let (Some(k), Some(vs)) =
                (pair.get(0).and_then(|k| k.as_str()), pair.get(1).and_then(|v| v.as_array()))
            else {
                continue;
            };
            for v in vs.iter().filter_map(|v| v.as_str()) {
                notes.push(format!("{k}: {v}"));
            }
        }
    }
    let mut first = true;
    for n in notes {
        let n = one_line(&n);
        if first {
            let _ = writeln!(out, "notes={n}");
            first = false;
        } else {
            // A continuation line starts with a space; an empty one is one space.
            let _ = writeln!(out, " {n}");
        }
    }
    let _ = writeln!(out, "revision={revision}");
}

/// A value on one line: control characters (line breaks included) become spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A section name as virt-builder's lexer takes it: letters, digits, `.`,
/// `_` and `-` (anything else, which a convention name never holds, becomes `_`).
fn section_name(s: String) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// A relative URL: every byte but unreserved ones and `/` percent-encoded.
fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// virt-builder names architectures as the kernel does.
fn virt_arch(arch: &str, bits: u16) -> String {
    match (arch, bits) {
        ("x86", 64) => "x86_64".into(),
        ("x86", 32) => "i686".into(),
        (a, _) => one_line(a).replace(' ', "_"),
    }
}

/// `/dev/sdaN` when the description's facts put the root filesystem on
/// partition N (`Filesystem: pN ext3 /, 7.9 GiB`); `None` for a logical
/// volume, a bare filesystem or no inspection.
fn root_partition(description: &serde_json::Value) -> Option<String> {
    let guest = description.get("guest")?.as_array()?;
    let fs = guest.iter().find(|p| p.get(0).and_then(|k| k.as_str()) == Some("Filesystem"))?;
    for v in fs.get(1)?.as_array()?.iter().filter_map(|v| v.as_str()) {
        let head = v.split(',').next().unwrap_or("");
        let parts: Vec<&str> = head.split_whitespace().collect();
        if let [part, _fstype, "/"] = parts[..] {
            let n = part.strip_prefix('p')?;
            if !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0') {
                return Some(format!("/dev/sda{n}"));
            }
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_partition_is_read_from_the_facts() {
        let d =
            serde_json::json!({"guest": [["Filesystem", ["p1 ext3 /boot, 100 MiB", "p2 ext3 /, 7.9 GiB"]]]});
        assert_eq!(root_partition(&d).as_deref(), Some("/dev/sda2"));
        let lv = serde_json::json!({"guest": [["Filesystem", ["VolGroup00/LogVol00 ext3 /, 64 MiB"]]]});
        assert_eq!(root_partition(&lv), None);
        assert_eq!(root_partition(&serde_json::json!({})), None);
        let odd = serde_json::json!({"guest": [["Filesystem", ["p0 ext3 /, 1 MiB", 7]]]});
        assert_eq!(root_partition(&odd), None);
    }

    #[test]
    fn values_stay_on_one_line() {
        assert_eq!(one_line("a\n[x]\rb\tc"), "a [x] b c");
        assert_eq!(section_name("kvm-a b]\n[c".into()), "kvm-a_b___c");
        assert_eq!(url_path("vm/k v/a%.img"), "vm/k%20v/a%25.img");
    }
}
