//! What an image file really is, from the format layer and from a look
//! inside the guest: its format, virtual size, operating system,
//! architecture and STAR libraries fill the record, and a name that
//! disagrees with them is refused (by `add`, unless forced) or reported (by
//! `lint`).

use std::path::{Path, PathBuf};

use vmrepo_format::{Format, Info, OpenOptions};
use vmrepo_name::{Extension, ImageName, MaxSize, Vm};

use vmrepo_inspect::Report;
use vmrepo_inspect::kernel::Verdict;

use crate::description::{Facts, Storage, human_bytes, keys};
use crate::error::{Error, ErrorKind, Result};

/// Extensions a raw image may take besides `.img` (the specification lets
/// `--ext` choose one).
const RAW_EXTENSIONS: [&str; 4] = ["img", "raw", "dsk", "bin"];

/// What the format layer, and the inspection of the guest, say of an image.
#[derive(Clone, Debug)]
pub struct Content {
    /// The file that was opened (the descriptor of an image folder).
    pub entry: PathBuf,
    pub info: Info,
    /// What the guest holds; `None` when the disk could not be opened for
    /// reading (an image that reads through a file not stored with it).
    pub guest: Option<Report>,
    /// What the structural check (`vmrepo check`) finds wrong.
    pub structure: Vec<String>,
    /// Why the guest's bytes cannot be read, when they cannot.
    pub unreadable: Option<String>,
}

/// Problems of the structural check quoted in a message at most.
const QUOTED_PROBLEMS: usize = 3;

/// One way a name disagrees with the image's content.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Disagreement {
    /// Stable code: extension-mismatch, maxsize-mismatch, has-backing-file,
    /// has-parent, has-data-file, corrupt, os-mismatch, arch-mismatch,
    /// bits-mismatch, lib-missing.
    pub code: &'static str,
    pub message: String,
}

/// The file that stands for an image folder: its VMDK descriptor, or its only file.
///
/// # Errors
/// The folder cannot be listed, or holds several files none of which is a descriptor.
pub fn folder_entry(dir: &Path) -> Result<PathBuf> {
    let (parts, _) = crate::layout::folder_parts(dir)?;
    if let [(only, _)] = parts.as_slice() {
        return Ok(dir.join(only));
    }
    for (name, md) in &parts {
        if md.len() <= 64 * 1024 {
            // Never waits on a FIFO swapped in since the listing.
            let head = crate::catalog::read_capped(&dir.join(name), 64 * 1024).unwrap_or_default();
            if String::from_utf8_lossy(&head).contains("# Disk DescriptorFile") {
                return Ok(dir.join(name));
            }
        }
    }
    Err(Error::new(
        ErrorKind::BadImage,
        format!("{} holds {} files and none is a VMDK descriptor", dir.display(), parts.len()),
    ))
}

/// Reads what an image file (or image folder) is, and looks inside the
/// guest. The files a folder's descriptor names are opened, inside the
/// folder only; a file's references (a backing file) are not.
///
/// # Errors
/// The file is malformed or of a format vmrepo does not read
/// ([`ErrorKind::BadImage`]), or cannot be read. What the guest holds
/// never fails: an unreadable guest is a report with warnings.
pub fn read(path: &Path) -> Result<Content> {
    let is_dir = std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?.is_dir();
    let entry = if is_dir { folder_entry(path)? } else { path.to_path_buf() };
    let image = vmrepo_format::open(&entry, &OpenOptions { follow: is_dir, format: None })?;
    let info = image.info.clone();
    // What vmrepo cannot read through is not stored as if it could.
    let structure = match vmrepo_format::check::check(&image) {
        Ok(report) => report.problems,
        Err(e) => vec![e.to_string()],
    };
    let (guest, unreadable) = match image.into_disk() {
        Ok(disk) => (Some(vmrepo_inspect::inspect(disk, &vmrepo_inspect::Options::default())), None),
        Err(e) => {
            tracing::debug!("{}: the guest is not inspected: {e}", entry.display());
            (None, Some(e.to_string()))
        }
    };
    Ok(Content { entry, info, guest, structure, unreadable })
}

