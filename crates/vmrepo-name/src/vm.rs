use std::fmt;
use std::str::FromStr;

use crate::{Field, NameError};

/// The virtual machine software an image is made for: the `vm/<VM>/` folder.
///
/// Accepted in any case from a person (`VirtualBox`, `KVM`), always written in
/// the specification's spelling (`virtualBox`, `kvm`).
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
}

impl Vm {
    /// Every VM software, in the order the specification lists folders.
    pub const ALL: [Vm; 4] = [Vm::Xen, Vm::Kvm, Vm::VirtualBox, Vm::Vmware];

    /// The folder name, in the specification's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Vm::Xen => "xen",
            Vm::Kvm => "kvm",
            Vm::VirtualBox => "virtualBox",
            Vm::Vmware => "vmware",
        }
    }

    /// Parses a VM name in any case (`VirtualBox`, `virtualbox`, `KVM`).
    ///
    /// # Errors
    /// A name that is none of xen, kvm, virtualBox, vmware.
    pub fn from_user(s: &str) -> Result<Vm, NameError> {
        Vm::ALL.into_iter().find(|vm| vm.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            NameError::new(Field::Vm, s, "expected one of xen, kvm, virtualBox, vmware (any case)")
        })
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
        assert_eq!(Vm::from_user("KVM").unwrap(), Vm::Kvm);
        assert_eq!(Vm::from_user("xen").unwrap(), Vm::Xen);
        assert!(Vm::from_user("hyperv").is_err());
        assert!(Vm::from_user("").is_err());
    }
}
