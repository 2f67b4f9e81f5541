//! Kernels: each one in /boot with its version (from the file name and from
//! the bzImage header), its initrd and modules; the bootloader configuration;
//! and how the guest starts: on a kernel of its own, as a Xen paravirtual
//! guest (said only with evidence of Xen, listed), or not at all (no kernel,
//! as in a debootstrap root).

use serde::Serialize;

use crate::conf;
use crate::guest::{ExtFs, Kind};

/// One kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Its path in the guest.
    pub path: String,
    /// The version in the file name (`2.6.18-128.el5`).
    pub version: String,
    /// The version the bzImage header gives, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_version: Option<String>,
    /// A Xen (paravirtual) kernel.
    pub xen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// `/lib/modules/<version>` exists.
    pub modules: bool,
}

/// How the guest starts, as far as its files tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A kernel of its own that is not a Xen kernel, on a disk a boot loader
    /// can start it from: it boots on its own (VirtualBox, VMware, KVM), even
    /// if it is set up for Xen as well ([`Boot::xen_evidence`] says how).
    OwnKernel,
    /// Xen evidence ([`Boot::xen_evidence`]) and no kernel of its own that the
    /// disk can boot: a Xen paravirtual guest, started with a kernel from
    /// outside or a Xen kernel; it will not boot on VirtualBox, VMware or KVM.
    XenParavirtual,
    /// No kernel and no evidence of Xen (a debootstrap root): not bootable on
    /// its own, and nothing says which hypervisor it was made for.
    NoKernel,
    /// Neither the root filesystem nor a boot filesystem could be read.
    #[default]
    Unknown,
}

/// What the boot files say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Boot {
    pub kernels: Vec<Kernel>,
    /// Bootloader configuration files found.
    pub bootloader: Vec<String>,
    /// Versions of the module trees under /lib/modules.
    pub module_trees: Vec<String>,
    /// The image carries a kernel of its own that is not a Xen kernel
    /// (unknown when no filesystem holding /boot could be read).
    pub own_kernel: Option<bool>,
    /// A Xen paravirtual guest, by evidence: [`Verdict::XenParavirtual`]
    /// (unknown when no filesystem holding /boot could be read). A guest with
    /// no kernel and no evidence of Xen is not one.
    pub xen_paravirtual: Option<bool>,
    /// What says the guest is set up as a Xen paravirtual guest, one clue
    /// each: a Xen kernel or module tree, a `/dev/xvd*` in `/etc/fstab`, a
    /// console on `hvc0` or `xvc0`, a pv-grub menu, a kernel on a bare
    /// filesystem that no boot loader on the disk can start.
    pub xen_evidence: Vec<String>,
    /// How the guest starts.
    pub verdict: Verdict,
    /// The disk drivers each module tree holds (as a module or built in):
    /// which disk bus a hypervisor may give the guest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disk_drivers: Vec<DiskDrivers>,
}

/// The disk drivers of one kernel's module tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiskDrivers {
    /// The module tree (`/lib/modules/<version>`).
    pub version: String,
    /// The drivers found, by their names in [`DISK_DRIVERS`].
    pub drivers: Vec<&'static str>,
}

/// The disk drivers looked for, and where a module tree keeps each (under
/// `kernel/`, as a `.ko` possibly compressed, or listed in `modules.builtin`).
pub const DISK_DRIVERS: [(&str, &[&str]); 10] = [
    ("virtio_blk", &["drivers/block/virtio_blk"]),
    ("virtio_scsi", &["drivers/scsi/virtio_scsi"]),
    ("ahci", &["drivers/ata/ahci"]),
    ("ata_piix", &["drivers/ata/ata_piix"]),
    ("ide_piix", &["drivers/ide/pci/piix", "drivers/ide/piix"]),
    ("mptspi", &["drivers/message/fusion/mptspi"]),
    ("vmw_pvscsi", &["drivers/scsi/vmw_pvscsi"]),
    ("BusLogic", &["drivers/scsi/BusLogic"]),
    ("xen_blkfront", &["drivers/block/xen-blkfront", "drivers/xen/blkfront/xenblk"]),
    ("nvme", &["drivers/nvme/host/nvme", "drivers/block/nvme"]),
];

