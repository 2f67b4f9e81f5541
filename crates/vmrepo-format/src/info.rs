//! What `vmrepo info` reports of an image, with the field names of
//! `qemu-img info --output=json` where they mean the same.

use serde::Serialize;

use crate::Format;

/// How an image's storage grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// The file holds the whole virtual disk.
    Fixed,
    /// The file grows as the guest writes.
    Dynamic,
}

/// An internal snapshot (qcow2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub vm_state_size: u64,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_sec: u64,
    pub vm_clock_nsec: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icount: Option<u64>,
    /// Bytes of the virtual disk when the snapshot was taken (qcow2 v3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<u64>,
}

/// A file of a multi-file image (VMDK extent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExtentInfo {
    pub filename: String,
    /// `SPARSE`, `FLAT`, `ZERO`, `VMFS` ... as the descriptor writes it; empty
    /// for the sparse extent of a monolithic image (as qemu-img reports it).
    pub format: String,
    pub virtual_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compressed: bool,
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Offset of the extent's data in its file (FLAT extents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// The parent of a differencing image (VHD, VHDX, VDI).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Parent {
    /// The parent's identifier as the child records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// File names the child records for its parent (parent locators).
    pub locators: Vec<String>,
}

/// Everything known of an image from its own file(s), without trusting them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Info {
    pub filename: String,
    /// The format as qemu-img names it: raw, qcow2, vmdk, vdi, vpc, vhdx.
    pub format: Format,
    /// The variant: qcow2 `v2`/`v3`, VMDK's createType, `fixed`/`dynamic`/
    /// `differencing` for VDI, VHD and VHDX, `iso9660`/`isohybrid` for an ISO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    /// The extension a name takes for this format.
    pub extension: &'static str,
    pub virtual_size: u64,
    /// Bytes the image's file(s) occupy on the host.
    pub actual_size: u64,
    /// The main file's length.
    pub file_length: u64,
    /// Guest bytes allocated according to the image's own tables (for fixed
    /// images, the virtual size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size: Option<u64>,
    pub storage: Storage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Compression used by the format for clusters or grains: zlib, zstd, deflate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    pub dirty_flag: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extents: Vec<ExtentInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Snapshot>,
    /// Format details, as `{"type": FORMAT, "data": {...}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<serde_json::Value>,
    /// Things that are odd but do not stop reading.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Info {
    /// A starting point for a format's reader to fill in.
    pub(crate) fn new(
        filename: &str,
        format: Format,
        virtual_size: u64,
        file_length: u64,
        actual_size: u64,
    ) -> Info {
        Info {
            filename: filename.to_string(),
            format,
            subformat: None,
            extension: format.extension(),
            virtual_size,
            actual_size,
            file_length,
            allocated_size: None,
            storage: Storage::Dynamic,
            cluster_size: None,
            compression: None,
            dirty_flag: false,
            corrupt: false,
            backing_filename: None,
            backing_filename_format: None,
            data_file: None,
            parent: None,
            extents: Vec::new(),
            snapshots: Vec::new(),
            format_specific: None,
            warnings: Vec::new(),
        }
    }
}
