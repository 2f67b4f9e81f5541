//! The qcow2 header and its extensions (docs/interop/qcow2.txt in QEMU).

use crate::bytes::{be32, be64};
use crate::error::{Error, Result, ensure};
use crate::source::{Source, read_into, read_vec};

/// Smallest and largest cluster sizes qcow2 allows (as powers of two).
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// The largest L1 table read (QEMU's QCOW_MAX_L1_SIZE).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// The largest virtual size accepted (QEMU's QCOW_MAX_SIZE is 2^61... we allow
/// what an L1 table under the cap can address, and never more than this).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 61;
/// The longest backing file name (QEMU's limit).
pub const MAX_BACKING_NAME: u32 = 1023;
/// The most snapshots read (QEMU's QCOW_MAX_SNAPSHOTS).
pub const MAX_SNAPSHOTS: u32 = 65536;

/// Header size of version 2; version 3 adds fields up to at least 104 bytes.
const V2_HEADER_LEN: u32 = 72;
const V3_MIN_HEADER_LEN: u32 = 104;

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/// Compatible feature bit: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit: the external data file is a valid raw image.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_CRYPTO: u32 = 0x0537_be77;

/// Compression types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// The parsed and checked header.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    // From the extensions:
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    /// The bitmaps extension: where the bitmap directory lies.
    pub bitmaps: Option<BitmapDirectory>,
}

/// The bitmaps extension's fields (`nb_bitmaps`, `bitmap_directory_size`,
/// `bitmap_directory_offset`).
#[derive(Clone, Copy, Debug)]
pub struct BitmapDirectory {
    pub nb_bitmaps: u32,
    pub size: u64,
    pub offset: u64,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }
    /// Bytes per L2 entry.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }
    /// Entries in an L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }
    /// Guest bytes one L1 entry covers.
    pub fn l1_coverage(&self) -> u64 {
        self.cluster_size().saturating_mul(self.l2_entries())
    }
}

fn aligned(offset: u64, cluster_size: u64) -> bool {
    offset.is_multiple_of(cluster_size)
}

/// Reads and checks the header and its extensions.
pub fn read(src: &dyn Source) -> Result<Header> {
    let mut h = [0u8; 112];
    let n = usize::try_from(src.len().min(112)).unwrap_or(112);
    ensure!(n >= V2_HEADER_LEN as usize, "the file ({} bytes) is shorter than a qcow2 header", src.len());
    read_into(src, &mut h[..n], 0, "the qcow2 header")?;
    let version = be32(&h, 4);
    if version != 2 && version != 3 {
        return Err(Error::unsupported(format!("qcow2 version {version} (vmrepo reads 2 and 3)")));
    }
    let cluster_bits = be32(&h, 20);
    ensure!(
        (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits),
        "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
    );
    let cluster_size = 1u64 << cluster_bits;
    let mut hdr = Header {
        version,
        backing_file_offset: be64(&h, 8),
        backing_file_size: be32(&h, 16),
        cluster_bits,
        size: be64(&h, 24),
        crypt_method: be32(&h, 32),
        l1_size: be32(&h, 36),
        l1_table_offset: be64(&h, 40),
        refcount_table_offset: be64(&h, 48),
        refcount_table_clusters: be32(&h, 56),
        nb_snapshots: be32(&h, 60),
        snapshots_offset: be64(&h, 64),
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: V2_HEADER_LEN,
        compression: Compression::Zlib,
        backing_format: None,
        data_file: None,
        bitmaps: None,
    };
    if version == 3 {
        ensure!(n >= V3_MIN_HEADER_LEN as usize, "the file is shorter than a qcow2 version 3 header");
        hdr.incompatible_features = be64(&h, 72);
        hdr.compatible_features = be64(&h, 80);
        hdr.autoclear_features = be64(&h, 88);
        hdr.refcount_order = be32(&h, 96);
        hdr.header_length = be32(&h, 100);
        ensure!(
            hdr.header_length >= V3_MIN_HEADER_LEN && u64::from(hdr.header_length) <= cluster_size,
            "header_length {} is outside {V3_MIN_HEADER_LEN}..={cluster_size}",
            hdr.header_length
        );
        ensure!(hdr.refcount_order <= 6, "refcount_order {} is larger than 6", hdr.refcount_order);
        if hdr.header_length > 104 {
            hdr.compression = match h[104] {
                0 => Compression::Zlib,
                1 => Compression::Zstd,
                t => return Err(Error::unsupported(format!("compression type {t}"))),
            };
        }
        let says_compression = hdr.incompatible_features & INCOMPAT_COMPRESSION != 0;
        ensure!(
            says_compression == (hdr.compression != Compression::Zlib),
            "the compression type feature bit disagrees with the compression type ({})",
            hdr.compression.name()
        );
    }
    ensure!(hdr.size <= MAX_VIRTUAL_SIZE, "virtual size {} is larger than {MAX_VIRTUAL_SIZE}", hdr.size);
    ensure!(hdr.crypt_method <= 2, "unknown encryption method {}", hdr.crypt_method);
    if hdr.extended_l2() {
        ensure!(
            cluster_bits >= 14,
            "extended L2 entries need clusters of at least 16 KiB (cluster_bits {cluster_bits})"
        );
    }
    let l1_bytes = u64::from(hdr.l1_size) * 8;
    if l1_bytes > MAX_L1_BYTES {
        return Err(Error::too_large(format!(
            "the L1 table has {} entries, more than the {} vmrepo reads",
            hdr.l1_size,
            MAX_L1_BYTES / 8
        )));
    }
    let needed = hdr.size.div_ceil(hdr.l1_coverage());
    ensure!(
        u64::from(hdr.l1_size) >= needed,
        "the L1 table ({} entries) is too small for the virtual size {} ({needed} needed)",
        hdr.l1_size,
        hdr.size
    );
    if hdr.l1_size > 0 {
        ensure!(
            aligned(hdr.l1_table_offset, cluster_size),
            "the L1 table offset {:#x} is not cluster-aligned",
            hdr.l1_table_offset
        );
    }
    ensure!(
        aligned(hdr.refcount_table_offset, cluster_size),
        "the refcount table offset {:#x} is not cluster-aligned",
        hdr.refcount_table_offset
    );
    ensure!(hdr.nb_snapshots <= MAX_SNAPSHOTS, "{} snapshots, more than {MAX_SNAPSHOTS}", hdr.nb_snapshots);
    if hdr.nb_snapshots > 0 {
        ensure!(
            aligned(hdr.snapshots_offset, cluster_size),
            "the snapshot table offset {:#x} is not cluster-aligned",
            hdr.snapshots_offset
        );
    }
    if hdr.backing_file_offset != 0 {
        ensure!(
            hdr.backing_file_size <= MAX_BACKING_NAME,
            "the backing file name is {} bytes long",
            hdr.backing_file_size
        );
        let end = hdr.backing_file_offset.checked_add(u64::from(hdr.backing_file_size));
        ensure!(
            end.is_some_and(|e| e <= cluster_size),
            "the backing file name lies outside the first cluster"
        );
    }
    let unknown = hdr.incompatible_features & !INCOMPAT_KNOWN;
    read_extensions(src, &mut hdr, unknown)?;
    if unknown != 0 {
        // read_extensions names them from the feature table when it can.
        return Err(Error::unsupported(format!("unknown incompatible feature bits {unknown:#x}")));
    }
    Ok(hdr)
}