/// Whether two OS tokens may name the same system: equal, or one a
/// dot-separated prefix of the other (`sl5` and `sl5.3`).
pub fn os_compatible(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let prefix = |short: &str, long: &str| {
        long.strip_prefix(short).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    prefix(&a, &b) || prefix(&b, &a)
}

impl Content {
    /// The extension a name of this content takes.
    pub fn extension(&self) -> &'static str {
        self.info.format.extension()
    }

    /// The facts the format layer gives for the description.
    pub fn facts(&self) -> Facts {
        Facts {
            format: Some(self.info.format.name().to_string()),
            subformat: self.info.subformat.clone(),
            virtual_size: Some(self.info.virtual_size),
            allocated: self.info.allocated_size,
            storage: Some(match self.info.storage {
                vmrepo_format::Storage::Fixed => Storage::Fixed,
                vmrepo_format::Storage::Dynamic => Storage::Dynamic,
            }),
            ..Facts::default()
        }
    }

    /// Every fact for the description of the image stored as `name`: the
    /// format layer's and what the guest holds, with the budget checked
    /// against the name's maximum size.
    pub fn facts_for(&self, name: &ImageName) -> Facts {
        let mut f = self.facts();
        if let Some(r) = &self.guest {
            let (kernel, guest) = guest_facts(r, name.max_size().bytes_for(self.info.virtual_size));
            f.kernel = kernel;
            f.guest = guest;
        }
        f
    }

    /// The maximum size a name should give this image: its virtual size, in
    /// the largest unit of which it is a whole number in either reading; for
    /// a VHD, the size qemu-img was asked for when it rounded it up to a
    /// geometry ([`qemu_vhd_size`]).
    ///
    /// # Errors
    /// An empty disk, which no name can describe, or one past
    /// [`vmrepo_name::MAX_SIZE_BYTES`].
    pub fn max_size(&self) -> Result<MaxSize> {
        let v = self.info.virtual_size;
        if v == 0 {
            return Err(Error::new(
                ErrorKind::BadImage,
                format!("{}: the image is empty: its virtual size is 0 bytes", self.entry.display()),
            ));
        }
        let named = match self.info.format {
            Format::Vhd => MaxSize::from_rounded(v, qemu_vhd_size),
            _ => MaxSize::from_bytes(v),
        };
        named.map_err(|e| {
            Error::new(ErrorKind::BadImage, format!("{}: {}", self.entry.display(), e.problem()))
        })
    }

    /// Whether the name's maximum size is this image's virtual size: exactly,
    /// in either reading of its unit, or for a VHD as qemu-img makes one of
    /// that size (rounded up to a geometry).
    pub fn max_size_fits(&self, max: &MaxSize) -> bool {
        let v = self.info.virtual_size;
        max.matches(v)
            || self.info.format == Format::Vhd
                && [max.bytes(), max.decimal_bytes()].into_iter().any(|asked| qemu_vhd_size(asked) == Some(v))
    }

    /// Where `name` (and the image's own references) disagree with the content.
    pub fn disagreements(&self, name: &ImageName) -> Vec<Disagreement> {
        let mut out = Vec::new();
        let mut say = |code, message: String| out.push(Disagreement { code, message });
        let fmt = self.info.format;
        if let Some(ext) = name.ext()
            && !ext_fits(fmt, ext)
        {
            say(
                "extension-mismatch",
                format!(
                    "the name ends in .{ext} but the file is {} (.{})",
                    describe(&self.info),
                    fmt.extension()
                ),
            );
        }
        let v = self.info.virtual_size;
        if !self.max_size_fits(name.max_size()) {
            say(
                "maxsize-mismatch",
                format!(
                    "the name says {} but the virtual size is {} ({v} bytes)",
                    name.max_size(),
                    crate::description::human_bytes(v)
                ),
            );
        }
        if let Some(b) = &self.info.backing_filename {
            say(
                "has-backing-file",
                format!("the image reads through the backing file {b:?}, which is not stored with it"),
            );
        }
        if let Some(d) = &self.info.data_file {
            say("has-data-file", format!("the image keeps its data in {d:?}, which is not stored with it"));
        }
        if self.info.parent.is_some() {
            say("has-parent", "a differencing image: its parent is not stored with it".into());
        }
        if self.info.corrupt {
            say("corrupt", "the image is marked corrupt".into());
        }
        if !self.structure.is_empty() {
            let shown: Vec<&str> = self.structure.iter().take(QUOTED_PROBLEMS).map(String::as_str).collect();
            say(
                "check-failed",
                format!(
                    "vmrepo check finds {} problem(s) in its structure: {}{}",
                    self.structure.len(),
                    shown.join("; "),
                    if self.structure.len() > QUOTED_PROBLEMS { "; ..." } else { "" }
                ),
            );
        }
        // An image that reads through a backing, data or parent file is said
        // so above; any other reason its bytes cannot be read is said here.
        if let Some(why) = &self.unreadable
            && !self.structure.contains(why)
            && self.info.backing_filename.is_none()
            && self.info.data_file.is_none()
            && self.info.parent.is_none()
        {
            say("unreadable-disk", format!("its guest bytes cannot be read: {why}"));
        }
        if let Some(r) = &self.guest {
            guest_disagreements(r, name, &mut say);
        }
        out
    }
}

