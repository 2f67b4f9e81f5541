use std::fmt;
use std::str::FromStr;

use crate::{Field, NameError, check_safe};

/// The longest VM name accepted. Long enough for any hypervisor's or cloud's
/// name (`openstack`, `virtualBox`, `xen-hvm`), short enough for a [`Vm`] to
/// hold it inline and stay `Copy`.
pub const MAX_VM_LEN: usize = 32;

/// The virtual machine software an image is made for: the `vm/<VM>/` folder.
///
/// The specification lists "xen, kvm, virtualBox, ...": the four it names are
/// variants of their own, accepted in any case from a person (`VirtualBox`,
/// `KVM`) and always written in the specification's spelling (`virtualBox`,
/// `kvm`). Any other name of letters, digits, `-` and `.` (`ec2`,
/// `openstack`) is [`Vm::Other`], written in lower case: people type it so,
/// and a folder `vm/EC2/` is then another spelling of `ec2`, as `vm/KVM/` is
/// of `kvm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vm {
    /// Xen (often paravirtual images without a kernel of their own).
    Xen,
    /// KVM / QEMU.
    Kvm,
    /// Oracle VirtualBox.
    VirtualBox,
    /// VMware.
    Vmware,
    /// Any other VM software or cloud (`ec2`, `openstack`), in lower case.
    Other(OtherVm),
}

/// The name of a VM software the specification does not list: lower-case
/// ASCII letters, digits, `-` and `.`, at most [`MAX_VM_LEN`] bytes, never
/// one of the four [`Vm::ALL`] (those have variants of their own). Only
/// [`Vm::from_user`] makes one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OtherVm {
    // First, so that the derived order is the names' order (the padding is
    // NUL, below every allowed character).
    bytes: [u8; MAX_VM_LEN],
    len: u8,
}

impl OtherVm {
    /// The name, in lower case.
    pub fn as_str(&self) -> &str {
        let len = usize::from(self.len).min(MAX_VM_LEN);
        // Only checked ASCII is stored, so this is always valid UTF-8.
        std::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }
}

impl fmt::Debug for OtherVm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Which formats a VM software runs as they are stored, and whether it boots
/// a Xen paravirtual guest (one with no kernel of its own). One row per VM
/// software the table knows; see [`Vm::runs`].
struct Runs {
    vm: &'static str,
    formats: &'static [&'static str],
    xen_paravirtual: bool,
}

/// Every format the table has an opinion of, as vmrepo-format's
/// `Format::name()` spells them.
const FORMATS: [&str; 7] = ["raw", "iso", "qcow2", "vmdk", "vdi", "vhd", "vhdx"];

/// What each VM software runs natively. The specification: "a XEN virtual
/// machine will require a XEN image. Support for image formats other then the
/// native format of the VM is very limited and in most cases non-existent and
/// or unreliable." So a format is listed only where the VM software runs it
/// as its own, not where some importer or converter can read it:
/// - Xen: raw files and volumes, qcow2 through its qemu back end, VHD
///   (XenServer's own format through blktap). Paravirtual guests boot the
///   host's or pv-grub's kernel: they need no kernel of their own.
/// - KVM: QEMU's own formats, raw and qcow2. (QEMU reads the others too, but
///   as foreign formats: convert them.)
/// - VirtualBox: VDI (its own), VMDK and VHD.
/// - VMware: VMDK.
/// - EC2: what VM Import takes as a disk: raw, VMDK, VHD and VHDX; the image
///   boots as an HVM guest, with its own kernel.
///
/// Every VM software here boots an ISO as a CD-ROM, except EC2, which has no
/// CD-ROM drive. Only Xen boots a paravirtual guest.
const TABLE: [Runs; 5] = [
    Runs { vm: "xen", formats: &["raw", "iso", "qcow2", "vhd"], xen_paravirtual: true },
    Runs { vm: "kvm", formats: &["raw", "iso", "qcow2"], xen_paravirtual: false },
    Runs { vm: "virtualBox", formats: &["iso", "vmdk", "vdi", "vhd"], xen_paravirtual: false },
    Runs { vm: "vmware", formats: &["iso", "vmdk"], xen_paravirtual: false },
    Runs { vm: "ec2", formats: &["raw", "vmdk", "vhd", "vhdx"], xen_paravirtual: false },
];

const EXPECTED: &str = "a VM name is letters, digits, '-' and '.', starting with a letter or a digit \
     (xen, kvm, virtualBox, vmware, or another like ec2)";

