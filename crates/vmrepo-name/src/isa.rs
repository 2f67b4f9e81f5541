use std::fmt;

use crate::{Field, NameError, WordSize, check_safe};

/// The instruction set architecture, in the specification's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Isa {
    /// Intel/AMD x86 (32-bit i386 and 64-bit x86_64 alike; the word size says which).
    X86,
    /// SPARC.
    Sparc,
    /// ARM (32-bit) and AArch64.
    Arm,
    /// DEC Alpha.
    Alpha,
    /// PowerPC.
    PowerPc,
    /// Atmel AVR.
    Avr,
    /// MIPS.
    Mips,
    /// Itanium.
    Ia64,
    /// RISC-V.
    RiscV,
    /// IBM System/390 and z/Architecture.
    S390,
}

/// Common names of each architecture and the word size they imply, for people
/// and for tools such as `uname -m` and Debian's architecture names.
const ALIASES: &[(&str, Isa, Option<u16>)] = &[
    ("i386", Isa::X86, Some(32)),
    ("i486", Isa::X86, Some(32)),
    ("i586", Isa::X86, Some(32)),
    ("i686", Isa::X86, Some(32)),
    ("x86_64", Isa::X86, Some(64)),
    ("x86-64", Isa::X86, Some(64)),
    ("amd64", Isa::X86, Some(64)),
    ("aarch64", Isa::Arm, Some(64)),
    ("arm64", Isa::Arm, Some(64)),
    ("armhf", Isa::Arm, Some(32)),
    ("armel", Isa::Arm, Some(32)),
    ("ppc", Isa::PowerPc, Some(32)),
    ("ppc64", Isa::PowerPc, Some(64)),
    ("ppc64le", Isa::PowerPc, Some(64)),
    ("ppc64el", Isa::PowerPc, Some(64)),
    ("sparc64", Isa::Sparc, Some(64)),
    ("mips64", Isa::Mips, Some(64)),
    ("mipsel", Isa::Mips, Some(32)),
    ("riscv64", Isa::RiscV, Some(64)),
    ("s390x", Isa::S390, Some(64)),
];

impl Isa {
    /// Every architecture, the specification's list first.
    pub const ALL: [Isa; 10] = [
        Isa::X86,
        Isa::Sparc,
        Isa::Arm,
        Isa::Alpha,
        Isa::PowerPc,
        Isa::Avr,
        Isa::Mips,
        Isa::Ia64,
        Isa::RiscV,
        Isa::S390,
    ];

    /// The token as names write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::X86 => "x86",
            Isa::Sparc => "SPARC",
            Isa::Arm => "ARM",
            Isa::Alpha => "Alpha",
            Isa::PowerPc => "PowerPC",
            Isa::Avr => "AVR",
            Isa::Mips => "MIPS",
            Isa::Ia64 => "IA64",
            Isa::RiscV => "RISCV",
            Isa::S390 => "s390",
        }
    }

    fn known() -> String {
        Isa::ALL.map(Isa::as_str).join(", ")
    }

    /// Parses the field of a name, in the convention's spelling only.
    ///
    /// # Errors
    /// An unknown architecture or one spelled otherwise (`sparc` for `SPARC`).
    pub fn parse(s: &str) -> Result<Isa, NameError> {
        check_safe(Field::Isa, s)?;
        if let Some(isa) = Isa::ALL.into_iter().find(|i| i.as_str() == s) {
            return Ok(isa);
        }
        match Isa::from_user(s) {
            Ok((isa, _)) => Err(NameError::new(
                Field::Isa,
                s,
                format!("the instruction set is written {:?} in names", isa.as_str()),
            )),
            Err(e) => Err(e),
        }
    }

    /// Parses what a person typed: any case, and the common aliases (`amd64`,
    /// `i686`, `aarch64` ...), with the word size an alias implies.
    ///
    /// # Errors
    /// A name that is no architecture vmrepo knows.
    pub fn from_user(s: &str) -> Result<(Isa, Option<WordSize>), NameError> {
        check_safe(Field::Isa, s)?;
        if let Some(isa) = Isa::ALL.into_iter().find(|i| i.as_str().eq_ignore_ascii_case(s)) {
            return Ok((isa, None));
        }
        if let Some((_, isa, bits)) = ALIASES.iter().find(|(a, _, _)| a.eq_ignore_ascii_case(s)) {
            return Ok((*isa, bits.and_then(|b| WordSize::new(b).ok())));
        }
        Err(NameError::new(
            Field::Isa,
            s,
            format!("unknown instruction set (expected one of {})", Isa::known()),
        ))
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Isa {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_list() {
        for t in ["x86", "SPARC", "ARM", "Alpha", "PowerPC", "AVR"] {
            assert_eq!(Isa::parse(t).unwrap().as_str(), t);
        }
        assert!(Isa::parse("sparc").unwrap_err().problem().contains("SPARC"));
        assert!(Isa::parse("x87").is_err());
    }

    #[test]
    fn aliases_imply_word_size() {
        let (isa, bits) = Isa::from_user("amd64").unwrap();
        assert_eq!((isa, bits.map(|b| b.bits())), (Isa::X86, Some(64)));
        let (isa, bits) = Isa::from_user("i686").unwrap();
        assert_eq!((isa, bits.map(|b| b.bits())), (Isa::X86, Some(32)));
        assert_eq!(Isa::from_user("powerpc").unwrap(), (Isa::PowerPc, None));
    }
}