/// The most module trees whose drivers are listed.
const MAX_DRIVER_TREES: usize = 16;
/// The largest `modules.builtin` read.
const MAX_BUILTIN: u64 = 1 << 20;

/// The disk drivers in `/lib/modules/<version>`: a module file (`.ko`,
/// `.ko.xz`, `.ko.gz`, `.ko.zst`) or a line of `modules.builtin`.
fn disk_drivers(root: &ExtFs, version: &str) -> Vec<&'static str> {
    let tree = format!("/lib/modules/{version}");
    let builtin = root.read(&format!("{tree}/modules.builtin"), MAX_BUILTIN).unwrap_or_default();
    let builtin = String::from_utf8_lossy(&builtin);
    let builtin: Vec<&str> = builtin.lines().map(|l| l.trim().trim_end_matches(".ko")).collect();
    DISK_DRIVERS
        .iter()
        .filter(|(_, paths)| {
            paths.iter().any(|p| {
                builtin.contains(&format!("kernel/{p}").as_str())
                    || ["ko", "ko.xz", "ko.gz", "ko.zst"]
                        .iter()
                        .any(|ext| root.stat(&format!("{tree}/kernel/{p}.{ext}")).is_some())
            })
        })
        .map(|(name, _)| *name)
        .collect()
}

impl Boot {
    /// The guest's kernel versions: those of its kernels, else (an empty
    /// /boot, as in a Xen guest) those of its module trees.
    pub fn kernel_versions(&self) -> Vec<&str> {
        if self.kernels.is_empty() {
            self.module_trees.iter().map(String::as_str).collect()
        } else {
            self.kernels.iter().map(|k| k.version.as_str()).collect()
        }
    }
}

/// The bzImage header's magic, at 0x202.
const HDRS: &[u8; 4] = b"HdrS";

/// The kernel version string of a bzImage, from its setup header.
pub fn bzimage_version(head: &[u8], read_at: &dyn Fn(u64, usize) -> Option<Vec<u8>>) -> Option<String> {
    if head.len() < 0x210 || &head[0x202..0x206] != HDRS {
        return None;
    }
    let protocol = u16::from_le_bytes([head[0x206], head[0x207]]);
    let ptr = u16::from_le_bytes([head[0x20e], head[0x20f]]);
    if protocol < 0x200 || ptr == 0 {
        return None;
    }
    let at = 0x200u64 + u64::from(ptr);
    let s = read_at(at, 128)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ').unwrap_or(s.len());
    let v = String::from_utf8_lossy(&s[..end]).to_string();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())).then_some(v)
}

