//! A small ISO 9660 writer for cloud-init NoCloud seeds.
//!
//! [`write()`] writes what `genisoimage -volid cidata -joliet -rock FILES...`
//! (the tool behind `cloud-localds`) writes for a flat folder of files:
//!
//! - sectors 0 to 15 empty (the system area);
//! - sector 16, the primary volume descriptor (the volume identifier, such as
//!   `cidata`, which `blkid` reports as the label);
//! - sector 17, a Joliet supplementary volume descriptor (escape sequence
//!   `%/E`, UCS-2 level 3, names in UCS-2 big-endian);
//! - sector 18, the volume descriptor set terminator;
//! - sectors 19 to 22, the L and M path tables of the primary tree and of the
//!   Joliet tree (one folder each: the root);
//! - the primary root folder: ISO 9660 level 1 names (`META_DAT.;1`), each
//!   record with Rock Ridge (RRIP 1.09) entries giving the real name (`NM`),
//!   mode, links, owner (`PX`) and times (`TF`); its `.` record starts with
//!   the SUSP `SP` entry and points (`CE`) to a continuation sector holding
//!   the `ER` entry `RRIP_1991A`;
//! - the Joliet root folder, with the real names;
//! - the continuation sector;
//! - each file's data, from a sector boundary, in the order given;
//! - zeros up to [`MIN_SECTORS`], for small images.
//!
//! The layout is computed first, then the image is written through the given
//! writer in one pass, sector after sector, never seeking. The same inputs
//! give the same bytes: every date is one fixed time ([`FIXED_TIME`], or the
//! one given to [`write_at`]).
//!
//! Names are checked ([`MAX_NAME_UTF16`], [`MAX_NAME_BYTES`], no control
//! characters nor any of `/\*:;?`, no duplicates) so that Rock Ridge and
//! Joliet hold them unchanged; sizes and positions are checked to fit the
//! format's 32 bits ([`MAX_FILES`], [`MAX_TOTAL`]).

use std::collections::BTreeSet;
use std::io::{self, Write};

/// A file of the image's root folder.
#[derive(Clone, Copy, Debug)]
pub struct File<'a> {
    /// The file's name as Rock Ridge and Joliet readers show it (`meta-data`).
    pub name: &'a str,
    /// The file's bytes.
    pub data: &'a [u8],
}

/// The size of a logical sector and block.
pub const SECTOR: usize = 2048;
/// The most files in an image (a seed has three or four).
pub const MAX_FILES: usize = 1024;
/// The longest name, in UTF-16 code units: Joliet's 64 characters.
pub const MAX_NAME_UTF16: usize = 64;
/// The longest name in UTF-8 bytes, so that a Rock Ridge `NM` entry and the
/// rest of the record fit the 255 bytes of a directory record.
pub const MAX_NAME_BYTES: usize = 128;
/// The most bytes of file data in an image: every size and sector number
/// stays within the format's 32 bits.
pub const MAX_TOTAL: u64 = u32::MAX as u64;
/// The longest volume identifier (the primary descriptor's field; Joliet's
/// holds the first 16 characters).
pub const MAX_VOLUME_ID: usize = 32;
/// The fewest sectors of an image (128 KiB): a smaller one is padded with
/// zeros, inside the volume. busybox's `findfs`/`blkid` read 68 KiB before
/// they look for a file system and find nothing in a smaller device
/// (genisoimage pads every image with 300 KiB).
pub const MIN_SECTORS: u32 = 64;
/// The time [`write()`] puts in every date: 2000-01-01 00:00:00 UTC.
pub const FIXED_TIME: i64 = 946_684_800;

/// Files' Rock Ridge mode: regular, read by the owner (root) only, since a
/// seed's user-data may hold secrets.
const FILE_MODE: u32 = 0o100_400;
/// The root folder's Rock Ridge mode.
const DIR_MODE: u32 = 0o040_755;