impl Content {
    /// Where the VM folder disagrees with the image: a format the VM software
    /// does not run as it is stored, or a Xen paravirtual guest (no kernel of
    /// its own that the disk boots) in the folder of a VM software that needs
    /// one. A VM software the table does not know says nothing (see
    /// [`Vm::runs`]).
    pub fn vm_disagreements(&self, vm: Vm) -> Vec<Disagreement> {
        let mut out = Vec::new();
        let fmt = self.info.format.name();
        if vm.runs(fmt) == Some(false) {
            out.push(Disagreement {
                code: "vm-format-mismatch",
                message: format!(
                    "{} does not run {} images as they are stored (vmrepo convert, or another VM folder)",
                    vm.as_str(),
                    describe(&self.info)
                ),
            });
        }
        if let Some(r) = &self.guest
            && r.boot.verdict == vmrepo_inspect::kernel::Verdict::XenParavirtual
            && vm.boots_xen_paravirtual() == Some(false)
        {
            out.push(Disagreement {
                code: "vm-needs-kernel",
                message: format!(
                    "a Xen paravirtual guest ({}) has no kernel of its own that {} could boot",
                    r.boot.xen_evidence.join("; "),
                    vm.as_str()
                ),
            });
        }
        out
    }
}

/// Where the name disagrees with what the guest holds. Only what was read
/// is compared: an unknown OS or an unreadable root says nothing.
fn guest_disagreements(r: &Report, name: &ImageName, say: &mut impl FnMut(&'static str, String)) {
    if let Some(os) = &r.os
        && let Some(token) = &os.token
        && !os_compatible(&name.os().to_string(), token)
    {
        say(
            "os-mismatch",
            format!(
                "the name says {} but the guest is {} ({token}, from {})",
                name.os(),
                os.product_name,
                os.source
            ),
        );
    }
    if let Some(a) = &r.arch {
        if a.isa != name.isa().as_str() {
            say(
                "arch-mismatch",
                format!("the name says {} but {} is built for {} ({})", name.isa(), a.from, a.isa, a.machine),
            );
        }
        if a.bits != name.word_size().bits() {
            say(
                "bits-mismatch",
                format!(
                    "the name says {}-bit but {} is {}-bit ({})",
                    name.word_size(),
                    a.from,
                    a.bits,
                    a.machine
                ),
            );
        }
    }
    if r.root().is_some() {
        let lib = name.lib();
        let installed = if lib.is_symbolic() {
            r.star.symbolic.iter().any(|(link, _)| link.eq_ignore_ascii_case(lib.as_str()))
        } else {
            r.star.libraries.iter().any(|l| l.name.eq_ignore_ascii_case(lib.as_str()))
        };
        if !installed {
            let have: Vec<&str> = r.star.libraries.iter().map(|l| l.name.as_str()).collect();
            say(
                "lib-missing",
                format!(
                    "the name says {} but the guest has no such STAR library ({})",
                    lib.star_spelling(),
                    if have.is_empty() {
                        "none is installed".to_string()
                    } else {
                        format!("installed: {}", have.join(", "))
                    }
                ),
            );
        }
    }
}

/// The kernel version and the description's lines of what the guest holds.
#[allow(clippy::type_complexity)]
fn guest_facts(r: &Report, max_size: u64) -> (Option<String>, Vec<(&'static str, Vec<String>)>) {
    let mut lines: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut put = |k: &'static str, v: Vec<String>| {
        if !v.is_empty() {
            lines.push((k, v));
        }
    };
    if let Some(os) = &r.os {
        put(
            keys::GUEST_OS,
            vec![match &os.osinfo {
                Some(id) => format!("{} ({id})", os.product_name),
                None => os.product_name.clone(),
            }],
        );
    }
    put(keys::HOSTNAME, r.hostname.iter().cloned().collect());
    let own: Vec<&str> = r.boot.kernels.iter().filter(|k| !k.xen).map(|k| k.version.as_str()).collect();
    // An empty /boot (a Xen guest's) still names its kernel in /lib/modules.
    let versions = r.boot.kernel_versions();
    let kernel = (!versions.is_empty()).then(|| versions.join(", "));
    let xen_also = if r.boot.xen_evidence.is_empty() {
        String::new()
    } else {
        format!("; set up for Xen too: {}", r.boot.xen_evidence.join("; "))
    };
    put(
        keys::BOOTS,
        vec![match r.boot.verdict {
            Verdict::OwnKernel => format!("yes (kernel {}){xen_also}", own.join(", ")),
            Verdict::XenParavirtual => format!(
                "no: a Xen paravirtual guest ({}); it will not boot on VirtualBox, VMware or KVM",
                r.boot.xen_evidence.join("; ")
            ),
            Verdict::NoKernel => "no kernel: not bootable on its own".to_string(),
            Verdict::Unknown => "unknown: /boot could not be read".to_string(),
        }],
    );
    put(
        keys::FILESYSTEM,
        r.filesystems
            .iter()
            .map(|v| {
                let mut s = format!("{} {}", v.device, v.fs.kind);
                if let Some(role) = &v.role {
                    s.push_str(&format!(" {role}"));
                }
                s.push_str(&format!(", {}", human_bytes(v.fs.size)));
                if let Some(u) = v.fs.used {
                    s.push_str(&format!(", {} used", human_bytes(u)));
                }
                if let Some(f) = v.fs.free {
                    s.push_str(&format!(", {} free", human_bytes(f)));
                }
                s
            })
            .collect(),
    );
    put(keys::SWAP, r.swap.iter().map(|s| format!("{} {}", s.device, human_bytes(s.swap.size))).collect());
    if r.root().is_some() {
        put(
            keys::STAR_INSTALLED,
            vec![if r.star.libraries.is_empty() {
                "none".to_string()
            } else {
                r.star
                    .libraries
                    .iter()
                    .map(|l| format!("{} in {} ({})", StarName(&l.name), l.path, human_bytes(l.size)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }],
        );
        put(
            keys::STAR_ACCOUNT,
            vec![match (r.star.account, r.star.startup_scripts.is_empty()) {
                (false, _) => "no".to_string(),
                (true, true) => "yes, no STAR start-up script".to_string(),
                (true, false) => format!("yes, start-up: {}", r.star.startup_scripts.join(", ")),
            }],
        );
    }
    if let Some(a) = &r.accounts {
        use vmrepo_inspect::accounts::Password;
        put(
            keys::ROOT_PASSWORD,
            vec![
                match a.root_password {
                    Password::Set => "set",
                    Password::Empty => "empty: root logs in without a password",
                    Password::Locked => "locked",
                    Password::Unknown => "unknown: no entry in /etc/shadow",
                }
                .to_string(),
            ],
        );
        put(keys::AUTHORIZED_KEYS, vec![a.keys_summary()]);
    }
    if let Some(scheme) =
        r.monthly_password.as_ref().and_then(vmrepo_inspect::monthly_password::MonthlyPassword::scheme)
    {
        use vmrepo_inspect::monthly_password::Scheme;
        let name = if scheme == Scheme::Hmac { "hmac" } else { "spec" };
        put(
            keys::ROOT_PASSWORD_COMMAND,
            vec![format!("vmrepo password --scheme {name} --month YYMM --seed-file <your seed file>")],
        );
    }
    if r.root().is_some() || !r.swap.is_empty() {
        let b = r.budget.against(max_size);
        put(
            keys::BUDGET,
            vec![format!(
                "OS {} + swap {} + STAR {} = {} of {}: {}; {} unpartitioned",
                human_bytes(b.os),
                human_bytes(b.swap),
                human_bytes(b.star_software),
                human_bytes(b.committed),
                human_bytes(b.max_size),
                if b.fits {
                    format!("{} left for data in the filesystems", human_bytes(b.left_for_data))
                } else {
                    "over the maximum size, no room for data".to_string()
                },
                human_bytes(b.unpartitioned)
            )],
        );
    }
    (kernel, lines)
}

/// A library as STAR writes it (`SL08e`).
struct StarName<'a>(&'a str);

impl std::fmt::Display for StarName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match vmrepo_name::StarLib::parse(self.0) {
            Ok(l) => f.write_str(&l.star_spelling()),
            Err(_) => f.write_str(self.0),
        }
    }
}

