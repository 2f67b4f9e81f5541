//! `catalog.json`: vmrepo's own catalog of published images, versioned, with
//! a serial that only grows. Its JSON Schema is docs/catalog.schema.json and
//! docs/distribution.md explains each field.

use serde::{Deserialize, Serialize};

/// The catalog's `format`.
pub const FORMAT: &str = "vmrepo-catalog";
/// The catalog's `version`: the schema this crate writes and reads.
pub const VERSION: u32 = 1;
/// The catalog's file name in the published tree.
pub const CATALOG_FILE: &str = "catalog.json";
/// Its minisign signature's file name.
pub const SIGNATURE_FILE: &str = "catalog.json.minisig";
/// The largest serial: the largest integer a JSON reader that holds numbers
/// as doubles (JavaScript, jq) still reads exactly.
pub const MAX_SERIAL: u64 = (1 << 53) - 1;

/// The whole catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CatalogDoc {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] when written by this crate.
    pub version: u32,
    /// One more than the previous catalog's at the same place; never smaller.
    pub serial: u64,
    /// When it was made (RFC 3339, UTC).
    pub generated: String,
    /// When readers stop trusting it (RFC 3339, UTC).
    pub expires: String,
    /// Where the published tree is served from; each image's `path` is relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub images: Vec<CatalogImage>,
    /// The images of several files (each a folder, `vm/<VM>/<name>/`), with
    /// the list of their files. Absent when there is none: a reader that
    /// does not know this field (an older vmrepo) reads the catalog as it
    /// did, without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<CatalogFolder>,
}

/// One published image: the repository's record and its description's facts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CatalogImage {
    pub vm: String,
    pub name: String,
    pub file: String,
    /// Relative to the catalog's folder (and to `base_url`): `vm/<VM>/<file>`.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Lower-case hex, as in the image's `.checksum`.
    pub md5: String,
    pub format: Option<String>,
    pub virtual_size: Option<u64>,
    pub storage: Option<String>,
    pub os: String,
    pub osinfo: Option<String>,
    pub arch: String,
    pub bits: u16,
    pub lib: String,
    pub maxsize: String,
    pub maxsize_bytes: u64,
    pub detail: Option<String>,
    pub kernel: Option<String>,
    pub added: Option<String>,
    /// The description's facts, as `vmrepo show --json` gives them.
    pub description: serde_json::Value,
    /// The image's Metalink file, relative like `path` (`vm/<VM>/<file>.meta4`);
    /// only when published with a base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metalink: Option<String>,
}

/// The most files an image folder may list (as many as the repository
/// accepts in a folder: `vmrepo_repo::layout::folder_parts`).
pub const MAX_FOLDER_FILES: usize = 4096;

/// One published image of several files: a folder under `vm/<VM>/`, named
/// as the image (without extension), holding its files. The same fields as
/// [`CatalogImage`] but the digests, which each file has.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CatalogFolder {
    pub vm: String,
    pub name: String,
    /// The folder's name: the image's name (no extension).
    pub file: String,
    /// Relative to the catalog's folder (and to `base_url`): `vm/<VM>/<name>`.
    pub path: String,
    /// The sum of its files' sizes.
    pub size: u64,
    /// Its files, sorted by name: each at `<path>/<file's path>`.
    pub files: Vec<FolderFile>,
    pub format: Option<String>,
    pub virtual_size: Option<u64>,
    pub storage: Option<String>,
    pub os: String,
    pub osinfo: Option<String>,
    pub arch: String,
    pub bits: u16,
    pub lib: String,
    pub maxsize: String,
    pub maxsize_bytes: u64,
    pub detail: Option<String>,
    pub kernel: Option<String>,
    pub added: Option<String>,
    /// The description's facts, as `vmrepo show --json` gives them.
    pub description: serde_json::Value,
}

/// One file of an image folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FolderFile {
    /// Its name inside the folder: one plain name ([`check_folder_file_name`]).
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Lower-case hex, as in the image's `.checksum`; absent when the
    /// repository does not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl CatalogFolder {
    /// The relative path of each file (`vm/<VM>/<name>/<file>`).
    pub fn file_paths(&self) -> impl Iterator<Item = String> + '_ {
        self.files.iter().map(|f| format!("{}/{}", self.path, f.path))
    }

    /// One of its files as the entry of an image of one file (its path
    /// `vm/<VM>/<name>/<file>`, its size and digests; no format, no
    /// description): what is fetched and proved as an image is.
    pub fn file_as_image(&self, f: &FolderFile) -> CatalogImage {
        CatalogImage {
            vm: self.vm.clone(),
            name: self.name.clone(),
            file: f.path.clone(),
            path: format!("{}/{}", self.path, f.path),
            size: f.size,
            sha256: f.sha256.clone(),
            md5: f.md5.clone().unwrap_or_default(),
            format: None,
            virtual_size: None,
            storage: None,
            os: self.os.clone(),
            osinfo: None,
            arch: self.arch.clone(),
            bits: self.bits,
            lib: self.lib.clone(),
            maxsize: self.maxsize.clone(),
            maxsize_bytes: self.maxsize_bytes,
            detail: None,
            kernel: None,
            added: None,
            description: serde_json::Value::Null,
            metalink: None,
        }
    }
}

