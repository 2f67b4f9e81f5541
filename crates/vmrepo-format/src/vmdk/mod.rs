//! VMDK: monolithicSparse, streamOptimized (also with the grain directory at
//! the end), monolithicFlat, twoGbMaxExtentSparse and twoGbMaxExtentFlat, with
//! their descriptor and extent files; deflate-compressed grains.

mod descriptor;
mod sparse;
pub(crate) mod writer;

use std::sync::Arc;

use serde_json::json;

use crate::check::CheckReport;
use crate::detect::VMDK4_MAGIC;
use crate::disk::{Disk, MapExtent, check_range};
use crate::error::{Error, ErrorKind, Result};
use crate::info::{ExtentInfo, Info, Storage};
use crate::raw::RawDisk;
use crate::source::{Resolver, Source, read_into, read_vec};
use crate::{Format, OpenOptions, Opened};

use descriptor::{Descriptor, ExtentType};
use sparse::SparseExtent;

const SECTOR: u64 = 512;
/// The largest virtual size accepted (2^61 bytes).
const MAX_SIZE: u64 = 1 << 61;

/// An opened extent: where it starts, its disk, what it says of itself.
type Part = (u64, Box<dyn Disk>, ExtentInfo);

/// A disk made of extents laid end to end.
struct Extents {
    parts: Vec<(u64, Box<dyn Disk>)>,
    size: u64,
}

/// Reads as zeros (a ZERO extent).
struct ZeroDisk(u64);

impl Disk for ZeroDisk {
    fn size(&self) -> u64 {
        self.0
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.0, offset, buf.len())?;
        buf.fill(0);
        Ok(())
    }
    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        Ok(MapExtent::zeroed(offset, max_len.min(self.0.saturating_sub(offset))))
    }
}

impl Extents {
    fn part_at(&self, pos: u64) -> Option<(u64, &dyn Disk)> {
        let i = self.parts.partition_point(|(start, _)| *start <= pos).checked_sub(1)?;
        self.parts.get(i).map(|(s, d)| (*s, d.as_ref()))
    }
}

impl Disk for Extents {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (start, part) =
                self.part_at(pos).ok_or_else(|| Error::malformed("no extent holds this offset"))?;
            let within = pos - start;
            let n =
                usize::try_from((part.size() - within).min((buf.len() - done) as u64)).unwrap_or(0).max(1);
            part.read_at(&mut buf[done..done + n], within)?;
            done += n;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let (start, part) =
            self.part_at(offset).ok_or_else(|| Error::malformed("no extent holds this offset"))?;
        let within = offset - start;
        let mut e = part.status(within, max_len.min(part.size() - within))?;
        e.start = offset;
        Ok(e)
    }

    fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport { checked: "tables", ..Default::default() };
        for (i, (_, p)) in self.parts.iter().enumerate() {
            let c = p.check()?;
            r.allocated = r.allocated.saturating_add(c.allocated);
            for prob in c.problems {
                r.problem(format!("extent {i}: {prob}"));
            }
        }
        Ok(r)
    }
}

pub(crate) fn open(src: Arc<dyn Source>, resolver: &dyn Resolver) -> Result<Opened> {
    let mut magic = [0u8; 4];
    read_into(src.as_ref(), &mut magic, 0, "the VMDK header")?;
    if magic == VMDK4_MAGIC { open_monolithic(src, resolver) } else { open_descriptor(src, resolver) }
}

fn base_info(src: &dyn Source, d: &Descriptor, size: u64) -> Info {
    let mut info = Info::new(src.name(), Format::Vmdk, size, src.len(), src.allocated());
    info.subformat = d.create_type.clone();
    info.backing_filename = d.parent_hint.clone();
    info
}

fn specific(d: &Descriptor, extents: &[ExtentInfo]) -> serde_json::Value {
    let exts: Vec<serde_json::Value> = extents
        .iter()
        .map(|e| {
            let mut m = serde_json::Map::new();
            if e.compressed {
                m.insert("compressed".into(), json!(true));
            }
            m.insert("virtual-size".into(), json!(e.virtual_size));
            m.insert("filename".into(), json!(e.filename));
            if let Some(c) = e.cluster_size {
                m.insert("cluster-size".into(), json!(c));
            }
            m.insert("format".into(), json!(e.format));
            serde_json::Value::Object(m)
        })
        .collect();
    json!({ "type": "vmdk", "data": {
        "cid": d.cid.unwrap_or(0),
        "parent-cid": d.parent_cid.unwrap_or(u32::MAX),
        "create-type": d.create_type.clone().unwrap_or_default(),
        "extents": exts,
    }})
}