/// Bytes in a sector of a VHD's geometry.
const VHD_SECTOR: u64 = 512;
/// The largest geometry a VHD footer holds: 65535 cylinders, 16 heads, 255
/// sectors per track.
const VHD_MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// The most sectors [`qemu_vhd_size`] adds looking for a geometry large
/// enough: a geometry grows by at most one cylinder of 16 heads of 255
/// sectors, so a few thousand are always enough.
const VHD_MAX_GEOMETRY_STEPS: u64 = 16 * 255 * 4;

/// The geometry the VHD specification (appendix "CHS calculation") gives a
/// disk of `total` sectors, as (cylinders, heads, sectors per track).
fn vhd_geometry(total: u64) -> (u64, u64, u64) {
    let total = total.min(VHD_MAX_GEOMETRY);
    let (sectors, heads, cylinders_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let cth = total / 17;
        let heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            let cth = total / 31;
            if cth >= 16 * 1024 { (63, 16, total / 63) } else { (31, 16, cth) }
        } else {
            (17, heads, cth)
        }
    };
    (cylinders_times_heads / heads, heads, sectors)
}

/// The virtual size `qemu-img create -f vpc` (and `qemu-img convert -O vpc`)
/// gives a disk asked for `asked` bytes, without `-o force_size=on`: the
/// smallest geometry that holds the whole sectors asked for, so 10 GiB
/// becomes 10737893376 bytes; past the largest geometry (about 127 GiB) the
/// whole sectors asked for. `None` when no geometry is found within a few
/// thousand sectors more (never, for a size a VHD can hold).
pub fn qemu_vhd_size(asked: u64) -> Option<u64> {
    let total = asked / VHD_SECTOR;
    for step in 0..VHD_MAX_GEOMETRY_STEPS {
        let (c, h, s) = vhd_geometry(total.checked_add(step)?);
        let sectors = c * h * s;
        if sectors == VHD_MAX_GEOMETRY {
            return total.checked_mul(VHD_SECTOR);
        }
        if sectors >= total {
            return sectors.checked_mul(VHD_SECTOR);
        }
    }
    None
}