/// Whether `name` may name a file of the image folder named `stem`: one
/// plain, visible name (no `/`, no `..`, not absolute, not empty, no
/// control character or backslash), and not one of the image's sidecars
/// (`<stem>.checksum`, `<stem>.txt`, which the repository keeps apart).
///
/// # Errors
/// Why it may not, in a few words.
pub fn check_folder_file_name(stem: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty file name".into());
    }
    if name.len() > 255 {
        return Err(format!("{name:?}: a file name longer than 255 bytes"));
    }
    if name.starts_with('/') || name.contains('/') {
        return Err(format!("{name:?}: not a plain name inside the folder (a path)"));
    }
    if name.starts_with('.') {
        return Err(format!("{name:?}: a hidden name, or . or .."));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("{name:?}: a control character or a backslash"));
    }
    if name == format!("{stem}.checksum") || name == format!("{stem}.txt") {
        return Err(format!("{name:?}: the name of one of the image's sidecars"));
    }
    Ok(())
}

/// The fields of a previous catalog that publishing again needs.
#[derive(Deserialize)]
pub(crate) struct Head {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) serial: u64,
}

/// The serial of a catalog already published, read from its bytes.
///
/// # Errors
/// A message (without the file's name) when the bytes are not JSON, not a
/// vmrepo catalog, of a newer version, or have a serial out of range: the
/// serial cannot be known, and publishing must not guess it.
pub fn previous_serial(bytes: &[u8]) -> Result<u64, String> {
    let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("not a vmrepo catalog: {e}"))?;
    head_serial(&head)
}

/// The serial of a catalog whose head is read: checked as [`previous_serial`] checks it.
///
/// # Errors
/// As [`previous_serial`], but for the JSON.
pub(crate) fn head_serial(head: &Head) -> Result<u64, String> {
    if head.format != FORMAT {
        return Err(format!("its format is {:?}, not {FORMAT:?}", head.format));
    }
    if head.version == 0 || head.version > VERSION {
        return Err(format!("its version {} is not one this vmrepo reads (1 to {VERSION})", head.version));
    }
    if head.serial > MAX_SERIAL {
        return Err(format!("its serial {} is above {MAX_SERIAL}", head.serial));
    }
    Ok(head.serial)
}

/// The serial of the next catalog: 1 for the first, else one more than the
/// previous; `None` when the previous one is already the largest.
pub fn next_serial(previous: Option<u64>) -> Option<u64> {
    match previous {
        None => Some(1),
        Some(s) => s.checked_add(1).filter(|n| *n <= MAX_SERIAL),
    }
}

