//! Converting an image for another VM software: which format it gets, and
//! whether the result can boot there, decided before a byte is written.
//!
//! The specification: "the type of image you need is not up to you. It is
//! determined by the virtual machine software of the host site", and a Xen
//! paravirtual image, which has no kernel of its own, "will not boot" on
//! VirtualBox. [`verdict`] reads what inspection found in the guest (its
//! kernels, the evidence of Xen, the disk drivers of its module trees, the
//! devices its fstab names) against what the target runs and gives the
//! disk, and [`default_output`] picks the format the target runs as stored.

use serde::Serialize;
use vmrepo_format::write::{Output, VmdkSubformat};
use vmrepo_inspect::kernel::Verdict as GuestBoot;
use vmrepo_name::Vm;

use crate::content::Content;

/// The format written for `vm` when none is asked for: what it runs as
/// stored, in the form its own tools make.
/// - xen: raw (sparse), what `xl` and every Xen toolstack attach;
/// - kvm: qcow2, QEMU's own;
/// - virtualBox: VDI, dynamic, VirtualBox's own;
/// - vmware: VMDK monolithicSparse, Workstation's own (ESXi imports it with
///   `vmkfstools -i`);
/// - ec2: VMDK streamOptimized, what VM Import takes most readily.
///
/// `None` for VM software the table does not know: then `-O` is needed.
pub fn default_output(vm: Vm) -> Option<Output> {
    match vm.as_str() {
        "xen" => Some(Output::Raw),
        "kvm" => Some(Output::Qcow2 { cluster_size: 64 * 1024, compression: None }),
        "virtualBox" => Some(Output::Vdi { fixed: false }),
        "vmware" => Some(Output::Vmdk(VmdkSubformat::MonolithicSparse)),
        "ec2" => Some(Output::Vmdk(VmdkSubformat::StreamOptimized)),
        _ => None,
    }
}

/// Whether the converted image boots on the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Boots {
    /// A kernel of its own the target can start, with a driver for its disk.
    Yes,
    /// It boots, with the warnings said (a disk bus to choose, an fstab to mend).
    WithWarnings,
    /// It will not boot there: converting is refused without `--force`.
    No,
    /// The guest could not be read, or the target is not in the table.
    Unknown,
}

/// What [`verdict`] decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootVerdict {
    pub vm: String,
    pub boots: Boots,
    /// One line: why.
    pub summary: String,
    /// Why converting is refused (a Xen paravirtual guest to a VM software
    /// that needs a kernel of the guest's own): what is missing, which kernel
    /// the guest expects, what would have to be installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// What may stop it booting, or what to set on the target.
    pub warnings: Vec<String>,
}

/// The disk bus each VM software gives a guest by default, and the drivers
/// (as `vmrepo_inspect::kernel::DISK_DRIVERS` names them) that drive it,
/// then the other buses it offers with theirs.
struct Bus {
    vm: &'static str,
    default: (&'static str, &'static [&'static str]),
    others: &'static [(&'static str, &'static [&'static str])],
    /// The guest's name for its first disk on the default bus.
    device: &'static str,
}

const BUSES: [Bus; 5] = [
    Bus {
        vm: "kvm",
        default: ("virtio-blk", &["virtio_blk"]),
        others: &[("virtio-scsi", &["virtio_scsi"]), ("SATA", &["ahci"]), ("IDE", &["ata_piix", "ide_piix"])],
        device: "/dev/vda",
    },
    Bus {
        vm: "virtualBox",
        default: ("SATA (AHCI)", &["ahci"]),
        others: &[("IDE (PIIX4)", &["ata_piix", "ide_piix"]), ("SCSI (LsiLogic)", &["mptspi"])],
        device: "/dev/sda",
    },
    Bus {
        // The VMDK writer declares an IDE adapter, which every VMware product offers.
        vm: "vmware",
        default: ("IDE", &["ata_piix", "ide_piix"]),
        others: &[
            ("SCSI (LSI Logic)", &["mptspi"]),
            ("PVSCSI", &["vmw_pvscsi"]),
            ("SCSI (BusLogic)", &["BusLogic"]),
        ],
        device: "/dev/sda",
    },
    Bus {
        vm: "ec2",
        default: ("NVMe (Nitro instances)", &["nvme"]),
        others: &[("Xen blkfront (Xen instances)", &["xen_blkfront"])],
        device: "/dev/nvme0n1",
    },
    Bus {
        vm: "xen",
        default: ("Xen blkfront", &["xen_blkfront"]),
        others: &[("emulated IDE (HVM)", &["ata_piix", "ide_piix"])],
        device: "/dev/xvda",
    },
];