fn read_extensions(src: &dyn Source, hdr: &mut Header, unknown: u64) -> Result<()> {
    let cluster_size = hdr.cluster_size();
    let mut off = u64::from(hdr.header_length);
    // Extensions live in the first cluster; each takes at least 8 bytes, so
    // this loop ends within cluster_size / 8 turns.
    while off.checked_add(8).is_some_and(|e| e <= cluster_size.min(src.len())) {
        let mut th = [0u8; 8];
        read_into(src, &mut th, off, "a qcow2 header extension")?;
        let ext_type = be32(&th, 0);
        let len = u64::from(be32(&th, 4));
        if ext_type == EXT_END {
            break;
        }
        let data_off = off + 8;
        let end = data_off.checked_add(len).filter(|e| *e <= cluster_size);
        ensure!(end.is_some(), "header extension {ext_type:#x} at offset {off} runs past the first cluster");
        match ext_type {
            EXT_BACKING_FORMAT => {
                hdr.backing_format = Some(ext_string(src, data_off, len, "the backing format")?)
            }
            EXT_DATA_FILE => hdr.data_file = Some(ext_string(src, data_off, len, "the data file name")?),
            EXT_BITMAPS => {
                ensure!(len >= 24, "the bitmaps extension is {len} bytes long, not 24");
                let mut b = [0u8; 24];
                read_into(src, &mut b, data_off, "the bitmaps extension")?;
                hdr.bitmaps = Some(BitmapDirectory {
                    nb_bitmaps: be32(&b, 0),
                    size: be64(&b, 8),
                    offset: be64(&b, 16),
                });
            }
            EXT_FEATURE_TABLE if unknown != 0 => {
                let table = read_vec(src, data_off, len, "the feature name table")?;
                for entry in table.chunks_exact(48) {
                    if entry[0] == 0 && entry[1] < 64 && unknown & (1u64 << entry[1]) != 0 {
                        let name = String::from_utf8_lossy(&entry[2..]).trim_end_matches('\0').to_string();
                        return Err(Error::unsupported(format!(
                            "incompatible feature {:?} (bit {})",
                            name, entry[1]
                        )));
                    }
                }
            }
            EXT_CRYPTO | EXT_FEATURE_TABLE => {}
            _ => {}
        }
        // Data is padded to a multiple of 8.
        off = data_off + len.div_ceil(8) * 8;
    }
    Ok(())
}

fn ext_string(src: &dyn Source, off: u64, len: u64, what: &str) -> Result<String> {
    let b = read_vec(src, off, len, what)?;
    let s = String::from_utf8(b).map_err(|_| Error::malformed(format!("{what} is not UTF-8")))?;
    ensure!(!s.contains('\0'), "{what} contains a NUL byte");
    Ok(s)
}

/// The backing file name, if any.
pub fn backing_name(src: &dyn Source, hdr: &Header) -> Result<Option<String>> {
    if hdr.backing_file_offset == 0 || hdr.backing_file_size == 0 {
        return Ok(None);
    }
    ext_string(src, hdr.backing_file_offset, u64::from(hdr.backing_file_size), "the backing file name")
        .map(Some)
}