/// The parent disk of a differencing image, opened only when following.
fn parent_disk(d: &Descriptor, resolver: &dyn Resolver) -> Result<Option<Arc<dyn Disk>>> {
    let Some(hint) = &d.parent_hint else { return Ok(None) };
    let child = resolver.descend(hint)?;
    let psrc = resolver.open(hint, "parent image")?;
    let img = crate::open_source(psrc, child.as_ref(), &OpenOptions { follow: true, format: None })?;
    Ok(Some(Arc::from(img.disk.map_err(|e| e.context(format!("parent {hint}")))?)))
}

/// A single sparse file: monolithicSparse or streamOptimized.
fn open_monolithic(src: Arc<dyn Source>, resolver: &dyn Resolver) -> Result<Opened> {
    let hdr = sparse::read_header(src.as_ref())?;
    let mut d = match sparse::embedded_descriptor(src.as_ref(), &hdr)? {
        Some(text) => descriptor::parse(&text).unwrap_or_default(),
        None => Descriptor::default(),
    };
    if d.create_type.is_none() {
        d.create_type = Some(if hdr.compressed() { "streamOptimized" } else { "monolithicSparse" }.into());
    }
    let size = hdr.capacity * SECTOR;
    let mut info = base_info(src.as_ref(), &d, size);
    info.cluster_size = Some(hdr.grain_bytes());
    info.storage = Storage::Dynamic;
    if hdr.compressed() {
        info.compression = Some("deflate".into());
    }
    if hdr.unclean {
        info.warnings.push("the unclean-shutdown flag is set".into());
    }
    let name = src.name().rsplit('/').next().unwrap_or("").to_string();
    let ext = ExtentInfo {
        filename: name,
        format: String::new(),
        virtual_size: size,
        cluster_size: Some(hdr.grain_bytes()),
        compressed: hdr.compressed(),
        access: "RW".into(),
        offset: None,
    };
    let mut fs = specific(&d, std::slice::from_ref(&ext));
    if let Some(data) = fs.get_mut("data").and_then(|v| v.as_object_mut()) {
        // VMware's streamOptimized images keep the grain directory after the grains.
        data.insert("grain-directory-at-end".into(), json!(hdr.footer));
    }
    info.format_specific = Some(fs);
    info.extents = vec![ext];
    let parent = parent_disk(&d, resolver);
    let extent_plain = SparseExtent::new(Arc::clone(&src), hdr.clone(), size, None)?;
    info.allocated_size =
        extent_plain.allocated_bytes().map_err(|e| info.warnings.push(format!("allocation: {e}"))).ok();
    let disk: Result<Box<dyn Disk>> = match parent {
        Ok(None) => Ok(Box::new(extent_plain)),
        Ok(Some(p)) => SparseExtent::new(src, hdr, size, Some(p)).map(|e| Box::new(e) as Box<dyn Disk>),
        Err(e) => Err(e),
    };
    Ok(Opened { info, disk })
}