fn is_kernel_name(n: &str) -> Option<String> {
    for prefix in ["vmlinuz-", "vmlinux-", "kernel-", "bzImage-"] {
        if let Some(v) = n.strip_prefix(prefix) {
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    (n == "vmlinuz" || n == "bzImage").then(String::new)
}

/// Xen's paravirtual block devices (`/dev/xvda1`): a guest mounting them
/// runs on Xen's block front-end.
const XEN_DISK: &str = "/dev/xvd";
/// Xen's paravirtual consoles: `xvc0` (the Xen kernels of RHEL 5 and its
/// rebuilds), `hvc0` (pvops kernels). `/etc/securetty` is not read: it lists
/// both by default on guests that never ran on Xen.
const XEN_CONSOLES: [&str; 2] = ["xvc0", "hvc0"];
/// Where a console's getty is started other than in `/etc/inittab`: upstart
/// (Ubuntu 9.10 on; `event.d` before), systemd; `{}` is the console.
const CONSOLE_JOBS: [&str; 4] = [
    "/etc/init/{}.conf",
    "/etc/event.d/{}",
    "/etc/systemd/system/getty.target.wants/serial-getty@{}.service",
    "/etc/systemd/system/getty.target.wants/getty@{}.service",
];
/// Xen module trees checked at most (a tree is two lookups): a guest holds
/// a few kernels, a hostile one thousands of folders.
const MAX_XEN_TREES: usize = 16;
/// pv-grub's name for the whole first disk, with no partition.
const WHOLE_DISK_DEVICE: &str = "(hd0)";
/// grub legacy menus: what pv-grub (and pygrub) read from a Xen guest.
const GRUB_LEGACY: [&str; 2] = ["grub/menu.lst", "grub/grub.conf"];
/// grub 2 menus: pygrub reads them too.
const GRUB2: [&str; 2] = ["grub/grub.cfg", "grub2/grub.cfg"];
/// The boot loader configurations looked for, under /boot (or at the top of
/// a boot filesystem).
const BOOTLOADERS: [&str; 8] = [
    GRUB_LEGACY[0],
    GRUB_LEGACY[1],
    GRUB2[0],
    GRUB2[1],
    "extlinux/extlinux.conf",
    "extlinux.conf",
    "syslinux/syslinux.cfg",
    "loader/loader.conf",
];

/// The first device of `/etc/fstab` that is one of Xen's (`/dev/xvda1`).
fn fstab_xen_disk(fstab: &str) -> Option<&str> {
    conf::lines(fstab).filter_map(|l| conf::words(l).next()).find(|d| d.starts_with(XEN_DISK))
}

/// The Xen console an inittab (or any getty configuration) starts a getty on.
fn xen_console(text: &str) -> Option<&'static str> {
    conf::lines(text).flat_map(conf::words).find_map(|w| XEN_CONSOLES.into_iter().find(|c| *c == w))
}

/// What makes a boot menu a Xen one, in its kernel lines (`kernel` in grub
/// legacy, `linux` in grub 2): a Xen kernel or hypervisor, a Xen console
/// (`console=xvc0`, `xencons=`), a Xen disk as root (`root=/dev/xvda1`);
/// and in grub legacy a whole-disk device `(hd0)`, the form pv-grub reads on
/// a disk with no partition table (BIOS grub legacy needs a partition).
fn xen_menu(menu: &str, legacy: bool) -> Option<String> {
    for line in conf::lines(menu) {
        let mut w = conf::words(line);
        let Some(first) = w.next() else { continue };
        if legacy && conf::words(line).any(|w| w.starts_with(WHOLE_DISK_DEVICE)) {
            return Some(format!("the whole-disk device {WHOLE_DISK_DEVICE}"));
        }
        if !matches!(first, "kernel" | "linux" | "linux16" | "module") {
            continue;
        }
        for word in w {
            // The kernel's (or hypervisor's) file: `/vmlinuz-2.6.18-194.el5xen`, `(hd0,0)/xen.gz`.
            let file = word.rsplit_once('/').map(|(_, f)| f);
            if let Some(file) = file.filter(|f| f.contains("xen")) {
                return Some(format!("the Xen kernel {file}"));
            }
            if XEN_CONSOLES.contains(&word) || word == "xencons" {
                return Some(format!("a console on {word}"));
            }
            if word.starts_with(XEN_DISK) {
                return Some(format!("the root {word}"));
            }
        }
    }
    None
}

/// Looks for kernels in `root`'s /boot and, if the image has a separate boot
/// filesystem, at its top; and for evidence of Xen in the boot files, fstab
/// and the consoles. `bare_disk`: the root filesystem is on the whole disk
/// (no partition table), where no BIOS boot loader can be.
pub fn detect(root: Option<&ExtFs>, boot_fs: Option<&ExtFs>, bare_disk: bool) -> Boot {
    let mut b = Boot::default();
    let mut places: Vec<(&ExtFs, &str, &str)> = Vec::new();
    if let Some(r) = root {
        places.push((r, "/boot", "/boot"));
    }
    if let Some(bf) = boot_fs {
        places.push((bf, "", "/boot"));
    }
    let mut menus: Vec<(String, bool, String)> = Vec::new();
    for (fs, dir, shown) in places {
        let list = fs.list(if dir.is_empty() { "/" } else { dir });
        for (name, kind) in &list {
            if *kind != Kind::File {
                continue;
            }
            let Some(version) = is_kernel_name(name) else { continue };
            let path = format!("{dir}/{name}");
            let header_version = fs
                .read_head(&path, 0x400)
                .and_then(|h| bzimage_version(&h, &|off, n| fs.read_range(&path, off, n)));
            let version =
                if version.is_empty() { header_version.clone().unwrap_or_default() } else { version };
            let initrd = [
                format!("initrd-{version}.img"),
                format!("initramfs-{version}.img"),
                format!("initrd.img-{version}"),
                format!("initrd-{version}"),
            ]
            .into_iter()
            .find(|n| list.iter().any(|(l, _)| l == n))
            .map(|n| format!("{shown}/{n}"));
            let modules = root.is_some_and(|r| r.is_dir(&format!("/lib/modules/{version}")));
            let xen = version.contains("xen") || name.contains("xen");
            b.kernels.push(Kernel {
                path: format!("{shown}/{name}"),
                version,
                header_version,
                xen,
                initrd,
                modules,
            });
        }
        for cfg in BOOTLOADERS {
            let p = format!("{dir}/{cfg}");
            if fs.stat(&p).is_some_and(|(_, k)| k == Kind::File) {
                b.bootloader.push(format!("{shown}/{cfg}"));
                if GRUB_LEGACY.contains(&cfg) || GRUB2.contains(&cfg) {
                    let text = fs.read_text(&p).unwrap_or_default();
                    menus.push((format!("{shown}/{cfg}"), GRUB_LEGACY.contains(&cfg), text));
                }
            }
        }
    }
    if let Some(r) = root {
        if r.stat("/etc/lilo.conf").is_some() {
            b.bootloader.push("/etc/lilo.conf".into());
        }
        b.module_trees =
            r.list("/lib/modules").into_iter().filter(|(_, k)| *k == Kind::Dir).map(|(n, _)| n).collect();
        b.disk_drivers = b
            .module_trees
            .iter()
            .take(MAX_DRIVER_TREES)
            .map(|v| DiskDrivers { version: v.clone(), drivers: disk_drivers(r, v) })
            .collect();
    }
    b.kernels.sort_by(|a, c| a.path.cmp(&c.path));
    b.bootloader.dedup();
    if root.is_none() && boot_fs.is_none() {
        return b;
    }
    b.xen_evidence = xen_evidence(&b, root, &menus, bare_disk);
    let own = b.kernels.iter().any(|k| !k.xen);
    // A kernel on a bare filesystem with no boot loader is started from
    // outside the disk: that is evidence of Xen, not of booting on its own.
    let loadable = !(bare_disk && b.bootloader.is_empty());
    b.verdict = if own && loadable {
        Verdict::OwnKernel
    } else if !b.xen_evidence.is_empty() {
        Verdict::XenParavirtual
    } else {
        Verdict::NoKernel
    };
    b.own_kernel = Some(own);
    b.xen_paravirtual = Some(b.verdict == Verdict::XenParavirtual);
    b
}

/// The clues that the guest is set up as a Xen paravirtual guest.
fn xen_evidence(
    b: &Boot,
    root: Option<&ExtFs>,
    menus: &[(String, bool, String)],
    bare_disk: bool,
) -> Vec<String> {
    let mut ev: Vec<String> =
        b.kernels.iter().filter(|k| k.xen).map(|k| format!("Xen kernel {}", k.path)).collect();
    if let Some(r) = root {
        for v in b.module_trees.iter().filter(|v| v.contains("xen")).take(MAX_XEN_TREES) {
            // A tree without modules.dep or kernel/ is what a removed kernel leaves behind.
            let tree = format!("/lib/modules/{v}");
            let real =
                r.stat(&format!("{tree}/modules.dep")).is_some() || r.is_dir(&format!("{tree}/kernel"));
            if real && !b.kernels.iter().any(|k| k.xen && k.version == *v) {
                ev.push(format!("Xen module tree {tree}"));
            }
        }
        if let Some(d) = r.read_text("/etc/fstab").as_deref().and_then(fstab_xen_disk) {
            ev.push(format!("/etc/fstab mounts {d}"));
        }
        if let Some(c) = r.read_text("/etc/inittab").as_deref().and_then(xen_console) {
            ev.push(format!("/etc/inittab starts a console on {c}"));
        }
        for job in CONSOLE_JOBS {
            for c in XEN_CONSOLES {
                let p = job.replace("{}", c);
                if r.lstat(&p).is_some() {
                    ev.push(format!("{p} starts a console on {c}"));
                }
            }
        }
    }
    for (path, legacy, text) in menus {
        if let Some(what) = xen_menu(text, *legacy) {
            let reader = if *legacy { "pv-grub" } else { "pygrub" };
            ev.push(format!("{reader} menu {path} ({what})"));
        }
    }
    let has_kernel = !b.kernels.is_empty() || !b.module_trees.is_empty();
    if bare_disk && b.bootloader.is_empty() && has_kernel {
        ev.push("a kernel on a filesystem with no partition table and no boot loader".into());
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bzimage_header_version() {
        let mut img = vec![0u8; 0x800];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020au16.to_le_bytes());
        img[0x20e..0x210].copy_from_slice(&0x0400u16.to_le_bytes());
        img[0x600..0x600 + 40].copy_from_slice(b"2.6.18-128.el5 (mockbuild@x) #1 SMP\0\0\0\0\0");
        let reader = |img: &[u8]| {
            let img = img.to_vec();
            move |off: u64, n: usize| img.get(off as usize..off as usize + n).map(<[u8]>::to_vec)
        };
        assert_eq!(bzimage_version(&img, &reader(&img)).as_deref(), Some("2.6.18-128.el5"));
        img[0x202] = b'X';
        assert_eq!(bzimage_version(&img, &reader(&img)), None);
    }

    #[test]
    fn xen_disks_in_fstab() {
        let sl5_xen = "/dev/xvda1 / ext3 defaults 1 1\n/dev/xvda2 swap swap defaults 0 0\n";
        assert_eq!(fstab_xen_disk(sl5_xen), Some("/dev/xvda1"));
        let sl5 = "/dev/VolGroup00/LogVol00 / ext3 defaults 1 1\nLABEL=/boot /boot ext3 defaults 1 2\n";
        assert_eq!(fstab_xen_disk(sl5), None);
        assert_eq!(fstab_xen_disk("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"), None);
        assert_eq!(fstab_xen_disk("#/dev/xvda1 / ext3 defaults 1 1\n"), None);
    }

    #[test]
    fn xen_consoles_in_inittab() {
        assert_eq!(xen_console("co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n"), Some("xvc0"));
        assert_eq!(xen_console("hvc0:2345:respawn:/sbin/getty 38400 hvc0\n"), Some("hvc0"));
        assert_eq!(xen_console("1:2345:respawn:/sbin/mingetty tty1\n"), None);
        assert_eq!(xen_console("#co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n"), None);
        assert_eq!(xen_console("# hvc0 is Xen's console\n"), None);
    }

    #[test]
    fn pv_grub_menus() {
        let ec2 =
            "default 0\ntimeout 1\ntitle EC2\n root (hd0)\n kernel /boot/vmlinuz-2.6.32 root=/dev/sda1\n";
        assert_eq!(xen_menu(ec2, true).as_deref(), Some("the whole-disk device (hd0)"));
        let sl5_xen = "title Scientific Linux SL (2.6.18-128.el5xen)\n root (hd0,0)\n \
                       kernel /vmlinuz-2.6.18-128.el5xen ro root=/dev/VolGroup00/LogVol00\n";
        assert_eq!(xen_menu(sl5_xen, true).as_deref(), Some("the Xen kernel vmlinuz-2.6.18-128.el5xen"));
        let console = "title SL5\n root (hd0,0)\n kernel /vmlinuz-2.6.18-128.el5 ro console=xvc0\n";
        assert_eq!(xen_menu(console, true).as_deref(), Some("a console on xvc0"));
        let grub2 = "menuentry 'Debian' {\n linux /boot/vmlinuz-6.1.0-18-amd64 root=/dev/xvda1 ro\n}\n";
        assert_eq!(xen_menu(grub2, false).as_deref(), Some("the root /dev/xvda1"));
        // An ordinary menu, and a Xen line commented out, are no evidence.
        let sl5 = "splashimage=(hd0,0)/grub/splash.xpm.gz\ntitle SL5\n root (hd0,0)\n \
                   kernel /vmlinuz-2.6.18-128.el5 ro root=LABEL=/ rhgb quiet\n \
                   initrd /initrd-2.6.18-128.el5.img\n# kernel /vmlinuz-2.6.18-128.el5xen\n";
        assert_eq!(xen_menu(sl5, true), None);
    }

    #[test]
    fn kernel_names() {
        assert_eq!(is_kernel_name("vmlinuz-2.6.18-128.el5xen").as_deref(), Some("2.6.18-128.el5xen"));
        assert_eq!(is_kernel_name("vmlinuz-6.1.0-18-amd64").as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(is_kernel_name("initrd.img-6.1.0-18-amd64"), None);
        assert_eq!(is_kernel_name("config-6.1.0-18-amd64"), None);
    }
}