impl Vm {
    /// The VM software the specification names, in the order it lists
    /// folders: the folders `init` makes.
    pub const ALL: [Vm; 4] = [Vm::Xen, Vm::Kvm, Vm::VirtualBox, Vm::Vmware];

    /// The folder name: the specification's spelling, or the other name in
    /// lower case.
    pub fn as_str(&self) -> &str {
        match self {
            Vm::Xen => "xen",
            Vm::Kvm => "kvm",
            Vm::VirtualBox => "virtualBox",
            Vm::Vmware => "vmware",
            Vm::Other(o) => o.as_str(),
        }
    }

    /// Parses a VM name in any case (`VirtualBox`, `virtualbox`, `KVM`,
    /// `EC2`): one of the four the specification names, or another written
    /// in lower case.
    ///
    /// # Errors
    /// An empty name, a character other than letters, digits, `-` and `.`, a
    /// name starting with `-` or `.` or ending with `.`, or one longer than
    /// [`MAX_VM_LEN`].
    pub fn from_user(s: &str) -> Result<Vm, NameError> {
        check_safe(Field::Vm, s)?;
        if let Some(vm) = Vm::ALL.into_iter().find(|vm| vm.as_str().eq_ignore_ascii_case(s)) {
            return Ok(vm);
        }
        if s.len() > MAX_VM_LEN {
            return Err(NameError::new(Field::Vm, s, format!("longer than {MAX_VM_LEN} characters")));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.')) {
            return Err(NameError::new(Field::Vm, s, format!("contains {c:?}: {EXPECTED}")));
        }
        if s.starts_with(['-', '.']) || s.ends_with('.') {
            return Err(NameError::new(Field::Vm, s, EXPECTED));
        }
        let mut bytes = [0u8; MAX_VM_LEN];
        for (to, from) in bytes.iter_mut().zip(s.bytes()) {
            *to = from.to_ascii_lowercase();
        }
        // s.len() <= MAX_VM_LEN, checked above, and MAX_VM_LEN fits in a u8.
        let len = u8::try_from(s.len()).map_err(|_| NameError::new(Field::Vm, s, "too long"))?;
        Ok(Vm::Other(OtherVm { bytes, len }))
    }

    /// Whether this VM software runs images of `format` (a name as
    /// vmrepo-format's `Format::name()` spells it: raw, iso, qcow2, vmdk, vdi,
    /// vhd, vhdx) as they are stored. `None` when the table has no opinion: a
    /// VM software it does not know (`openstack` runs whatever its
    /// hypervisor runs), or a format it does not know.
    pub fn runs(&self, format: &str) -> Option<bool> {
        let row = self.row()?;
        FORMATS.contains(&format).then(|| row.formats.contains(&format))
    }

    /// Whether this VM software boots a Xen paravirtual guest, one without a
    /// kernel of its own; every other needs the guest's own kernel. Only Xen
    /// does. `None` for a VM software the table does not know.
    pub fn boots_xen_paravirtual(&self) -> Option<bool> {
        self.row().map(|r| r.xen_paravirtual)
    }

    fn row(&self) -> Option<&'static Runs> {
        TABLE.iter().find(|r| r.vm == self.as_str())
    }
}

impl fmt::Display for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Vm {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vm::from_user(s)
    }
}