/// Whether a name with this extension may hold this format.
fn ext_fits(fmt: Format, ext: &Extension) -> bool {
    ext.as_str() == fmt.extension() || fmt == Format::Raw && RAW_EXTENSIONS.contains(&ext.as_str())
}

fn describe(info: &Info) -> String {
    match &info.subformat {
        Some(s) => format!("{} ({s})", info.format.name()),
        None => info.format.name().to_string(),
    }
}

/// The extension `--ext` may choose for this content, or why not.
///
/// # Errors
/// An extension of another format than the content's.
pub fn check_extension(content: &Content, ext: &Extension) -> Result<()> {
    let fmt = content.info.format;
    if ext_fits(fmt, ext) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::BadImage,
            format!(
                "--ext {ext}: the file is {} (.{}); pass --force to name it otherwise",
                describe(&content.info),
                fmt.extension()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `qemu-img create -f vpc x SIZE` then `qemu-img info` (qemu-img 10.0.2):
    /// (asked, virtual size). The integration tests compare with qemu-img live.
    const QEMU_IMG_VPC: [(u64, u64); 11] = [
        (10 << 30, 10_737_893_376),
        (8 << 30, 8_590_417_920),
        (1 << 30, 1_073_995_776),
        (2 << 30, 2_147_991_552),
        (10_000_000_000, 10_000_392_192),
        (500 << 20, 524_353_536),
        (127 << 30, 136_365_219_840),
        (200 << 30, 200 << 30),
        (1 << 40, 1 << 40),
        (2040 << 30, 2040 << 30),
        (0, 0),
    ];

    #[test]
    fn vhd_sizes_as_qemu_img_rounds_them() {
        for (asked, made) in QEMU_IMG_VPC {
            assert_eq!(qemu_vhd_size(asked), Some(made), "asked {asked}");
        }
        // Every geometry holds what was asked, and is at most one cylinder more.
        for asked in [1u64, 511, 512, 1000, 65535 * 16 * 63 * 512, 65535 * 16 * 255 * 512 - 1, u64::MAX / 2] {
            let made = qemu_vhd_size(asked).unwrap();
            assert!(made + VHD_SECTOR > asked && made <= (asked / 512 + 16 * 255) * 512, "{asked} -> {made}");
        }
        // Past the largest geometry, the whole sectors: no overflow at the top.
        assert_eq!(qemu_vhd_size(u64::MAX), Some(u64::MAX / 512 * 512));
    }
}