/// Whether a guest converted from `content` boots on `vm`.
pub fn verdict(content: &Content, vm: Vm) -> BootVerdict {
    let name = vm.as_str().to_string();
    let mut v = BootVerdict {
        vm: name.clone(),
        boots: Boots::Yes,
        summary: String::new(),
        refusal: None,
        warnings: vec![],
    };
    let Some(r) = &content.guest else {
        v.boots = Boots::Unknown;
        v.summary = format!(
            "unknown: the guest could not be read ({})",
            content.unreadable.as_deref().unwrap_or("no filesystem vmrepo reads")
        );
        return v;
    };
    let b = &r.boot;
    let pv_ok = vm.boots_xen_paravirtual();
    match b.verdict {
        GuestBoot::Unknown => {
            v.boots = Boots::Unknown;
            v.summary = "unknown: no filesystem holding /boot could be read".into();
            return v;
        }
        GuestBoot::NoKernel => {
            v.boots = Boots::No;
            v.summary = "no kernel: the guest is not bootable on its own on any VM software".into();
            v.warnings.push(
                "install a kernel and a boot loader in the guest (or start it with a kernel from outside)"
                    .into(),
            );
            return v;
        }
        GuestBoot::XenParavirtual if pv_ok == Some(true) => {
            v.summary =
                format!("yes: a Xen paravirtual guest ({}), booted by Xen", b.xen_evidence.join("; "));
        }
        GuestBoot::XenParavirtual => {
            let expects = b.kernel_versions();
            let expects = if expects.is_empty() {
                "the host's Xen kernel or pv-grub".to_string()
            } else {
                format!("the Xen kernel {} (started by the host or pv-grub)", expects.join(", "))
            };
            let reason = format!(
                "a Xen paravirtual guest ({}) has no kernel of its own that {name} can boot: it expects {expects}. \
                 To run it on {name}, install a non-Xen kernel of the same release and a boot loader (GRUB) \
                 on a partitioned disk, with {} in its initrd, then convert it",
                b.xen_evidence.join("; "),
                bus(vm).map_or("the target's disk driver".to_string(), |x| x.default.1.join(" or ")),
            );
            if pv_ok.is_none() {
                v.boots = Boots::Unknown;
                v.summary = format!("unknown: {name} is not in the table, and {reason}");
                return v;
            }
            v.boots = Boots::No;
            v.summary = format!("no: a Xen paravirtual guest; it will not boot on {name}");
            v.refusal = Some(reason);
            return v;
        }
        GuestBoot::OwnKernel => {
            let own: Vec<&str> = b.kernels.iter().filter(|k| !k.xen).map(|k| k.version.as_str()).collect();
            v.summary = format!("yes: a kernel of its own ({})", own.join(", "));
        }
    }
    if let Some(bus) = bus(vm) {
        bus_warnings(b, bus, &mut v.warnings);
        for ev in b.xen_evidence.iter().filter(|e| e.starts_with("/etc/fstab mounts")) {
            if vm.as_str() != "xen" {
                v.warnings.push(format!(
                    "{ev} by its Xen device name: on {name} the first disk is {}; mount by LABEL= or UUID=",
                    bus.device
                ));
            }
        }
    } else {
        v.boots = Boots::Unknown;
        v.summary
            .push_str(&format!("; {name} is not in the table of disk buses: its drivers were not checked"));
        return v;
    }
    if !v.warnings.is_empty() {
        v.boots = Boots::WithWarnings;
    }
    v
}

fn bus(vm: Vm) -> Option<&'static Bus> {
    BUSES.iter().find(|b| b.vm == vm.as_str())
}

/// Warns where no kernel of the guest's own drives the target's default disk
/// bus: which bus to choose instead, or that none is driven.
fn bus_warnings(b: &vmrepo_inspect::kernel::Boot, bus: &Bus, out: &mut Vec<String>) {
    let own: Vec<&str> = b.kernels.iter().filter(|k| !k.xen).map(|k| k.version.as_str()).collect();
    let trees: Vec<&vmrepo_inspect::kernel::DiskDrivers> = b
        .disk_drivers
        .iter()
        .filter(|d| own.is_empty() || own.contains(&d.version.as_str()))
        // A tree with no disk driver at all is a monolithic kernel or an
        // empty tree: nothing to conclude from it.
        .filter(|d| !d.drivers.is_empty())
        .collect();
    if trees.is_empty() {
        return;
    }
    let has = |drivers: &[&str]| trees.iter().any(|t| drivers.iter().any(|d| t.drivers.contains(d)));
    if has(bus.default.1) {
        return;
    }
    let versions: Vec<&str> = trees.iter().map(|t| t.version.as_str()).collect();
    match bus.others.iter().find(|(_, drivers)| has(drivers)) {
        Some((other, drivers)) => out.push(format!(
            "the kernel ({}) has no {} driver for {} disk bus ({}): attach the disk as {other} ({})",
            versions.join(", "),
            bus.default.1.join(" or "),
            bus.vm,
            bus.default.0,
            drivers.join(" or ")
        )),
        None => out.push(format!(
            "the kernel ({}) has no driver for any disk bus {} offers ({}{}): it will not find its root disk",
            versions.join(", "),
            bus.vm,
            bus.default.0,
            bus.others.iter().map(|(n, _)| format!(", {n}")).collect::<String>()
        )),
    }
}

/// The lines of the converted image's description: where it came from, and
/// the verdict.
pub fn description_notes(
    source: &str,
    sha256: &str,
    output: &Output,
    v: &BootVerdict,
    forced: bool,
) -> String {
    let mut s = format!(
        "Converted from {source} (SHA-256 {sha256}) by vmrepo convert, as {output}.\nBoot verdict for {}: {}\n",
        v.vm, v.summary
    );
    if let Some(r) = &v.refusal {
        s.push_str(&format!("WARNING: {r}.{}\n", if forced { " Converted anyway (--force)." } else { "" }));
    }
    for w in &v.warnings {
        s.push_str(&format!("Warning: {w}.\n"));
    }
    s
}