impl serde::Serialize for Vm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_case_in_spec_spelling_out() {
        assert_eq!(Vm::from_user("VirtualBox").unwrap().as_str(), "virtualBox");
        assert_eq!(Vm::from_user("virtualbox").unwrap(), Vm::VirtualBox);
        assert_eq!(Vm::from_user("KVM").unwrap(), Vm::Kvm);
        assert_eq!(Vm::from_user("xen").unwrap(), Vm::Xen);
        assert_eq!(Vm::from_user("VMware").unwrap(), Vm::Vmware);
        assert!(Vm::from_user("").is_err());
    }

    #[test]
    fn other_vm_names_in_lower_case() {
        let ec2 = Vm::from_user("ec2").unwrap();
        assert_eq!(ec2.as_str(), "ec2");
        assert_eq!(Vm::from_user("EC2").unwrap(), ec2);
        assert_eq!(Vm::from_user("OpenStack").unwrap().to_string(), "openstack");
        assert_eq!(Vm::from_user("xen-hvm").unwrap().as_str(), "xen-hvm");
        assert_eq!(Vm::from_user("hyper-v2.0").unwrap().as_str(), "hyper-v2.0");
        assert!(!Vm::ALL.contains(&ec2));
        let longest = "a".repeat(MAX_VM_LEN);
        assert_eq!(Vm::from_user(&longest).unwrap().as_str(), longest);
    }

    #[test]
    fn names_that_are_not_vm_names() {
        for bad in [
            "",
            ".hidden",
            ".vmrepo-staging.1",
            "-x",
            "x.",
            "my vms",
            "a_b",
            "a/b",
            "..",
            "a..b",
            "é",
            "kvm\n",
            "a\0b",
            &"a".repeat(MAX_VM_LEN + 1),
        ] {
            let e = Vm::from_user(bad).unwrap_err();
            assert_eq!(e.field(), Field::Vm, "{bad:?}");
        }
        assert!(Vm::from_user("my vms").unwrap_err().problem().contains("space"));
        assert!(Vm::from_user(&"a".repeat(33)).unwrap_err().problem().contains("longer than 32"));
    }

    #[test]
    fn copy_ordered_and_hashable_as_before() {
        let mut vms: Vec<Vm> = ["openstack", "ec2", "vmware", "xen", "kvm", "virtualbox", "ec"]
            .iter()
            .map(|s| Vm::from_user(s).unwrap())
            .collect();
        vms.sort();
        let names: Vec<&str> = vms.iter().map(Vm::as_str).collect();
        assert_eq!(names, ["xen", "kvm", "virtualBox", "vmware", "ec", "ec2", "openstack"]);
        let set: std::collections::HashSet<Vm> =
            ["EC2", "ec2", "Ec2", "kvm", "KVM"].iter().map(|s| Vm::from_user(s).unwrap()).collect();
        assert_eq!(set.len(), 2);
        let v = vms[4];
        let w = v; // Copy
        assert_eq!(v, w);
    }

    #[test]
    fn the_table_of_what_each_vm_runs() {
        let vm = |s: &str| Vm::from_user(s).unwrap();
        // The table: KVM qcow2/raw, VirtualBox vdi/vmdk/vhd, VMware
        // vmdk, Xen raw/qcow2/vhd, EC2 raw/vmdk/vhd.
        for (v, yes, no) in [
            ("kvm", &["qcow2", "raw", "iso"][..], &["vmdk", "vdi", "vhd", "vhdx"][..]),
            ("virtualBox", &["vdi", "vmdk", "vhd", "iso"], &["raw", "qcow2", "vhdx"]),
            ("vmware", &["vmdk", "iso"], &["raw", "qcow2", "vdi", "vhd", "vhdx"]),
            ("xen", &["raw", "qcow2", "vhd", "iso"], &["vmdk", "vdi", "vhdx"]),
            ("ec2", &["raw", "vmdk", "vhd", "vhdx"], &["qcow2", "vdi", "iso"]),
        ] {
            for f in yes {
                assert_eq!(vm(v).runs(f), Some(true), "{v} {f}");
            }
            for f in no {
                assert_eq!(vm(v).runs(f), Some(false), "{v} {f}");
            }
            assert_eq!(yes.len() + no.len(), FORMATS.len(), "{v}: every format has an answer");
        }
        // No opinion of a VM software or a format the table does not know.
        assert_eq!(vm("openstack").runs("qcow2"), None);
        assert_eq!(vm("kvm").runs("qed"), None);
        assert_eq!(vm("kvm").runs("QCOW2"), None, "format names are vmrepo-format's, lower case");
        // A kernel of its own everywhere but Xen.
        assert_eq!(Vm::Xen.boots_xen_paravirtual(), Some(true));
        for v in ["kvm", "virtualBox", "vmware", "ec2"] {
            assert_eq!(vm(v).boots_xen_paravirtual(), Some(false), "{v}");
        }
        assert_eq!(vm("openstack").boots_xen_paravirtual(), None);
    }

    #[test]
    fn the_table_speaks_the_format_crate_names() {
        let names: Vec<&str> = vmrepo_format::Format::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, FORMATS, "a format vmrepo reads that the VM table does not know, or the reverse");
        for row in &TABLE {
            assert!(row.formats.iter().all(|f| FORMATS.contains(f)), "{}", row.vm);
            assert!(Vm::from_user(row.vm).is_ok_and(|v| v.as_str() == row.vm), "{}", row.vm);
        }
    }
}
