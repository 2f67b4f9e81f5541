//! LVM2 physical volumes: the label, the metadata area, the text metadata,
//! and the logical volumes it describes, mapped onto the physical volumes
//! (linear segments; Scientific Linux 5 and 6 installed their root as
//! VolGroup00/LogVol00 on a type 8e partition).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use vmrepo_format::bytes::{le32, le64};

use crate::error::{Error, Result};
use crate::view::{Dev, read_vec};

const SECTOR: u64 = 512;
/// The metadata area header's magic.
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// The metadata area header's size: circular metadata wraps to just after it.
const MDA_HEADER_SIZE: u64 = 512;
/// The largest metadata text read.
const MAX_METADATA: u64 = 1 << 20;
/// Nesting of the metadata text followed at most.
const MAX_DEPTH: usize = 32;
/// Logical volumes and segments read at most.
const MAX_LVS: usize = 256;
const MAX_SEGMENTS: usize = 1024;

/// A physical volume found on a device.
#[derive(Clone, Debug)]
pub struct PvLabel {
    /// The PV's UUID, 32 characters without dashes.
    pub uuid: String,
    /// The metadata text, if a metadata area holds one.
    pub metadata: Option<String>,
}

/// A logical volume, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct LogicalVolume {
    pub vg: String,
    pub name: String,
    pub size: u64,
    /// Why it could not be mapped (another segment type, a missing PV).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<String>,
}

/// Reads the LVM2 label of a device, if it is a physical volume.
///
/// # Errors
/// Reading the device fails.
pub fn read_label(dev: &dyn Dev) -> Result<Option<PvLabel>> {
    for sector in 0..4u64 {
        let Some(s) = read_vec(dev, sector * SECTOR, SECTOR as usize)? else { return Ok(None) };
        if &s[..8] != b"LABELONE" || &s[24..32] != b"LVM2 001" {
            continue;
        }
        let off = le32(&s, 20) as usize;
        if !(32..=SECTOR as usize - 40).contains(&off) {
            return Ok(None);
        }
        let uuid = String::from_utf8_lossy(&s[off..off + 32]).into_owned();
        // Data areas, then metadata areas: each list ends with a zero entry.
        let mut p = off + 40;
        let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            while p + 16 <= SECTOR as usize {
                let (o, sz) = (le64(&s, p), le64(&s, p + 8));
                p += 16;
                if o == 0 && sz == 0 {
                    break;
                }
                list.push((o, sz));
            }
        }
        let mut metadata = None;
        for &(mda_off, mda_size) in &lists[1] {
            if let Some(text) = read_metadata(dev, mda_off, mda_size)? {
                metadata = Some(text);
                break;
            }
        }
        return Ok(Some(PvLabel { uuid, metadata }));
    }
    Ok(None)
}

fn read_metadata(dev: &dyn Dev, mda_off: u64, mda_size: u64) -> Result<Option<String>> {
    let Some(h) = read_vec(dev, mda_off, MDA_HEADER_SIZE as usize)? else { return Ok(None) };
    if &h[4..20] != MDA_MAGIC {
        return Ok(None);
    }
    let start = le64(&h, 24);
    let size = le64(&h, 32).min(mda_size.max(le64(&h, 32)));
    // The first raw location is the current metadata.
    let (off, len) = (le64(&h, 40), le64(&h, 48));
    if off == 0 || len == 0 || len > MAX_METADATA || size <= MDA_HEADER_SIZE || off >= size {
        return Ok(None);
    }
    let (Some(at), Some(wrap)) = (start.checked_add(off), start.checked_add(MDA_HEADER_SIZE)) else {
        return Ok(None);
    };
    let first = len.min(size - off);
    let mut text = read_vec(dev, at, first as usize)?.unwrap_or_default();
    if first < len {
        // The circular buffer wraps to just after the header.
        let rest = read_vec(dev, wrap, (len - first) as usize)?.unwrap_or_default();
        text.extend_from_slice(&rest);
    }
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Ok(Some(String::from_utf8_lossy(&text[..end]).into_owned()))
}

