//! Looks inside a guest disk, with no mount, no root, no VM and no qemu:
//! partitions (MBR with logical partitions, GPT, none), LVM2 logical volumes,
//! filesystems (ext2/3/4 read fully; xfs, btrfs, vfat, ISO 9660 and swap
//! identified), and from the root filesystem the operating system, kernels,
//! architecture, STAR software, accounts and space.
//!
//! Everything is read through the format layer's [`Disk`], so every format
//! vmrepo reads can be inspected; every read is counted. Nothing here
//! trusts the guest: partition tables and LVM metadata pointing past the end,
//! loops in links or partition chains, enormous files and corrupt
//! filesystems give a partial report with warnings, never an error.
//!
//! ```no_run
//! use vmrepo_format::{open, OpenOptions};
//!
//! let image = open("sl5.3_x86_64_sl08e_8GB.qcow2".as_ref(), &OpenOptions::default())?;
//! let report = vmrepo_inspect::inspect(image.into_disk()?, &vmrepo_inspect::Options::default());
//! println!("{:?} {:?}", report.os.map(|o| o.product_name), report.arch);
//! # Ok::<(), vmrepo_format::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod accounts;
mod conf;
pub mod elf;
mod error;
pub mod fs;
pub mod guest;
pub mod kernel;
pub mod lvm;
pub mod monthly_password;
pub mod os;
pub mod partition;
pub mod star;
pub mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use vmrepo_format::Disk;

pub use error::{Error, Result};
use fs::{Filesystem, Probe, Swap};
use guest::ExtFs;
use view::{Dev, DiskDev, Window};

/// How to inspect.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The maximum size the budget is checked against (the name's); the
    /// virtual size when not given.
    pub max_size: Option<u64>,
}

/// A filesystem and where it is.
#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    /// `disk` (no partition table), `p1`, `p5`, or `VolGroup00/LogVol00`.
    pub device: String,
    #[serde(flatten)]
    pub fs: Filesystem,
    /// Where the guest mounts it, as far as its content tells (`/`, `/boot`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A swap area and where it is.
#[derive(Clone, Debug, Serialize)]
pub struct SwapArea {
    pub device: String,
    #[serde(flatten)]
    pub swap: Swap,
}

/// The specification's budget: OS + swap + STAR software + data < maximum size.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    /// Bytes used on the guest's filesystems, less the STAR libraries.
    pub os: u64,
    pub swap: u64,
    pub star_software: u64,
    /// Free space on the writable filesystems (the same as `left_for_data`,
    /// kept for the readers that know this name).
    pub data_room: u64,
    /// The maximum size it is checked against.
    pub max_size: u64,
    /// os + swap + star_software.
    pub committed: u64,
    /// What a job can write: the free space of the writable filesystems
    /// (every one but ISO 9660 and FAT), not the maximum size less what is
    /// committed (partition tables, filesystem metadata, space no filesystem
    /// covers are no room for data).
    pub left_for_data: u64,
    /// Bytes of the disk no partition covers (on a disk with no partition
    /// table: that the filesystem, swap area or physical volume on the whole
    /// disk does not cover): room an admin can give the guest by growing a
    /// partition or a filesystem, not room a job can write to.
    pub unpartitioned: u64,
    /// committed < max_size.
    pub fits: bool,
}

impl Budget {
    /// The budget of a guest's parts against a maximum size: `free` is the
    /// free space of its writable filesystems, `unpartitioned` the bytes of
    /// the disk no partition covers.
    pub fn new(
        os: u64,
        swap: u64,
        star_software: u64,
        free: u64,
        unpartitioned: u64,
        max_size: u64,
    ) -> Budget {
        let committed = os.saturating_add(swap).saturating_add(star_software);
        Budget {
            os,
            swap,
            star_software,
            data_room: free,
            max_size,
            committed,
            left_for_data: free,
            unpartitioned,
            fits: committed < max_size,
        }
    }

    /// The same parts against another maximum size.
    pub fn against(&self, max_size: u64) -> Budget {
        Budget::new(self.os, self.swap, self.star_software, self.left_for_data, self.unpartitioned, max_size)
    }
}

