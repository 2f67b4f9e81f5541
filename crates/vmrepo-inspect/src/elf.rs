//! The instruction set and word size, from the ELF headers of the guest's
//! shell and core tools.

use serde::Serialize;
use vmrepo_name::Isa;

use crate::guest::ExtFs;

/// What an ELF binary is built for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Arch {
    /// The instruction set as names write it (`x86`).
    pub isa: String,
    pub bits: u16,
    /// The machine as the ELF header names it (`x86-64`, `i386`, `AArch64` ...).
    pub machine: String,
    /// The binary it was read from.
    pub from: String,
}

/// ELF e_machine values.
fn machine(m: u16) -> Option<(Isa, &'static str)> {
    Some(match m {
        3 => (Isa::X86, "i386"),
        62 => (Isa::X86, "x86-64"),
        40 => (Isa::Arm, "ARM"),
        183 => (Isa::Arm, "AArch64"),
        2 => (Isa::Sparc, "SPARC"),
        18 => (Isa::Sparc, "SPARC32+"),
        43 => (Isa::Sparc, "SPARC V9"),
        20 => (Isa::PowerPc, "PowerPC"),
        21 => (Isa::PowerPc, "PowerPC64"),
        8 => (Isa::Mips, "MIPS"),
        50 => (Isa::Ia64, "IA-64"),
        22 => (Isa::S390, "S/390"),
        243 => (Isa::RiscV, "RISC-V"),
        83 => (Isa::Avr, "AVR"),
        0x9026 => (Isa::Alpha, "Alpha"),
        _ => return None,
    })
}

/// Reads an ELF header.
pub fn parse(h: &[u8]) -> Option<(Isa, u16, &'static str)> {
    if h.len() < 20 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let bits = match h[4] {
        1 => 32,
        2 => 64,
        _ => return None,
    };
    let m = match h[5] {
        1 => u16::from_le_bytes([h[18], h[19]]),
        2 => u16::from_be_bytes([h[18], h[19]]),
        _ => return None,
    };
    let (isa, name) = machine(m)?;
    Some((isa, bits, name))
}

/// The architecture of the first of /bin/sh, /bin/bash, /bin/ls, /usr/bin/ls
/// that is an ELF binary (links resolved inside the guest).
pub fn detect(root: &ExtFs) -> Option<Arch> {
    for p in ["/bin/sh", "/bin/bash", "/bin/ls", "/usr/bin/ls", "/usr/bin/bash", "/sbin/init"] {
        let Some(h) = root.read_head(p, 64) else { continue };
        if let Some((isa, bits, name)) = parse(&h) {
            return Some(Arch { isa: isa.as_str().into(), bits, machine: name.into(), from: p.into() });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 62;
        assert_eq!(parse(&h), Some((Isa::X86, 64, "x86-64")));
        h[4] = 1;
        h[18] = 3;
        assert_eq!(parse(&h), Some((Isa::X86, 32, "i386")));
        h[5] = 2;
        h[18] = 0;
        h[19] = 20;
        assert_eq!(parse(&h), Some((Isa::PowerPc, 32, "PowerPC")));
        assert_eq!(parse(b"#!/bin/sh\n"), None);
    }
}
