use std::fmt;

use crate::{Detail, Extension, Field, Isa, MaxSize, NameError, Os, StarLib, WordSize, check_safe};

/// The longest name accepted, leaving room under the 255-byte file name limit
/// for the sidecar suffix and the temporary names an import uses.
pub const MAX_NAME_LEN: usize = 200;

/// Extensions [`ImageName::parse`] recognises at the end of a name without
/// being told whether it names a file or a folder.
const KNOWN_EXTENSIONS: [&str; 8] = ["img", "raw", "iso", "qcow2", "vmdk", "vdi", "vhd", "vhdx"];

const SHAPE: &str = "<OS>_<ISA>_<word size>_<STAR lib>_<max size>[_<detail>].<ext>";

/// A name that follows the convention, every field checked.
///
/// `ext` is absent for an image made of several files: a folder named by the
/// convention, holding the parts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageName {
    os: Os,
    isa: Isa,
    word_size: WordSize,
    lib: StarLib,
    max_size: MaxSize,
    detail: Option<Detail>,
    ext: Option<Extension>,
}

/// The fields of a name, for building one with [`ImageName::new`].
#[derive(Clone, Debug)]
pub struct NameParts {
    pub os: Os,
    pub isa: Isa,
    pub word_size: WordSize,
    pub lib: StarLib,
    pub max_size: MaxSize,
    pub detail: Option<Detail>,
    pub ext: Option<Extension>,
}

/// Whether a name is read as a file name, a folder name, or told apart by its ending.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    File,
    Folder,
    Guess,
}

impl ImageName {
    /// Builds a name from fields that are each already valid.
    ///
    /// # Errors
    /// The whole name is longer than [`MAX_NAME_LEN`].
    pub fn new(parts: NameParts) -> Result<ImageName, NameError> {
        let name = ImageName {
            os: parts.os,
            isa: parts.isa,
            word_size: parts.word_size,
            lib: parts.lib,
            max_size: parts.max_size,
            detail: parts.detail,
            ext: parts.ext,
        };
        let text = name.to_string();
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::new(Field::Name, &text, format!("longer than {MAX_NAME_LEN} characters")));
        }
        Ok(name)
    }

    /// Parses a name, telling a file from a folder by its ending: a name ending
    /// in a known image extension (`.img`, `.qcow2`, `.vmdk`, `.vdi`, `.vhd`,
    /// `.vhdx`, `.iso`, `.raw`) names a file, any other a folder.
    ///
    /// # Errors
    /// The first field that is wrong; [`ImageName::check`] lists them all.
    pub fn parse(s: &str) -> Result<ImageName, NameError> {
        parse(s, Shape::Guess).map_err(first)
    }

    /// Parses the name of an image file: the text after the last `.` is the
    /// extension, whatever it is.
    ///
    /// # Errors
    /// As [`ImageName::parse`], and a name without an extension.
    pub fn parse_file(s: &str) -> Result<ImageName, NameError> {
        parse(s, Shape::File).map_err(first)
    }

    /// Parses the name of an image folder, or the stem of a file name: no extension.
    ///
    /// # Errors
    /// As [`ImageName::parse`].
    pub fn parse_stem(s: &str) -> Result<ImageName, NameError> {
        parse(s, Shape::Folder).map_err(first)
    }

    /// Every problem of a name, one per field at fault; empty when it is valid.
    pub fn check(s: &str) -> Vec<NameError> {
        match parse(s, Shape::Guess) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        }
    }

    pub fn os(&self) -> &Os {
        &self.os
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    pub fn word_size(&self) -> WordSize {
        self.word_size
    }
    pub fn lib(&self) -> &StarLib {
        &self.lib
    }
    pub fn max_size(&self) -> &MaxSize {
        &self.max_size
    }
    pub fn detail(&self) -> Option<&Detail> {
        self.detail.as_ref()
    }
    /// The extension; `None` for a folder image.
    pub fn ext(&self) -> Option<&Extension> {
        self.ext.as_ref()
    }

    /// The same name with another extension (or none, for a folder).
    pub fn with_ext(&self, ext: Option<Extension>) -> Result<ImageName, NameError> {
        ImageName::new(NameParts { ext, ..self.parts() })
    }

    /// The fields, to change one and build a new name.
    pub fn parts(&self) -> NameParts {
        NameParts {
            os: self.os.clone(),
            isa: self.isa,
            word_size: self.word_size,
            lib: self.lib.clone(),
            max_size: self.max_size.clone(),
            detail: self.detail.clone(),
            ext: self.ext.clone(),
        }
    }

    /// The name without its extension: what identifies the image, and what its
    /// sidecars are named after.
    pub fn stem(&self) -> String {
        let mut s = format!("{}_{}_{}_{}_{}", self.os, self.isa, self.word_size, self.lib, self.max_size);
        if let Some(d) = &self.detail {
            s.push('_');
            s.push_str(d.as_str());
        }
        s
    }

    /// `<stem>.checksum`, as the specification's `md5sum x.img > x.checksum`.
    pub fn checksum_file_name(&self) -> String {
        format!("{}.checksum", self.stem())
    }

    /// `<stem>.txt`, the description.
    pub fn description_file_name(&self) -> String {
        format!("{}.txt", self.stem())
    }
}