/// Bytes of a disk of `size` bytes that no partition of `table` covers
/// (extended partitions are containers: the space between their logical
/// partitions is not covered); `whole` is what a device found on the whole
/// disk covers when there is no partition.
fn unpartitioned(size: u64, table: &partition::Table, whole: u64) -> u64 {
    let mut spans: Vec<(u64, u64)> = table
        .partitions
        .iter()
        .filter(|p| p.kind != "extended" && p.size > 0 && p.start < size)
        .map(|p| (p.start, p.start.saturating_add(p.size).min(size)))
        .collect();
    if spans.is_empty() {
        return size.saturating_sub(whole);
    }
    // Partitions may overlap in a hostile table: each byte is counted once.
    spans.sort_unstable();
    let mut covered = 0u64;
    let mut reach = 0u64;
    for (start, end) in spans {
        let from = start.max(reach);
        if end > from {
            covered = covered.saturating_add(end - from);
            reach = end;
        }
    }
    size.saturating_sub(covered)
}

/// Everything the inspector found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub virtual_size: u64,
    pub partitions: partition::Table,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logical_volumes: Vec<lvm::LogicalVolume>,
    pub filesystems: Vec<Volume>,
    pub swap: Vec<SwapArea>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<os::OsInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_format: Option<String>,
    pub boot: kernel::Boot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<elf::Arch>,
    pub star: star::Star,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<accounts::Accounts>,
    /// Whether root's password is set for the month at each boot, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_password: Option<monthly_password::MonthlyPassword>,
    pub budget: Budget,
    /// Bytes read from the virtual disk.
    pub bytes_read: u64,
    pub warnings: Vec<String>,
}

impl Report {
    /// The volume the guest's files were read from (its `/`), if one was.
    pub fn root(&self) -> Option<&Volume> {
        self.filesystems.iter().find(|v| v.role.as_deref() == Some("/"))
    }
}

/// The device name of the whole disk, when it has no partition table (or
/// is an isohybrid ISO).
pub const WHOLE_DISK: &str = "disk";

/// A device found on the disk, with its name.
struct Found {
    name: String,
    dev: Arc<dyn Dev>,
}

/// What a device holds.
enum Item {
    Volume(Volume, Arc<dyn Dev>),
    Swap(SwapArea),
    Pv(lvm::PvLabel, Arc<dyn Dev>),
    Nothing,
}

fn probe_device(f: &Found, warnings: &mut Vec<String>) -> Item {
    match fs::probe(f.dev.as_ref()) {
        Ok(Probe::Fs(fs)) => {
            Item::Volume(Volume { device: f.name.clone(), fs, role: None }, Arc::clone(&f.dev))
        }
        Ok(Probe::Swap(swap)) => Item::Swap(SwapArea { device: f.name.clone(), swap }),
        Ok(Probe::LvmPv) => match lvm::read_label(f.dev.as_ref()) {
            Ok(Some(label)) => Item::Pv(label, Arc::clone(&f.dev)),
            Ok(None) => Item::Nothing,
            Err(e) => {
                warnings.push(format!("{}: LVM label: {e}", f.name));
                Item::Nothing
            }
        },
        Ok(Probe::Unknown) => Item::Nothing,
        Err(e) => {
            warnings.push(format!("{}: {e}", f.name));
            Item::Nothing
        }
    }
}