const PVD: u32 = 16;
const L_PATH: u32 = 19;
const M_PATH: u32 = 20;
const JOLIET_L_PATH: u32 = 21;
const JOLIET_M_PATH: u32 = 22;
/// The first sector of the primary root folder.
const FIRST_DIR: u32 = 23;
/// The bytes of a path table that lists the root alone.
const PATH_TABLE_LEN: u32 = 10;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DES: &[u8] = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// Writes an ISO 9660 image with Joliet and Rock Ridge holding `files` in
/// its root folder, every date [`FIXED_TIME`].
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] for a bad volume identifier or name, a
/// duplicate name, too many files or bytes (nothing is written then); the
/// writer's errors.
pub fn write<W: Write>(out: W, volume_id: &str, files: &[File<'_>]) -> io::Result<()> {
    write_at(out, volume_id, files, FIXED_TIME)
}

/// [`write()`] with every date `unix_time` (seconds since 1970, UTC; from 1970
/// to 2155, what the format's dates hold).
///
/// # Errors
/// As [`write()`], and [`io::ErrorKind::InvalidInput`] for a time out of range.
pub fn write_at<W: Write>(mut out: W, volume_id: &str, files: &[File<'_>], unix_time: i64) -> io::Result<()> {
    let sizes: Vec<(&str, u64)> = files.iter().map(|f| (f.name, f.data.len() as u64)).collect();
    let layout = Layout::new(volume_id, &sizes, unix_time)?;
    layout.write(&mut out, files)?;
    out.flush()
}

/// The size in bytes of the image [`write()`] writes for these inputs.
///
/// # Errors
/// As [`write()`] for bad inputs.
pub fn image_len(volume_id: &str, files: &[File<'_>]) -> io::Result<u64> {
    let sizes: Vec<(&str, u64)> = files.iter().map(|f| (f.name, f.data.len() as u64)).collect();
    let layout = Layout::new(volume_id, &sizes, FIXED_TIME)?;
    Ok(u64::from(layout.total) * SECTOR as u64)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// One file's place in the image.
struct Entry<'a> {
    name: &'a str,
    size: u32,
    /// The level 1 identifier with its version (`META_DAT.;1`).
    iso_id: Vec<u8>,
    /// The Joliet identifier, UCS-2 big-endian, without a version (as
    /// genisoimage writes it).
    joliet_id: Vec<u8>,
    extent: u32,
}

struct Layout<'a> {
    volume_id: &'a str,
    time: Civil,
    /// In the order given, which is the order of the data.
    entries: Vec<Entry<'a>>,
    /// Indexes into `entries` in each folder's order.
    primary_order: Vec<usize>,
    joliet_order: Vec<usize>,
    primary_sectors: u32,
    joliet_dir: u32,
    joliet_sectors: u32,
    continuation: u32,
    /// The sector after the last file's data.
    data_end: u32,
    /// The sectors of the image, padding included.
    total: u32,
}

impl<'a> Layout<'a> {
    fn new(volume_id: &'a str, files: &[(&'a str, u64)], unix_time: i64) -> io::Result<Layout<'a>> {
        check_volume_id(volume_id)?;
        let time = Civil::from_unix(unix_time)?;
        if files.len() > MAX_FILES {
            return Err(invalid(format!("{} files: an image holds at most {MAX_FILES}", files.len())));
        }
        let mut names = BTreeSet::new();
        let mut isos = BTreeSet::new();
        let mut entries = Vec::with_capacity(files.len());
        let mut total_bytes: u64 = 0;
        for &(name, len) in files {
            check_name(name)?;
            if !names.insert(name) {
                return Err(invalid(format!("{name:?}: the name is given twice")));
            }
            total_bytes = total_bytes
                .checked_add(len)
                .filter(|&t| t <= MAX_TOTAL)
                .ok_or_else(|| invalid(format!("{name:?}: the files hold more than {MAX_TOTAL} bytes")))?;
            let size =
                u32::try_from(len).map_err(|_| invalid(format!("{name:?}: {len} bytes is too big")))?;
            let iso_id = unique_iso_id(name, &mut isos)?;
            let joliet_id: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
            entries.push(Entry { name, size, iso_id, joliet_id, extent: 0 });
        }
        let mut primary_order: Vec<usize> = (0..entries.len()).collect();
        primary_order.sort_by(|&a, &b| iso_order(&entries[a].iso_id, &entries[b].iso_id));
        let mut joliet_order: Vec<usize> = (0..entries.len()).collect();
        joliet_order.sort_by(|&a, &b| entries[a].joliet_id.cmp(&entries[b].joliet_id));

        let mut layout = Layout {
            volume_id,
            time,
            entries,
            primary_order,
            joliet_order,
            primary_sectors: 0,
            joliet_dir: 0,
            joliet_sectors: 0,
            continuation: 0,
            data_end: 0,
            total: 0,
        };
        // Record lengths do not depend on positions: count the folders'
        // sectors with the positions still zero, then place everything.
        layout.primary_sectors = sectors_of(&layout.records(false)?)?;
        layout.joliet_sectors = sectors_of(&layout.records(true)?)?;
        let overflow = || invalid("the image is too big".to_string());
        layout.joliet_dir = FIRST_DIR.checked_add(layout.primary_sectors).ok_or_else(overflow)?;
        layout.continuation = layout.joliet_dir.checked_add(layout.joliet_sectors).ok_or_else(overflow)?;
        let mut next = layout.continuation.checked_add(1).ok_or_else(overflow)?;
        for e in &mut layout.entries {
            let n = e.size.div_ceil(SECTOR as u32);
            // An empty file has no sector: it points where the next data
            // goes, as genisoimage does.
            e.extent = next;
            next = next.checked_add(n).ok_or_else(overflow)?;
        }
        layout.data_end = next;
        layout.total = next.max(MIN_SECTORS);
        // Empty files after the last data, in an image without padding,
        // would point past the end: they point at sector 0 instead.
        for e in &mut layout.entries {
            if e.extent >= layout.total {
                e.extent = 0;
            }
        }
        Ok(layout)
    }

    /// The records of the primary (`joliet` false) or Joliet root folder,
    /// `.` and `..` first.
    fn records(&self, joliet: bool) -> io::Result<Vec<Vec<u8>>> {
        let t = self.time.dir_time();
        let (dir, sectors) =
            if joliet { (self.joliet_dir, self.joliet_sectors) } else { (FIRST_DIR, self.primary_sectors) };
        let dir_len =
            sectors.checked_mul(SECTOR as u32).ok_or_else(|| invalid("the folder is too big".into()))?;
        let mut out = Vec::with_capacity(self.entries.len() + 2);
        let (dot_su, dotdot_su) = if joliet {
            (Vec::new(), Vec::new())
        } else {
            let mut dot = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
            dot.extend_from_slice(&[b'R', b'R', 5, 1, 0x81]);
            dot.extend_from_slice(&px(DIR_MODE, 2));
            dot.extend_from_slice(&tf(&t));
            dot.extend_from_slice(&ce(self.continuation, er().len()));
            let mut dotdot = vec![b'R', b'R', 5, 1, 0x81];
            dotdot.extend_from_slice(&px(DIR_MODE, 2));
            dotdot.extend_from_slice(&tf(&t));
            (dot, dotdot)
        };
        out.push(dir_record(dir, dir_len, 2, &[0], &dot_su, &t)?);
        out.push(dir_record(dir, dir_len, 2, &[1], &dotdot_su, &t)?);
        let order = if joliet { &self.joliet_order } else { &self.primary_order };
        for &i in order {
            let Some(e) = self.entries.get(i) else { continue };
            let rec = if joliet {
                dir_record(e.extent, e.size, 0, &e.joliet_id, &[], &t)?
            } else {
                let nm = e.name.as_bytes();
                let mut su = vec![b'R', b'R', 5, 1, 0x89];
                let nm_len =
                    u8::try_from(5 + nm.len()).map_err(|_| invalid(format!("{:?}: too long", e.name)))?;
                su.extend_from_slice(&[b'N', b'M', nm_len, 1, 0]);
                su.extend_from_slice(nm);
                su.extend_from_slice(&px(FILE_MODE, 1));
                su.extend_from_slice(&tf(&t));
                dir_record(e.extent, e.size, 0, &e.iso_id, &su, &t)?
            };
            out.push(rec);
        }
        Ok(out)
    }

    fn write<W: Write>(&self, out: &mut W, files: &[File<'_>]) -> io::Result<()> {
        let zero = [0u8; SECTOR];
        for _ in 0..PVD {
            out.write_all(&zero)?;
        }
        out.write_all(&self.volume_descriptor(false))?;
        out.write_all(&self.volume_descriptor(true))?;
        let mut term = [0u8; SECTOR];
        term[0] = 255;
        term[1..6].copy_from_slice(b"CD001");
        term[6] = 1;
        out.write_all(&term)?;
        out.write_all(&path_table(FIRST_DIR, false))?;
        out.write_all(&path_table(FIRST_DIR, true))?;
        out.write_all(&path_table(self.joliet_dir, false))?;
        out.write_all(&path_table(self.joliet_dir, true))?;
        write_folder(out, &self.records(false)?)?;
        write_folder(out, &self.records(true)?)?;
        let er = er();
        out.write_all(&er)?;
        out.write_all(&zero[er.len()..])?;
        for f in files {
            out.write_all(f.data)?;
            let tail = f.data.len() % SECTOR;
            if tail != 0 {
                out.write_all(&zero[tail..])?;
            }
        }
        for _ in self.data_end..self.total {
            out.write_all(&zero)?;
        }
        Ok(())
    }

    /// The primary volume descriptor, or the Joliet supplementary one.
    fn volume_descriptor(&self, joliet: bool) -> [u8; SECTOR] {
        let mut d = [0u8; SECTOR];
        d[0] = if joliet { 2 } else { 1 };
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        let text = |d: &mut [u8; SECTOR], at: usize, len: usize, s: &str| {
            let field = &mut d[at..at + len];
            if joliet {
                for (i, pair) in field.chunks_exact_mut(2).enumerate() {
                    let c = s.encode_utf16().nth(i).unwrap_or(0x20);
                    pair.copy_from_slice(&c.to_be_bytes());
                }
            } else {
                field.fill(b' ');
                for (dst, src) in field.iter_mut().zip(s.bytes()) {
                    *dst = src;
                }
            }
        };
        text(&mut d, 8, 32, "LINUX");
        text(&mut d, 40, 32, self.volume_id);
        d[80..88].copy_from_slice(&both32(self.total));
        if joliet {
            d[88..91].copy_from_slice(b"%/E");
        }
        d[120..124].copy_from_slice(&both16(1));
        d[124..128].copy_from_slice(&both16(1));
        d[128..132].copy_from_slice(&both16(SECTOR as u16));
        d[132..140].copy_from_slice(&both32(PATH_TABLE_LEN));
        let (l, m, dir, sectors) = if joliet {
            (JOLIET_L_PATH, JOLIET_M_PATH, self.joliet_dir, self.joliet_sectors)
        } else {
            (L_PATH, M_PATH, FIRST_DIR, self.primary_sectors)
        };
        d[140..144].copy_from_slice(&l.to_le_bytes());
        d[148..152].copy_from_slice(&m.to_be_bytes());
        // The root's record: 34 bytes, no system use field.
        let t = self.time.dir_time();
        if let Ok(root) = dir_record(dir, sectors.saturating_mul(SECTOR as u32), 2, &[0], &[], &t) {
            d[156..156 + root.len().min(34)].copy_from_slice(&root[..root.len().min(34)]);
        }
        text(&mut d, 190, 128, "");
        text(&mut d, 318, 128, "");
        text(&mut d, 446, 128, "");
        text(&mut d, 574, 128, "VMREPO");
        text(&mut d, 702, 37, "");
        text(&mut d, 739, 37, "");
        text(&mut d, 776, 37, "");
        let vt = self.time.volume_time();
        d[813..830].copy_from_slice(&vt);
        d[830..847].copy_from_slice(&vt);
        d[847..863].copy_from_slice(b"0000000000000000");
        d[864..880].copy_from_slice(b"0000000000000000");
        d[881] = 1;
        d
    }
}