fn first(mut errors: Vec<NameError>) -> NameError {
    // parse() never returns an empty error list.
    errors.swap_remove(0)
}

fn parse(s: &str, shape: Shape) -> Result<ImageName, Vec<NameError>> {
    check_safe(Field::Name, s).map_err(|e| vec![e])?;
    if s.len() > MAX_NAME_LEN {
        return Err(vec![NameError::new(Field::Name, s, format!("longer than {MAX_NAME_LEN} characters"))]);
    }
    // The extension is the text after the last '.' of the last field.
    let last_field_start = s.rfind('_').map_or(0, |i| i + 1);
    let dot = s[last_field_start..].rfind('.').map(|i| last_field_start + i);
    let (stem, ext) = match (shape, dot) {
        (Shape::Folder, _) => (s, None),
        (Shape::File, Some(d)) => (&s[..d], Some(&s[d + 1..])),
        (Shape::File, None) => {
            return Err(vec![NameError::new(
                Field::Ext,
                s,
                "a file name needs an extension (.qcow2, .vmdk, .img ...)",
            )]);
        }
        (Shape::Guess, Some(d)) if KNOWN_EXTENSIONS.contains(&&s[d + 1..]) => (&s[..d], Some(&s[d + 1..])),
        (Shape::Guess, _) => (s, None),
    };
    let fields: Vec<&str> = stem.split('_').collect();
    if fields.len() < 5 {
        return Err(vec![NameError::new(
            Field::Name,
            s,
            format!("has {} of the 5 fields before the detail: expected {SHAPE}", fields.len()),
        )]);
    }
    if fields.len() > 6 {
        return Err(vec![NameError::new(
            Field::Name,
            s,
            format!("has {} fields: expected {SHAPE}, and the detail may not contain '_'", fields.len()),
        )]);
    }
    let mut errors = Vec::new();
    let os = keep(&mut errors, Os::parse(fields[0]));
    let isa = keep(&mut errors, Isa::parse(fields[1]));
    let word_size = keep(&mut errors, WordSize::parse(fields[2]));
    let lib = keep(&mut errors, StarLib::parse(fields[3]));
    let max_size = keep(&mut errors, MaxSize::parse(fields[4]));
    let detail = match fields.get(5) {
        Some(d) => keep(&mut errors, Detail::parse(d)),
        None => None,
    };
    let ext = match ext {
        Some(e) => keep(&mut errors, Extension::parse(e)),
        None => None,
    };
    match (os, isa, word_size, lib, max_size) {
        (Some(os), Some(isa), Some(word_size), Some(lib), Some(max_size)) if errors.is_empty() => {
            Ok(ImageName { os, isa, word_size, lib, max_size, detail, ext })
        }
        _ => Err(errors),
    }
}