/// Inspects a guest disk. Never fails: what cannot be read is a warning.
pub fn inspect(disk: Arc<dyn Disk>, opts: &Options) -> Report {
    let counter = Arc::new(AtomicU64::new(0));
    let whole: Arc<dyn Dev> = Arc::new(DiskDev::new(Arc::clone(&disk), Arc::clone(&counter)));
    let mut warnings: Vec<String> = Vec::new();
    let table = partition::read(whole.as_ref()).unwrap_or_else(|e| {
        warnings.push(format!("partition table: {e}"));
        partition::Table { scheme: "none".into(), ..Default::default() }
    });
    let mut devices: Vec<Found> = Vec::new();
    if table.scheme == "none" || table.partitions.is_empty() {
        devices.push(Found { name: WHOLE_DISK.into(), dev: Arc::clone(&whole) });
    } else {
        // An isohybrid image: the ISO filesystem spans the whole disk too.
        if let Ok(Probe::Fs(f)) = fs::probe(whole.as_ref())
            && f.kind == "iso9660"
        {
            devices.push(Found { name: WHOLE_DISK.into(), dev: Arc::clone(&whole) });
        }
        for p in &table.partitions {
            if p.kind == "extended" || p.size == 0 || p.start >= whole.len() {
                continue;
            }
            devices.push(Found {
                name: format!("p{}", p.number),
                dev: Arc::new(Window::new(Arc::clone(&whole), p.start, p.size)),
            });
        }
    }

    let mut volumes: Vec<(Volume, Arc<dyn Dev>)> = Vec::new();
    let mut swaps = Vec::new();
    let mut pvs = Vec::new();
    let mut place = |item: Item,
                     volumes: &mut Vec<(Volume, Arc<dyn Dev>)>,
                     pvs: &mut Vec<(lvm::PvLabel, Arc<dyn Dev>)>| match item {
        Item::Volume(v, d) => volumes.push((v, d)),
        Item::Swap(s) => swaps.push(s),
        Item::Pv(l, d) => pvs.push((l, d)),
        Item::Nothing => {}
    };
    let mut whole_disk_pv = false;
    for f in &devices {
        let item = probe_device(f, &mut warnings);
        whole_disk_pv |= f.name == WHOLE_DISK && matches!(item, Item::Pv(..));
        place(item, &mut volumes, &mut pvs);
    }
    let mut lv_report = Vec::new();
    let lvs = lvm::logical_volumes(&pvs, &mut warnings);
    for (lv, dev) in lvs {
        if let Some(dev) = dev {
            let item = probe_device(&Found { name: format!("{}/{}", lv.vg, lv.name), dev }, &mut warnings);
            place(item, &mut volumes, &mut pvs);
        }
        lv_report.push(lv);
    }
    let mut warn = |w: String| warnings.push(w);

    // The root filesystem holds /etc; a boot filesystem holds kernels or grub at its top.
    let mut root: Option<ExtFs> = None;
    let mut boot_fs: Option<ExtFs> = None;
    for (vol, dev) in volumes.iter_mut() {
        if !vol.fs.kind.starts_with("ext") {
            continue;
        }
        let efs = match ExtFs::open(Arc::clone(dev)) {
            Ok(e) => e,
            Err(e) => {
                warn(format!("{}: {e}", vol.device));
                continue;
            }
        };
        if root.is_none() && (efs.stat("/etc/passwd").is_some() || efs.is_dir("/etc")) {
            vol.role = Some("/".into());
            root = Some(efs);
        } else if boot_fs.is_none()
            && efs
                .list("/")
                .iter()
                .any(|(n, _)| n.starts_with("vmlinuz") || n == "grub" || n == "grub2" || n == "extlinux")
        {
            vol.role = Some("/boot".into());
            boot_fs = Some(efs);
        }
    }
    for (vol, _) in &volumes {
        if root.is_none() && matches!(vol.fs.kind.as_str(), "xfs" | "btrfs") {
            warn(format!(
                "{}: a {} filesystem is identified, not read: the guest's files are not inspected",
                vol.device, vol.fs.kind
            ));
        }
    }

    let (os_info, hostname, package_format, arch, star_info, accounts_info) = match &root {
        Some(r) => {
            let passwd = accounts::Passwd::read(r);
            (
                os::detect(r),
                os::hostname(r),
                os::package_format(r),
                elf::detect(r),
                star::detect(r, &passwd),
                Some(accounts::detect(r, &passwd)),
            )
        }
        None => (None, None, None, None, star::Star::default(), None),
    };
    let monthly = root.as_ref().map(|r| monthly_password::detect(r, accounts_info.as_ref()));
    let bare_disk = volumes.iter().any(|(v, _)| v.device == WHOLE_DISK && v.role.as_deref() == Some("/"));
    let boot = kernel::detect(root.as_ref(), boot_fs.as_ref(), bare_disk);

    // The filesystems a job writes to: not an ISO 9660 (read-only), nor a FAT
    // one (the firmware's EFI partition, or a medium to carry files).
    let writable = |k: &str| !matches!(k, "iso9660" | "vfat");
    let used: u64 = volumes
        .iter()
        .filter(|(v, _)| writable(&v.fs.kind))
        .filter_map(|(v, _)| v.fs.used)
        .fold(0, u64::saturating_add);
    let free: u64 = volumes
        .iter()
        .filter(|(v, _)| writable(&v.fs.kind))
        .filter_map(|(v, _)| v.fs.free)
        .fold(0, u64::saturating_add);
    let swap_total: u64 = swaps.iter().map(|s| s.swap.size).fold(0, u64::saturating_add);
    let star_bytes = star_info.size();
    let os_bytes = used.saturating_sub(star_bytes);
    // What lies on the whole disk when it has no partition: a filesystem, a
    // swap area, or a physical volume (which spans it).
    let on_whole_disk = volumes
        .iter()
        .filter(|(v, _)| v.device == WHOLE_DISK)
        .map(|(v, _)| v.fs.size)
        .chain(swaps.iter().filter(|s| s.device == WHOLE_DISK).map(|s| s.swap.size))
        .chain(whole_disk_pv.then_some(disk.size()))
        .max()
        .unwrap_or(0);
    let budget = Budget::new(
        os_bytes,
        swap_total,
        star_bytes,
        free,
        unpartitioned(disk.size(), &table, on_whole_disk),
        opts.max_size.unwrap_or(disk.size()),
    );
    let mut all_warnings = warnings;
    all_warnings.extend(table.warnings.iter().cloned());
    Report {
        virtual_size: disk.size(),
        partitions: table,
        logical_volumes: lv_report,
        filesystems: volumes.into_iter().map(|(v, _)| v).collect(),
        swap: swaps,
        os: os_info,
        hostname,
        package_format,
        boot,
        arch,
        star: star_info,
        accounts: accounts_info,
        monthly_password: monthly,
        budget,
        bytes_read: counter.load(Ordering::Relaxed),
        warnings: all_warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, start: u64, size: u64, kind: &str) -> partition::Partition {
        partition::Partition {
            number,
            start,
            size,
            kind: kind.into(),
            type_id: String::new(),
            bootable: false,
            name: None,
        }
    }

    #[test]
    fn unpartitioned_space() {
        const MIB: u64 = 1 << 20;
        let table =
            |parts| partition::Table { scheme: "mbr".into(), partitions: parts, warnings: Vec::new() };
        // Logical partitions in an extended one: the container covers nothing itself.
        let t = table(vec![
            part(1, MIB, 32 * MIB, "Linux"),
            part(2, 33 * MIB, 167 * MIB, "extended"),
            part(5, 34 * MIB, 32 * MIB, "Linux swap"),
            part(6, 67 * MIB, 64 * MIB, "Linux"),
        ]);
        assert_eq!(unpartitioned(200 * MIB, &t, 0), 72 * MIB);
        // Overlapping partitions count once; one past the end is cut there.
        let t = table(vec![part(1, MIB, 10 * MIB, "Linux"), part(2, 5 * MIB, 10 * MIB, "Linux")]);
        assert_eq!(unpartitioned(20 * MIB, &t, 0), 6 * MIB);
        let t = table(vec![part(1, MIB, u64::MAX, "Linux"), part(2, 30 * MIB, MIB, "Linux")]);
        assert_eq!(unpartitioned(20 * MIB, &t, 0), MIB);
        // No partition: what the whole disk's filesystem leaves.
        let t = partition::Table { scheme: "none".into(), ..Default::default() };
        assert_eq!(unpartitioned(72 * MIB, &t, 64 * MIB), 8 * MIB);
        assert_eq!(unpartitioned(72 * MIB, &t, 80 * MIB), 0);
    }
}