/// A folder's records, in sectors: a record never crosses a sector.
fn write_folder<W: Write>(out: &mut W, records: &[Vec<u8>]) -> io::Result<()> {
    let mut sector = [0u8; SECTOR];
    let mut at = 0;
    for r in records {
        if at + r.len() > SECTOR {
            out.write_all(&sector)?;
            sector = [0u8; SECTOR];
            at = 0;
        }
        sector[at..at + r.len()].copy_from_slice(r);
        at += r.len();
    }
    out.write_all(&sector)
}

/// How many sectors the records take: a record never crosses a sector.
fn sectors_of(records: &[Vec<u8>]) -> io::Result<u32> {
    let mut sectors: u32 = 1;
    let mut at = 0;
    for r in records {
        if at + r.len() > SECTOR {
            sectors = sectors.checked_add(1).ok_or_else(|| invalid("the folder is too big".into()))?;
            at = 0;
        }
        at += r.len();
    }
    Ok(sectors)
}

/// A directory record (ECMA-119 9.1) with its system use field `su`.
fn dir_record(extent: u32, size: u32, flags: u8, id: &[u8], su: &[u8], t: &[u8; 7]) -> io::Result<Vec<u8>> {
    let id_len = u8::try_from(id.len()).map_err(|_| invalid("a name is too long".into()))?;
    let mut r = Vec::with_capacity(34 + id.len() + su.len());
    r.push(0);
    r.push(0);
    r.extend_from_slice(&both32(extent));
    r.extend_from_slice(&both32(size));
    r.extend_from_slice(t);
    r.push(flags);
    r.push(0);
    r.push(0);
    r.extend_from_slice(&both16(1));
    r.push(id_len);
    r.extend_from_slice(id);
    if id.len().is_multiple_of(2) {
        r.push(0);
    }
    r.extend_from_slice(su);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] =
        u8::try_from(r.len()).map_err(|_| invalid("a directory record is longer than 255 bytes".into()))?;
    Ok(r)
}