/// A value of the metadata text.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Section(BTreeMap<String, Value>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(m) => m.get(key),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Parses LVM's metadata text (`name { key = value ... }`, lists, strings, comments).
///
/// # Errors
/// Malformed text, or nesting deeper than 32.
pub fn parse(text: &str) -> Result<Value> {
    let mut p = Parser { b: text.as_bytes(), i: 0 };
    let v = p.section(0, true)?;
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c == b'#' {
                while self.b.get(self.i).is_some_and(|&c| c != b'\n') {
                    self.i += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Option<String> {
        let s = self.i;
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(c)) {
            self.i += 1;
        }
        (self.i > s).then(|| String::from_utf8_lossy(&self.b[s..self.i]).into_owned())
    }

    fn section(&mut self, depth: usize, top: bool) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::new("LVM metadata nested too deep"));
        }
        let mut m = BTreeMap::new();
        loop {
            self.skip();
            match self.b.get(self.i) {
                None if top => return Ok(Value::Section(m)),
                None => return Err(Error::new("LVM metadata: a section is not closed")),
                Some(b'}') if !top => {
                    self.i += 1;
                    return Ok(Value::Section(m));
                }
                _ => {}
            }
            let key = self
                .ident()
                .ok_or_else(|| Error::new(format!("LVM metadata: unexpected text at byte {}", self.i)))?;
            self.skip();
            match self.b.get(self.i) {
                Some(b'{') => {
                    self.i += 1;
                    let v = self.section(depth + 1, false)?;
                    m.insert(key, v);
                }
                Some(b'=') => {
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    m.insert(key, v);
                }
                _ => return Err(Error::new(format!("LVM metadata: expected '=' or '{{' after {key:?}"))),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::new("LVM metadata nested too deep"));
        }
        self.skip();
        match self.b.get(self.i) {
            Some(b'"') => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.b.get(self.i) {
                        None => return Err(Error::new("LVM metadata: a string is not closed")),
                        Some(b'"') => {
                            self.i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            if let Some(&c) = self.b.get(self.i + 1) {
                                s.push(c);
                            }
                            self.i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip();
                    match self.b.get(self.i) {
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') => self.i += 1,
                        None => return Err(Error::new("LVM metadata: a list is not closed")),
                        _ => items.push(self.value(depth + 1)?),
                    }
                }
            }
            _ => {
                let word = self.ident().ok_or_else(|| Error::new("LVM metadata: a value is missing"))?;
                Ok(word.parse::<i64>().map(Value::Int).unwrap_or(Value::Str(word)))
            }
        }
    }
}

/// A stretch of a logical volume stored on a physical volume.
struct Segment {
    start: u64,
    len: u64,
    pv: Arc<dyn Dev>,
    pv_offset: u64,
}

/// A logical volume as a device.
pub struct LvDev {
    segments: Vec<Segment>,
    len: u64,
}

impl Dev for LvDev {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(Error::bounds(offset, buf.len(), self.len));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let seg = self
                .segments
                .iter()
                .find(|s| s.start <= pos && pos < s.start.saturating_add(s.len))
                .ok_or_else(|| Error::new(format!("no segment of the logical volume holds byte {pos}")))?;
            let within = pos - seg.start;
            let n = ((seg.len - within) as usize).min(buf.len() - done);
            let at = seg.pv_offset.checked_add(within).ok_or_else(|| {
                Error::new(format!("byte {pos} of the logical volume maps past any physical volume"))
            })?;
            seg.pv.read_at(&mut buf[done..done + n], at)?;
            done += n;
        }
        Ok(())
    }
}