/// The JSON Schema of the catalog (docs/catalog.schema.json), for tests
/// and for tools that want it at hand.
pub const JSON_SCHEMA: &str = include_str!("../../../docs/catalog.schema.json");

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> CatalogImage {
        CatalogImage {
            vm: "kvm".into(),
            name: "sl5.3_x86_64_sl08e_8GB".into(),
            file: "sl5.3_x86_64_sl08e_8GB.img".into(),
            path: "vm/kvm/sl5.3_x86_64_sl08e_8GB.img".into(),
            size: 10,
            sha256: "0".repeat(64),
            md5: "0".repeat(32),
            format: Some("raw".into()),
            virtual_size: Some(10),
            storage: None,
            os: "sl5.3".into(),
            osinfo: None,
            arch: "x86".into(),
            bits: 64,
            lib: "sl08e".into(),
            maxsize: "8GB".into(),
            maxsize_bytes: 8_000_000_000,
            detail: None,
            kernel: None,
            added: None,
            description: serde_json::json!({}),
            metalink: None,
        }
    }

    fn doc(serial: u64) -> CatalogDoc {
        CatalogDoc {
            format: FORMAT.into(),
            version: VERSION,
            serial,
            generated: "2026-01-01T00:00:00Z".into(),
            expires: "2026-01-31T00:00:00Z".into(),
            base_url: None,
            images: vec![image()],
            folders: Vec::new(),
        }
    }

    fn folder() -> CatalogFolder {
        let i = image();
        CatalogFolder {
            vm: "vmware".into(),
            name: "sl5.3_x86_64_sl08e_8GB_split".into(),
            file: "sl5.3_x86_64_sl08e_8GB_split".into(),
            path: "vm/vmware/sl5.3_x86_64_sl08e_8GB_split".into(),
            size: 30,
            files: vec![
                FolderFile {
                    path: "a.vmdk".into(),
                    size: 10,
                    sha256: "1".repeat(64),
                    md5: Some("2".repeat(32)),
                },
                FolderFile { path: "a-f001.vmdk".into(), size: 20, sha256: "3".repeat(64), md5: None },
            ],
            format: i.format,
            virtual_size: i.virtual_size,
            storage: i.storage,
            os: i.os,
            osinfo: i.osinfo,
            arch: i.arch,
            bits: i.bits,
            lib: i.lib,
            maxsize: i.maxsize,
            maxsize_bytes: i.maxsize_bytes,
            detail: i.detail,
            kernel: i.kernel,
            added: i.added,
            description: i.description,
        }
    }

    #[test]
    fn folder_file_names_are_plain_names_inside_the_folder() {
        let stem = "sl5.3_x86_64_sl08e_8GB_split";
        for ok in ["a.vmdk", "disk-f001.vmdk", "x y", "é"] {
            assert_eq!(check_folder_file_name(stem, ok), Ok(()), "{ok}");
        }
        let long = "x".repeat(256);
        let sidecar = format!("{stem}.txt");
        for bad in
            ["", ".", "..", ".hidden", "a/b", "/etc/passwd", "../x", "a\\b", "a\nb", "a\0b", &long, &sidecar]
        {
            assert!(check_folder_file_name(stem, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_catalog_without_folders_reads_and_writes_as_before() {
        // Written without the field when there is none: what an older reader reads.
        let v = serde_json::to_value(doc(1)).unwrap();
        assert!(v.get("folders").is_none());
        let mut with = doc(1);
        with.folders.push(folder());
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["folders"][0]["files"][1]["path"], "a-f001.vmdk");
        assert!(v["folders"][0]["files"][1].get("md5").is_none());
        assert_eq!(serde_json::from_value::<CatalogDoc>(v).unwrap(), with);
    }

    #[test]
    fn the_serial_only_grows() {
        assert_eq!(next_serial(None), Some(1));
        assert_eq!(next_serial(Some(1)), Some(2));
        assert_eq!(next_serial(Some(41)), Some(42));
        assert_eq!(next_serial(Some(MAX_SERIAL - 1)), Some(MAX_SERIAL));
        assert_eq!(next_serial(Some(MAX_SERIAL)), None);
        assert_eq!(next_serial(Some(u64::MAX)), None);
    }

    #[test]
    fn the_previous_serial_is_read_or_refused() {
        let bytes = serde_json::to_vec(&doc(7)).unwrap();
        assert_eq!(previous_serial(&bytes), Ok(7));
        // Only the head matters: a catalog with fields of a later minor change still gives its serial.
        let loose = br#"{"format":"vmrepo-catalog","version":1,"serial":3,"extra":true}"#;
        assert_eq!(previous_serial(loose), Ok(3));
        for (bad, why) in [
            (&b"{"[..], "not a vmrepo catalog"),
            (br#"{"format":"other","version":1,"serial":3}"#, "format"),
            (br#"{"format":"vmrepo-catalog","version":2,"serial":3}"#, "version 2"),
            (br#"{"format":"vmrepo-catalog","version":1,"serial":-1}"#, "not a vmrepo catalog"),
            (br#"{"format":"vmrepo-catalog","version":1,"serial":9007199254740992}"#, "above"),
            (br#"{"format":"vmrepo-catalog","version":1}"#, "not a vmrepo catalog"),
        ] {
            let err = previous_serial(bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn fields_are_those_the_schema_requires() {
        let schema: serde_json::Value = serde_json::from_str(JSON_SCHEMA).unwrap();
        let v = serde_json::to_value(doc(1)).unwrap();
        let names = |o: &serde_json::Value| {
            let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let listed = |s: &serde_json::Value| {
            let mut k: Vec<String> =
                s["required"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
            k.sort();
            k
        };
        // Every field written is required by the schema (base_url is optional and absent here).
        assert_eq!(names(&v), listed(&schema));
        let item = &schema["$defs"]["image"];
        assert_eq!(names(&v["images"][0]), listed(item));
        // base_url and folders are optional, absent here.
        assert_eq!(names(&schema["properties"]).len(), names(&v).len() + 2);
        let mut with_folder = doc(1);
        with_folder.folders.push(folder());
        let wf = serde_json::to_value(&with_folder).unwrap();
        let fdef = &schema["$defs"]["folder"];
        assert_eq!(names(&wf["folders"][0]), listed(fdef));
        assert_eq!(names(&fdef["properties"]), names(&wf["folders"][0]));
        let file_def = &schema["$defs"]["folder_file"];
        assert_eq!(names(&wf["folders"][0]["files"][0]), names(&file_def["properties"]));
        assert_eq!(file_def["required"].as_array().unwrap().len(), 3, "md5 is optional");
        assert_eq!(fdef["properties"]["files"]["maxItems"], MAX_FOLDER_FILES);
        // metalink is optional (only with a base URL) and absent here.
        let mut with_optional = names(&v["images"][0]);
        with_optional.push("metalink".into());
        with_optional.sort();
        assert_eq!(names(&item["properties"]), with_optional);
        assert_eq!(schema["properties"]["format"]["const"], FORMAT);
        assert_eq!(schema["properties"]["version"]["const"], VERSION);
        assert_eq!(schema["properties"]["serial"]["maximum"], MAX_SERIAL);
        // And it reads back as written.
        let back: CatalogDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc(1));
    }
}