/// A path table listing the root folder at `extent`, little-endian (L) or
/// big-endian (M), in its own sector.
fn path_table(extent: u32, big_endian: bool) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    s[0] = 1;
    if big_endian {
        s[2..6].copy_from_slice(&extent.to_be_bytes());
        s[6..8].copy_from_slice(&1u16.to_be_bytes());
    } else {
        s[2..6].copy_from_slice(&extent.to_le_bytes());
        s[6..8].copy_from_slice(&1u16.to_le_bytes());
    }
    s
}

/// Rock Ridge `PX` (RRIP 1.09, 36 bytes): mode, links, user and group 0.
fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut v = vec![b'P', b'X', 36, 1];
    v.extend_from_slice(&both32(mode));
    v.extend_from_slice(&both32(links));
    v.extend_from_slice(&both32(0));
    v.extend_from_slice(&both32(0));
    v
}

/// Rock Ridge `TF`: modification, access and attribute change times.
fn tf(t: &[u8; 7]) -> Vec<u8> {
    let mut v = vec![b'T', b'F', 5 + 3 * 7, 1, 0x0E];
    for _ in 0..3 {
        v.extend_from_slice(t);
    }
    v
}

/// SUSP `CE`: the continuation area at `block`, offset 0, `len` bytes.
fn ce(block: u32, len: usize) -> Vec<u8> {
    let mut v = vec![b'C', b'E', 28, 1];
    v.extend_from_slice(&both32(block));
    v.extend_from_slice(&both32(0));
    v.extend_from_slice(&both32(u32::try_from(len).unwrap_or(0)));
    v
}