/// The logical volumes of the volume groups whose metadata `pvs` carry, as
/// devices where their segments can be mapped. `pvs` pairs each PV's label
/// with its device.
pub fn logical_volumes(
    pvs: &[(PvLabel, Arc<dyn Dev>)],
    warnings: &mut Vec<String>,
) -> Vec<(LogicalVolume, Option<Arc<dyn Dev>>)> {
    let mut out = Vec::new();
    let mut seen_vgs = Vec::new();
    for (label, _) in pvs {
        let Some(text) = &label.metadata else { continue };
        let root = match parse(text) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(e.to_string());
                continue;
            }
        };
        let Value::Section(top) = &root else { continue };
        for (vg_name, vg) in top {
            if vg.get("physical_volumes").is_none() || seen_vgs.contains(vg_name) {
                continue;
            }
            seen_vgs.push(vg_name.clone());
            let extent =
                vg.int("extent_size").filter(|&e| e > 0).map_or(0, |e| (e as u64).saturating_mul(SECTOR));
            if extent == 0 {
                warnings.push(format!("volume group {vg_name}: no extent size"));
                continue;
            }
            let mut pv_map: BTreeMap<String, (Arc<dyn Dev>, u64)> = BTreeMap::new();
            if let Some(Value::Section(pvsec)) = vg.get("physical_volumes") {
                for (pv_name, pv) in pvsec {
                    let id = pv.str("id").unwrap_or("").replace('-', "");
                    let pe_start = (pv.int("pe_start").unwrap_or(0).max(0) as u64).saturating_mul(SECTOR);
                    if let Some((_, dev)) = pvs.iter().find(|(l, _)| l.uuid == id) {
                        pv_map.insert(pv_name.clone(), (Arc::clone(dev), pe_start));
                    }
                }
            }
            let Some(Value::Section(lvs)) = vg.get("logical_volumes") else { continue };
            for (lv_name, lv) in lvs.iter().take(MAX_LVS) {
                let mut segments = Vec::new();
                let mut problem = None;
                let count = lv.int("segment_count").unwrap_or(0).clamp(0, MAX_SEGMENTS as i64);
                let mut len = 0u64;
                for n in 1..=count {
                    let Some(seg) = lv.get(&format!("segment{n}")) else {
                        problem = Some(format!("segment{n} is missing"));
                        break;
                    };
                    let start = seg.int("start_extent").unwrap_or(-1);
                    let extents = seg.int("extent_count").unwrap_or(-1);
                    if start < 0 || extents <= 0 {
                        problem = Some(format!("segment{n} has no extents"));
                        break;
                    }
                    let (start, extents) = (start as u64, extents as u64);
                    len = len.max(start.saturating_add(extents).saturating_mul(extent));
                    let ty = seg.str("type").unwrap_or("");
                    let stripes = seg.int("stripe_count").unwrap_or(0);
                    if ty != "striped" || stripes != 1 {
                        problem = Some(format!(
                            "segment{n} is of type {ty} with {stripes} stripes; only linear segments are read"
                        ));
                        continue;
                    }
                    let Some(Value::List(st)) = seg.get("stripes") else {
                        problem = Some(format!("segment{n} lists no stripes"));
                        continue;
                    };
                    let (Some(Value::Str(pv)), Some(Value::Int(pv_extent))) = (st.first(), st.get(1)) else {
                        problem = Some(format!("segment{n}: malformed stripes"));
                        continue;
                    };
                    let Some((dev, pe_start)) = pv_map.get(pv) else {
                        problem = Some(format!("its physical volume {pv} is not in this image"));
                        continue;
                    };
                    let pv_offset =
                        pe_start.saturating_add(((*pv_extent).max(0) as u64).saturating_mul(extent));
                    segments.push(Segment {
                        start: start.saturating_mul(extent),
                        len: extents.saturating_mul(extent),
                        pv: Arc::clone(dev),
                        pv_offset,
                    });
                }
                let info = LogicalVolume {
                    vg: vg_name.clone(),
                    name: lv_name.clone(),
                    size: len,
                    unmapped: problem.clone(),
                };
                let dev: Option<Arc<dyn Dev>> = if problem.is_none() && !segments.is_empty() {
                    Some(Arc::new(LvDev { segments, len }))
                } else {
                    warnings.push(format!(
                        "logical volume {vg_name}/{lv_name} is not read: {}",
                        problem.unwrap_or_default()
                    ));
                    None
                };
                out.push((info, dev));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvm_metadata() {
        let text = r#"VolGroup00 {
id = "abc"
seqno = 3
extent_size = 65536   # 32 MiB
physical_volumes {
  pv0 { id = "Aaaa-bbbb" device = "/dev/sda2" pe_start = 384 pe_count = 100 }
}
logical_volumes {
  LogVol00 {
    status = ["READ", "WRITE", "VISIBLE"]
    segment_count = 1
    segment1 { start_extent = 0 extent_count = 90 type = "striped" stripe_count = 1 stripes = [ "pv0", 0 ] }
  }
}
}
contents = "Text Format Volume Group"
"#;
        let v = parse(text).unwrap();
        let vg = v.get("VolGroup00").unwrap();
        assert_eq!(vg.int("extent_size"), Some(65536));
        let seg = vg.get("logical_volumes").unwrap().get("LogVol00").unwrap().get("segment1").unwrap();
        assert_eq!(seg.get("stripes"), Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(0)])));
        for bad in ["a {", "a = \"x", "a = [1, 2", "= 3", &"a { ".repeat(100)] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