/// A descriptor file naming its extents.
fn open_descriptor(src: Arc<dyn Source>, resolver: &dyn Resolver) -> Result<Opened> {
    if src.len() > descriptor::MAX_DESCRIPTOR {
        return Err(Error::too_large(format!("a VMDK descriptor of {} bytes", src.len())));
    }
    let text = read_vec(src.as_ref(), 0, src.len(), "the descriptor")?;
    let d = descriptor::parse(&text)?;
    if d.extents.is_empty() {
        return Err(Error::malformed("the descriptor lists no extent"));
    }
    let mut size = 0u64;
    for e in &d.extents {
        size = e
            .sectors
            .checked_mul(SECTOR)
            .and_then(|b| size.checked_add(b))
            .filter(|s| *s <= MAX_SIZE)
            .ok_or_else(|| Error::malformed("the extents add up to more than 2^61 bytes"))?;
    }
    let mut info = base_info(src.as_ref(), &d, size);
    let all_flat = d.extents.iter().all(|e| matches!(e.kind, ExtentType::Flat | ExtentType::Zero));
    info.storage = if all_flat { Storage::Fixed } else { Storage::Dynamic };
    // The parts: opened only when following (the resolver says so).
    let opened: Result<Vec<Part>> = (|| {
        let parent = parent_disk(&d, resolver)?;
        let mut parts = Vec::new();
        let mut start = 0u64;
        for e in &d.extents {
            let bytes = e.sectors * SECTOR;
            let name = e.file.clone().unwrap_or_default();
            let mut ei = ExtentInfo {
                filename: name.clone(),
                format: e.type_name.clone(),
                virtual_size: bytes,
                cluster_size: None,
                compressed: false,
                access: e.access.clone(),
                offset: (e.kind == ExtentType::Flat).then_some(e.offset * SECTOR),
            };
            let part: Box<dyn Disk> = match e.kind {
                ExtentType::Zero => Box::new(ZeroDisk(bytes)),
                ExtentType::Flat => {
                    let s = resolver.open(&name, "extent")?;
                    let base = e
                        .offset
                        .checked_mul(SECTOR)
                        .ok_or_else(|| Error::malformed("extent offset overflows"))?;
                    Box::new(RawDisk::new(s, base, bytes, true))
                }
                ExtentType::Sparse => {
                    let s = resolver.open(&name, "extent")?;
                    let hdr =
                        sparse::read_header(s.as_ref()).map_err(|er| er.context(format!("extent {name}")))?;
                    ei.cluster_size = Some(hdr.grain_bytes());
                    ei.compressed = hdr.compressed();
                    let parent_part = parent.as_ref().map(|p| {
                        Arc::new(Offset { inner: Arc::clone(p), start, size: bytes }) as Arc<dyn Disk>
                    });
                    Box::new(SparseExtent::new(s, hdr, bytes, parent_part)?)
                }
                ExtentType::Other => return Err(Error::unsupported(format!("{} extents", e.type_name))),
            };
            parts.push((start, part, ei));
            start += bytes;
        }
        Ok(parts)
    })();
    for e in &d.extents {
        if let Some(f) = &e.file
            && let Some(a) = resolver.allocated(f)
        {
            info.actual_size = info.actual_size.saturating_add(a);
        }
    }
    let disk: Result<Box<dyn Disk>> = match opened {
        Ok(parts) => {
            info.extents = parts.iter().map(|(_, _, ei)| ei.clone()).collect();
            info.cluster_size = info.extents.iter().find_map(|e| e.cluster_size);
            if info.extents.iter().any(|e| e.compressed) {
                info.compression = Some("deflate".into());
            }
            let mut alloc = 0u64;
            for (_, p, _) in &parts {
                alloc = alloc.saturating_add(p.check().map(|c| c.allocated).unwrap_or(0));
            }
            info.allocated_size = Some(alloc);
            Ok(Box::new(Extents { parts: parts.into_iter().map(|(s, p, _)| (s, p)).collect(), size }))
        }
        Err(e) => {
            info.extents = d
                .extents
                .iter()
                .map(|e| ExtentInfo {
                    filename: e.file.clone().unwrap_or_default(),
                    format: e.type_name.clone(),
                    virtual_size: e.sectors * SECTOR,
                    cluster_size: None,
                    compressed: false,
                    access: e.access.clone(),
                    offset: (e.kind == ExtentType::Flat).then_some(e.offset * SECTOR),
                })
                .collect();
            if e.kind() != ErrorKind::NeedsReferenced {
                info.warnings.push(e.to_string());
            }
            Err(e)
        }
    };
    info.format_specific = Some(specific(&d, &info.extents));
    Ok(Opened { info, disk })
}

/// A window `[start, start + size)` of another disk (the parent's part
/// behind one extent of a child).
struct Offset {
    inner: Arc<dyn Disk>,
    start: u64,
    size: u64,
}

impl Disk for Offset {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let pos = self.start + offset;
        let k = usize::try_from(self.inner.size().saturating_sub(pos).min(buf.len() as u64)).unwrap_or(0);
        if k > 0 {
            self.inner.read_at(&mut buf[..k], pos)?;
        }
        buf[k..].fill(0);
        Ok(())
    }
    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let mut e = self.inner.status(self.start + offset, max_len)?;
        e.start = offset;
        Ok(e)
    }
}
