//! The VMDK text descriptor: embedded in a sparse extent, or a file of its own
//! naming the extent files.

use crate::error::{Error, Result, ensure};

/// The largest descriptor read (QEMU refuses larger ones too).
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
/// The most extents a descriptor may list.
pub const MAX_EXTENTS: usize = 4096;

/// How an extent is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentType {
    /// A hosted sparse extent (a KDMV file).
    Sparse,
    /// A flat extent: raw bytes at an offset of a file.
    Flat,
    /// Reads as zeros; no file.
    Zero,
    /// ESX types vmrepo recognises but does not read.
    Other,
}

/// One extent line: `RW 8388608 SPARSE "disk-s001.vmdk"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: String,
    pub sectors: u64,
    pub kind: ExtentType,
    pub type_name: String,
    pub file: Option<String>,
    /// Offset of a FLAT extent's data in its file, in sectors.
    pub offset: u64,
}

/// The parts of a descriptor vmrepo uses.
#[derive(Clone, Debug, Default)]
pub struct Descriptor {
    pub cid: Option<u32>,
    pub parent_cid: Option<u32>,
    pub create_type: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v)
}

/// Parses a descriptor. Unknown lines are ignored, as VMware and QEMU do.
pub fn parse(text: &[u8]) -> Result<Descriptor> {
    // The descriptor ends at the first NUL (embedded descriptors are padded).
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let text = std::str::from_utf8(&text[..end])
        .map_err(|_| Error::malformed("the descriptor is not UTF-8 text"))?;
    let mut d = Descriptor::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            if !k.contains(' ') {
                let v = unquote(v);
                match k {
                    "CID" => d.cid = u32::from_str_radix(v, 16).ok(),
                    "parentCID" => d.parent_cid = u32::from_str_radix(v, 16).ok(),
                    "createType" => d.create_type = Some(v.to_string()),
                    "parentFileNameHint" => d.parent_hint = Some(v.to_string()),
                    _ => {}
                }
                continue;
            }
        }
        let access = line.split_whitespace().next().unwrap_or("");
        if matches!(access, "RW" | "RDONLY" | "NOACCESS") {
            ensure!(d.extents.len() < MAX_EXTENTS, "more than {MAX_EXTENTS} extents");
            d.extents.push(parse_extent(line).map_err(|e| e.context(format!("descriptor line {}", n + 1)))?);
        }
    }
    Ok(d)
}

fn parse_extent(line: &str) -> Result<ExtentLine> {
    let mut rest = line;
    let mut word = || {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (w, r) = rest.split_at(end);
        rest = r;
        w
    };
    let access = word().to_string();
    let sectors: u64 =
        word().parse().map_err(|_| Error::malformed("an extent line without a size in sectors"))?;
    let type_name = word().to_string();
    let kind = match type_name.as_str() {
        "SPARSE" => ExtentType::Sparse,
        "FLAT" => ExtentType::Flat,
        "ZERO" => ExtentType::Zero,
        "VMFS" => ExtentType::Flat,
        "VMFSSPARSE" | "SESPARSE" | "VMFSRDM" | "VMFSRAW" => ExtentType::Other,
        other => return Err(Error::malformed(format!("unknown extent type {other:?}"))),
    };
    let rest_t = rest.trim_start();
    let (file, after) = if let Some(q) = rest_t.strip_prefix('"') {
        let close =
            q.find('"').ok_or_else(|| Error::malformed("an extent file name without its closing quote"))?;
        (Some(q[..close].to_string()), &q[close + 1..])
    } else {
        (None, rest_t)
    };
    ensure!(kind == ExtentType::Zero || file.is_some(), "a {type_name} extent without a file name");
    let offset = match after.split_whitespace().next() {
        Some(o) => o.parse().map_err(|_| Error::malformed(format!("extent offset {o:?} is not a number")))?,
        None => 0,
    };
    Ok(ExtentLine { access, sectors, kind, type_name, file, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_and_vmware_descriptors() {
        let d = parse(
            b"# Disk DescriptorFile\nversion=1\nCID=1e2f3a4b\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\n# Extent description\nRW 4192256 FLAT \"disk-f001.vmdk\" 0\nRW 8192 FLAT \"disk with space-f002.vmdk\" 0\nRDONLY 100 ZERO\n\nddb.virtualHWVersion = \"4\"\n",
        )
        .unwrap();
        assert_eq!(d.cid, Some(0x1e2f3a4b));
        assert_eq!(d.parent_cid, Some(0xffffffff));
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentFlat"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[1].file.as_deref(), Some("disk with space-f002.vmdk"));
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
    }

    #[test]
    fn rejects_broken_extent_lines() {
        for bad in
            ["RW x FLAT \"a\"", "RW 10 WEIRD \"a\"", "RW 10 FLAT \"a", "RW 10 FLAT", "RW 10 FLAT \"a\" zz"]
        {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