/// The value of a field that parsed, the error of one that did not.
fn keep<T>(errors: &mut Vec<NameError>, r: Result<T, NameError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stem())?;
        if let Some(e) = &self.ext {
            write!(f, ".{e}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for ImageName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example() {
        let n = ImageName::parse("sl4_x86_32_sl08e_8GB_ec2.img").unwrap();
        assert_eq!(n.os().to_string(), "sl4");
        assert_eq!(n.isa(), Isa::X86);
        assert_eq!(n.word_size().bits(), 32);
        assert_eq!(n.lib().as_str(), "sl08e");
        assert_eq!(n.max_size().bytes(), 8 << 30);
        assert_eq!(n.detail().unwrap().as_str(), "ec2");
        assert_eq!(n.ext().unwrap().as_str(), "img");
        assert_eq!(n.checksum_file_name(), "sl4_x86_32_sl08e_8GB_ec2.checksum");
        assert_eq!(n.description_file_name(), "sl4_x86_32_sl08e_8GB_ec2.txt");
    }

    #[test]
    fn exact_round_trip() {
        for s in [
            "sl4_x86_32_sl08e_8GB_ec2.img",
            "sl5.3_x86_64_sl10k_1536GB.qcow2",
            "ubuntu9.10_x86_64_sl11d_500MB_r1.2.vmdk",
            "centOS5_PowerPC_32_sl09a_2GB.vdi",
            "fedora12_ARM_64_sl10k_1152GB_a-b.vhdx",
            "sl5.3_x86_64_sl08e_8GB_multi",
            "sl5.3_x86_64_sl08e_1536GB",
            "sl5.3_x86_64_sl08e_8GB_r1.2",
        ] {
            assert_eq!(ImageName::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn file_folder_and_guess() {
        assert!(ImageName::parse("sl4_x86_32_sl08e_8GB").unwrap().ext().is_none());
        let f = ImageName::parse_file("sl4_x86_32_sl08e_8GB_ec2.dsk").unwrap();
        assert_eq!((f.detail().unwrap().as_str(), f.ext().unwrap().as_str()), ("ec2", "dsk"));
        let g = ImageName::parse("sl4_x86_32_sl08e_8GB_ec2.dsk").unwrap();
        assert_eq!((g.detail().unwrap().as_str(), g.ext()), ("ec2.dsk", None));
        let f = ImageName::parse_file("sl4_x86_32_sl08e_1536GB.img").unwrap();
        assert_eq!(f.max_size().as_str(), "1536GB");
        assert!(ImageName::parse_file("sl4_x86_32_sl08e_8GB").is_err());
        assert_eq!(
            ImageName::parse_stem("sl4_x86_32_sl08e_8GB_ec2.v2").unwrap().detail().unwrap().as_str(),
            "ec2.v2"
        );
    }

    #[test]
    fn says_which_field() {
        let cases = [
            ("sl4_x86_33_sl08e_8GB.img", Field::WordSize),
            ("sl4_x87_32_sl08e_8GB.img", Field::Isa),
            ("win7_x86_32_sl08e_8GB.img", Field::Os),
            ("sl4_x86_32_SL08e_8GB.img", Field::Lib),
            ("sl4_x86_32_sl08e_8G.img", Field::MaxSize),
            ("sl4_x86_32_sl08e_1.5TB.img", Field::MaxSize),
            ("sl4_x86_32_pro_8GB.img", Field::Lib),
            ("sl53_x86_32_sl08e_8GB.img", Field::Os),
            ("sl4_x86_32_sl08e_8GB_e c2.img", Field::Name),
            ("sl4_x86_32_sl08e_8GB_ec2!.img", Field::Detail),
            ("sl4_x86_32_sl08e.img", Field::Name),
            ("sl4_x86_32_sl08e_8GB_a_b.img", Field::Name),
            ("sl4_x86_32_sl08e_8GB.txt", Field::Ext),
        ];
        for (s, field) in cases {
            let e = ImageName::parse_file(s).unwrap_err();
            assert_eq!(e.field(), field, "{s}: {e}");
        }
    }

    #[test]
    fn check_lists_every_bad_field() {
        let errors = ImageName::check("sl4_x87_33_SL08e_8G.img");
        let fields: Vec<Field> = errors.iter().map(NameError::field).collect();
        assert_eq!(fields, [Field::Isa, Field::WordSize, Field::Lib, Field::MaxSize]);
    }

    #[test]
    fn hostile_names() {
        for s in [
            "",
            "../sl4_x86_32_sl08e_8GB.img",
            "a/b",
            "sl4_x86_32_sl08e_8GB.img\0",
            "sl4\n_x86_32_sl08e_8GB.img",
            &"s".repeat(300),
        ] {
            assert!(ImageName::parse(s).is_err(), "{s:?}");
        }
    }
}