/// SUSP `ER`: the extension in use, Rock Ridge 1.09 (`RRIP_1991A`).
fn er() -> Vec<u8> {
    let mut v = vec![b'E', b'R', 0, 1, ER_ID.len() as u8, ER_DES.len() as u8, ER_SRC.len() as u8, 1];
    v.extend_from_slice(ER_ID);
    v.extend_from_slice(ER_DES);
    v.extend_from_slice(ER_SRC);
    v[2] = u8::try_from(v.len()).unwrap_or(0);
    v
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// Letters, digits, `_`, `-` and `.`, 1 to 32 of them. (ISO 9660's
/// d-characters are upper case; genisoimage and blkid take `cidata` as is,
/// and cloud-init looks for it in lower case.)
fn check_volume_id(v: &str) -> io::Result<()> {
    if v.is_empty() || v.len() > MAX_VOLUME_ID {
        return Err(invalid(format!("volume identifier {v:?}: 1 to {MAX_VOLUME_ID} characters")));
    }
    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(invalid(format!("volume identifier {v:?}: only letters, digits, '_', '-' and '.'")));
    }
    Ok(())
}

/// A name that Rock Ridge and Joliet hold unchanged.
fn check_name(name: &str) -> io::Result<()> {
    let bad = |why: &str| Err(invalid(format!("file name {name:?}: {why}")));
    if name.is_empty() || name == "." || name == ".." {
        return bad("not a file name");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(&format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.encode_utf16().count() > MAX_NAME_UTF16 {
        return bad(&format!("longer than {MAX_NAME_UTF16} characters"));
    }
    for c in name.chars() {
        if c.is_control() || matches!(c, '/' | '\\' | '*' | ':' | ';' | '?') {
            return bad(&format!("holds {c:?}"));
        }
        if u32::from(c) > 0xFFFF {
            return bad(&format!("holds {c:?}, outside what Joliet's UCS-2 holds"));
        }
    }
    Ok(())
}

/// The level 1 identifier for `name` (8 d-characters, a dot, 3, `;1`):
/// upper case, anything else `_`; made unique among `taken` by a number at
/// the end of the first part.
fn unique_iso_id(name: &str, taken: &mut BTreeSet<(Vec<u8>, Vec<u8>)>) -> io::Result<Vec<u8>> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let map = |s: &str, n: usize| -> Vec<u8> {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() as u8 } else { b'_' })
            .take(n)
            .collect()
    };
    let mut base = map(stem, 8);
    if base.is_empty() {
        base.push(b'_');
    }
    let ext = map(ext, 3);
    let mut candidate = base.clone();
    let mut n: usize = 0;
    while taken.contains(&(candidate.clone(), ext.clone())) {
        n += 1;
        if n > MAX_FILES {
            return Err(invalid(format!("file name {name:?}: no unique ISO 9660 name left")));
        }
        let digits = n.to_string();
        candidate = base.iter().copied().take(8 - digits.len()).chain(digits.bytes()).collect();
    }
    taken.insert((candidate.clone(), ext.clone()));
    let mut id = candidate;
    id.push(b'.');
    id.extend_from_slice(&ext);
    id.extend_from_slice(b";1");
    Ok(id)
}

