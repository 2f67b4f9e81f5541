//! The STAR virtual machine image naming convention.
//!
//! The specification names every image
//! `<OS>_<ISA>_<word size>_<STAR lib>_<max size>[_<detail>].<ext>` and keeps it
//! under `vm/<VM software>/`. This crate parses such names into typed fields,
//! says exactly what is wrong with a bad one, and formats fields back into a
//! name with an exact round trip: `ImageName::parse(s)?.to_string() == s`.
//!
//! Every field is a newtype that keeps its own invariant, so code holding an
//! [`ImageName`] never checks a field again. Names written in a file name are
//! parsed strictly (the spelling the convention uses, nothing else); values a
//! person types on the command line are parsed leniently by each field's
//! `from_user` and turned into that spelling.
//!
//! ```
//! use vmrepo_name::ImageName;
//!
//! let name = ImageName::parse("sl4_x86_32_sl08e_8GB_ec2.img")?;
//! assert_eq!(name.os().to_string(), "sl4");
//! assert_eq!(name.word_size().bits(), 32);
//! assert_eq!(name.max_size().bytes(), 8 << 30);
//! assert_eq!(name.stem(), "sl4_x86_32_sl08e_8GB_ec2");
//! assert_eq!(name.to_string(), "sl4_x86_32_sl08e_8GB_ec2.img");
//!
//! let bad = ImageName::parse("sl4_x86_33_sl08e_8GB.img").unwrap_err();
//! assert_eq!(bad.field(), vmrepo_name::Field::WordSize);
//! # Ok::<(), vmrepo_name::NameError>(())
//! ```
//!
//! # Errors
//! Every parser returns a [`NameError`] naming the [`Field`] at fault, the text
//! found there and what was expected.
#![forbid(unsafe_code)]

mod detail;
mod error;
mod ext;
mod image_name;
mod isa;
mod max_size;
mod os;
mod osinfo_ids;
mod star_lib;
mod vm;
mod word_size;

pub use detail::{Detail, MAX_DETAIL_LEN};
pub use error::{Field, NameError};
pub use ext::{Extension, MAX_EXT_LEN};
pub use image_name::{ImageName, MAX_NAME_LEN, NameParts};
pub use isa::Isa;
pub use max_size::{MAX_BYTES as MAX_SIZE_BYTES, MaxSize};
pub use os::{Os, OsFamily};
pub use star_lib::StarLib;
pub use vm::{MAX_VM_LEN, OtherVm, Vm};
pub use word_size::WordSize;

/// Checks what every name and field must satisfy whatever its place: printable
/// ASCII with no path separator, no NUL or control character and no `..`.
pub(crate) fn check_safe(field: Field, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::new(field, s, "is empty"));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        let what = if c == '\0' {
            "contains a NUL character".to_string()
        } else if c.is_ascii_control() {
            format!("contains the control character {:?}", c)
        } else {
            format!("contains the non-ASCII character {c:?}")
        };
        return Err(NameError::new(field, s, what));
    }
    if s.contains('/') || s.contains('\\') {
        return Err(NameError::new(field, s, "contains a path separator"));
    }
    if s.contains("..") {
        return Err(NameError::new(field, s, "contains '..'"));
    }
    if s.contains(' ') {
        return Err(NameError::new(field, s, "contains a space"));
    }
    Ok(())
}
