//! Kernels: each one in /boot with its version (from the file name and from
//! the bzImage header), its initrd and modules; the bootloader configuration;
//! and whether the image boots on its own kernel or is a Xen paravirtual
//! guest (no kernel, or only Xen kernels: it will not boot on VirtualBox).

use serde::Serialize;

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
    /// No kernel, or only Xen kernels: a Xen paravirtual guest, started with a
    /// kernel from outside; it will not boot on VirtualBox, VMware or KVM alone.
    pub xen_paravirtual: Option<bool>,
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

/// Looks for kernels in `root`'s /boot and, if the image has a separate boot
/// filesystem, at its top.
pub fn detect(root: Option<&ExtFs>, boot_fs: Option<&ExtFs>) -> Boot {
    let mut b = Boot::default();
    let mut places: Vec<(&ExtFs, &str, &str)> = Vec::new();
    if let Some(r) = root {
        places.push((r, "/boot", "/boot"));
    }
    if let Some(bf) = boot_fs {
        places.push((bf, "", "/boot"));
    }
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
        for cfg in [
            "grub/menu.lst",
            "grub/grub.conf",
            "grub/grub.cfg",
            "grub2/grub.cfg",
            "extlinux/extlinux.conf",
            "extlinux.conf",
            "syslinux/syslinux.cfg",
            "loader/loader.conf",
        ] {
            let p = format!("{dir}/{cfg}");
            if fs.stat(&p).is_some_and(|(_, k)| k == Kind::File) {
                b.bootloader.push(format!("{shown}/{cfg}"));
            }
        }
    }
    if let Some(r) = root {
        if r.stat("/etc/lilo.conf").is_some() {
            b.bootloader.push("/etc/lilo.conf".into());
        }
        b.module_trees =
            r.list("/lib/modules").into_iter().filter(|(_, k)| *k == Kind::Dir).map(|(n, _)| n).collect();
    }
    b.kernels.sort_by(|a, c| a.path.cmp(&c.path));
    b.bootloader.dedup();
    if root.is_some() || boot_fs.is_some() {
        let own = b.kernels.iter().any(|k| !k.xen);
        b.own_kernel = Some(own);
        b.xen_paravirtual = Some(!own);
    }
    b
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
    fn kernel_names() {
        assert_eq!(is_kernel_name("vmlinuz-2.6.18-128.el5xen").as_deref(), Some("2.6.18-128.el5xen"));
        assert_eq!(is_kernel_name("vmlinuz-6.1.0-18-amd64").as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(is_kernel_name("initrd.img-6.1.0-18-amd64"), None);
        assert_eq!(is_kernel_name("config-6.1.0-18-amd64"), None);
    }
}