/// ECMA-119 9.3's order: by name, then by extension, each padded with spaces.
fn iso_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let split = |id: &[u8]| -> (Vec<u8>, Vec<u8>) {
        let id = id.strip_suffix(b";1").unwrap_or(id);
        match id.iter().position(|&c| c == b'.') {
            Some(i) => (id[..i].to_vec(), id[i + 1..].to_vec()),
            None => (id.to_vec(), Vec::new()),
        }
    };
    let pad = |mut v: Vec<u8>, n: usize| {
        v.resize(n.max(v.len()), b' ');
        v
    };
    let ((an, ae), (bn, be)) = (split(a), split(b));
    let n = an.len().max(bn.len());
    let e = ae.len().max(be.len());
    (pad(an, n), pad(ae, e)).cmp(&(pad(bn, n), pad(be, e)))
}

/// A UTC time broken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Civil {
    /// From seconds since 1970 (1970 to 2155: a directory record holds the
    /// year as 1900 plus a byte).
    fn from_unix(t: i64) -> io::Result<Civil> {
        const LAST: i64 = 5_869_583_999; // 2155-12-31 23:59:59
        if !(0..=LAST).contains(&t) {
            return Err(invalid(format!("time {t}: an ISO 9660 date holds 1970 to 2155")));
        }
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let narrow = |v: i64| u8::try_from(v).map_err(|_| invalid(format!("time {t}: out of range")));
        Ok(Civil {
            year: u16::try_from(year).map_err(|_| invalid(format!("time {t}: out of range")))?,
            month: narrow(month)?,
            day: narrow(day)?,
            hour: narrow(secs / 3600)?,
            minute: narrow(secs / 60 % 60)?,
            second: narrow(secs % 60)?,
        })
    }

    /// A directory record's 7 bytes (ECMA-119 9.1.5), UTC.
    fn dir_time(&self) -> [u8; 7] {
        let y = u8::try_from(self.year.saturating_sub(1900)).unwrap_or(u8::MAX);
        [y, self.month, self.day, self.hour, self.minute, self.second, 0]
    }

    /// A volume descriptor's 17 bytes (ECMA-119 8.4.26.1), UTC.
    fn volume_time(&self) -> [u8; 17] {
        let s = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        let mut v = [0u8; 17];
        for (d, c) in v.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(volume: &str, files: &[File<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, volume, files).unwrap();
        out
    }

    fn sector(img: &[u8], n: u32) -> &[u8] {
        &img[n as usize * SECTOR..(n as usize + 1) * SECTOR]
    }

    fn u32_both(b: &[u8]) -> u32 {
        let le = u32::from_le_bytes(b[0..4].try_into().unwrap());
        assert_eq!(le, u32::from_be_bytes(b[4..8].try_into().unwrap()), "both-endian halves differ");
        le
    }

    /// The records of a folder of `sectors` sectors at `lba`, checking that
    /// none crosses a sector.
    fn records(img: &[u8], lba: u32, sectors: u32) -> Vec<Vec<u8>> {
        let mut out = vec![];
        for s in 0..sectors {
            let sec = sector(img, lba + s);
            let mut at = 0;
            while at < SECTOR && sec[at] != 0 {
                let len = sec[at] as usize;
                assert!(at + len <= SECTOR, "a record crosses a sector");
                assert_eq!(len % 2, 0, "a record of odd length");
                out.push(sec[at..at + len].to_vec());
                at += len;
            }
        }
        out
    }

    fn seed() -> Vec<(String, Vec<u8>)> {
        vec![
            ("meta-data".into(), b"instance-id: a\n".to_vec()),
            ("user-data".into(), vec![7; 3000]),
            ("network-config".into(), vec![]),
        ]
    }

    fn files(v: &[(String, Vec<u8>)]) -> Vec<File<'_>> {
        v.iter().map(|(n, d)| File { name: n, data: d }).collect()
    }

    #[test]
    fn the_descriptors_name_the_volume_and_joliet() {
        let s = seed();
        let img = image("cidata", &files(&s));
        assert_eq!(img.len() % SECTOR, 0);
        assert_eq!(img.len(), MIN_SECTORS as usize * SECTOR, "a small image is padded to the minimum");
        assert!(img[..16 * SECTOR].iter().all(|&b| b == 0));
        let pvd = sector(&img, 16);
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(&img[32808..32840], b"cidata                          ");
        assert_eq!(u32_both(&pvd[80..88]) as usize * SECTOR, img.len());
        let svd = sector(&img, 17);
        assert_eq!(&svd[..7], b"\x02CD001\x01");
        assert_eq!(&svd[88..91], b"%/E");
        assert_eq!(&svd[40..52], "cidata".encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<u8>>());
        assert_eq!(&svd[52..54], &[0, 0x20]);
        assert_eq!(&sector(&img, 18)[..7], b"\xffCD001\x01");
        assert_eq!(&pvd[813..830], b"2000010100000000\0");
    }

    #[test]
    fn names_in_each_tree_and_data_at_their_extents() {
        let s = seed();
        let img = image("cidata", &files(&s));
        let pvd = sector(&img, 16);
        let root = &pvd[156..190];
        let (lba, len) = (u32_both(&root[2..10]), u32_both(&root[10..18]));
        let recs = records(&img, lba, len / SECTOR as u32);
        assert_eq!(recs.len(), 5);
        // `.` starts its system use area with SP, then RR.
        assert_eq!(&recs[0][34..41], &[b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
        let ids: Vec<&[u8]> = recs[2..].iter().map(|r| &r[33..33 + r[32] as usize]).collect();
        assert_eq!(ids, [&b"META_DAT.;1"[..], b"NETWORK_.;1", b"USER_DAT.;1"]);
        for r in &recs[2..] {
            let ext = u32_both(&r[2..10]) as usize;
            let size = u32_both(&r[10..18]) as usize;
            let su = &r[33 + r[32] as usize + (1 - r[32] as usize % 2)..];
            let nm = su.windows(2).position(|w| w == b"NM").unwrap();
            let name = std::str::from_utf8(&su[nm + 5..nm + su[nm + 2] as usize]).unwrap();
            let (_, data) = s.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(size, data.len());
            assert_eq!(&img[ext * SECTOR..ext * SECTOR + size], &data[..]);
        }
        let svd = sector(&img, 17);
        let jroot = &svd[156..190];
        let recs = records(&img, u32_both(&jroot[2..10]), u32_both(&jroot[10..18]) / SECTOR as u32);
        let names: Vec<String> = recs[2..]
            .iter()
            .map(|r| {
                let id = &r[33..33 + r[32] as usize];
                String::from_utf16(
                    &id.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect::<Vec<_>>(),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_image_len_says_the_size() {
        let s = seed();
        let a = image("cidata", &files(&s));
        assert_eq!(a, image("cidata", &files(&s)));
        assert_eq!(a.len() as u64, image_len("cidata", &files(&s)).unwrap());
        let big = vec![1u8; 300_000];
        let f = [File { name: "big", data: &big }];
        assert_eq!(image("cidata", &f).len() as u64, image_len("cidata", &f).unwrap());
        let mut other = Vec::new();
        write_at(&mut other, "cidata", &files(&s), 1_700_000_000).unwrap();
        assert_ne!(a, other, "the time is in the image");
    }

    #[test]
    fn a_folder_of_many_files_never_splits_a_record() {
        let names: Vec<String> = (0..MAX_FILES).map(|i| format!("{i}-{}", "y".repeat(i % 60))).collect();
        let fs: Vec<File> = names.iter().map(|n| File { name: n, data: b"x" }).collect();
        let img = image("cidata", &fs);
        let root = &sector(&img, 16)[156..190];
        let recs = records(&img, u32_both(&root[2..10]), u32_both(&root[10..18]) / SECTOR as u32);
        assert_eq!(recs.len(), MAX_FILES + 2);
        let mut ids: Vec<&[u8]> = recs[2..].iter().map(|r| &r[33..33 + r[32] as usize]).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "level 1 names are unique");
        let jroot = &sector(&img, 17)[156..190];
        assert_eq!(
            records(&img, u32_both(&jroot[2..10]), u32_both(&jroot[10..18]) / SECTOR as u32).len(),
            MAX_FILES + 2
        );
    }

    #[test]
    fn level_1_names() {
        let mut taken = BTreeSet::new();
        let mut id = |n: &str| String::from_utf8(unique_iso_id(n, &mut taken).unwrap()).unwrap();
        assert_eq!(id("meta-data"), "META_DAT.;1");
        assert_eq!(id("user-data"), "USER_DAT.;1");
        assert_eq!(id("network-config"), "NETWORK_.;1");
        assert_eq!(id("archive.tar.gz"), "ARCHIVE_.GZ;1");
        assert_eq!(id(".hidden"), "_HIDDEN.;1");
        assert_eq!(id("données"), "DONN_ES.;1");
        assert_eq!(id("meta_data"), "META_DA1.;1");
        assert_eq!(id("META-DATA"), "META_DA2.;1");
        assert_eq!(id("節点"), "__.;1");
        assert_eq!(id("節"), "_.;1");
        assert_eq!(id("点"), "_1.;1");
    }

    #[test]
    fn bad_names_and_volumes_are_refused_before_anything_is_written() {
        let bad_names = [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a:b",
            "a;1",
            "a*",
            "a?",
            "tab\there",
            "nl\n",
            "nul\0",
            "del\x7f",
            "emoji😀",
        ];
        for name in bad_names {
            let mut out = Vec::new();
            let e = write(&mut out, "cidata", &[File { name, data: b"" }]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            assert!(out.is_empty(), "{name:?}: something was written");
        }
        let long = "n".repeat(MAX_NAME_UTF16 + 1);
        assert!(write(Vec::new(), "cidata", &[File { name: &long, data: b"" }]).is_err());
        assert!(
            write(Vec::new(), "cidata", &[File { name: &"n".repeat(MAX_NAME_UTF16), data: b"" }]).is_ok()
        );
        let wide = "節".repeat(MAX_NAME_BYTES / 3 + 1);
        assert!(wide.encode_utf16().count() <= MAX_NAME_UTF16);
        assert!(write(Vec::new(), "cidata", &[File { name: &wide, data: b"" }]).is_err());
        let widest = "節".repeat(MAX_NAME_BYTES / 3);
        assert!(write(Vec::new(), "cidata", &[File { name: &widest, data: b"" }]).is_ok());
        let twice = [File { name: "a", data: b"" }, File { name: "a", data: b"1" }];
        assert!(write(Vec::new(), "cidata", &twice).unwrap_err().to_string().contains("twice"));
        for v in ["", "ci data", "cidata\n", "é", "a/b", &"v".repeat(MAX_VOLUME_ID + 1)] {
            assert!(write(Vec::new(), v, &[]).is_err(), "{v:?}");
        }
        assert!(write(Vec::new(), &"V".repeat(MAX_VOLUME_ID), &[]).is_ok());
    }

    #[test]
    fn caps_on_files_sizes_and_times() {
        let many: Vec<String> = (0..=MAX_FILES).map(|i| i.to_string()).collect();
        let fs: Vec<(&str, u64)> = many.iter().map(|n| (n.as_str(), 0)).collect();
        assert!(Layout::new("cidata", &fs, FIXED_TIME).is_err());
        assert!(Layout::new("cidata", &fs[..MAX_FILES], FIXED_TIME).is_ok());
        assert!(Layout::new("cidata", &[("a", u64::from(u32::MAX) + 1)], FIXED_TIME).is_err());
        assert!(Layout::new("cidata", &[("a", u64::from(u32::MAX))], FIXED_TIME).is_ok());
        assert!(Layout::new("cidata", &[("a", u64::from(u32::MAX)), ("b", 1)], FIXED_TIME).is_err());
        assert!(Layout::new("cidata", &[("a", u64::MAX), ("b", u64::MAX)], FIXED_TIME).is_err());
        let l = Layout::new("cidata", &[("a", u64::from(u32::MAX))], FIXED_TIME).unwrap();
        assert_eq!(l.total, FIRST_DIR + 3 + u32::MAX.div_ceil(SECTOR as u32));
        assert!(Layout::new("cidata", &[], -1).is_err());
        assert!(Layout::new("cidata", &[], 5_869_584_000).is_err());
        assert!(Layout::new("cidata", &[], i64::MAX).is_err());
        assert!(Layout::new("cidata", &[], i64::MIN).is_err());
    }

    #[test]
    fn dates() {
        let c = Civil::from_unix(0).unwrap();
        assert_eq!(c.dir_time(), [70, 1, 1, 0, 0, 0, 0]);
        let c = Civil::from_unix(951_782_400).unwrap(); // 2000-02-29
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
        let c = Civil::from_unix(1_764_689_415).unwrap(); // 2025-12-02 15:30:15
        assert_eq!(&c.volume_time()[..16], b"2025120215301500");
        let c = Civil::from_unix(5_869_583_999).unwrap();
        assert_eq!(c.dir_time(), [255, 12, 31, 23, 59, 59, 0]);
    }

    /// A writer that fails after `left` bytes.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_writer_is_an_error_at_every_point() {
        let s = seed();
        let len = image("cidata", &files(&s)).len();
        for left in (0..len).step_by(997) {
            let e = write(Failing { left }, "cidata", &files(&s)).unwrap_err();
            assert_eq!(e.to_string(), "disk full");
        }
    }
}
