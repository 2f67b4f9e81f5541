//! `vmrepo lint`: everything in the tree that breaks the convention, read from
//! the files themselves (not from the index).

use std::path::Path;

use serde::Serialize;
use vmrepo_name::{ImageName, Isa, Vm};

use crate::catalog::read_capped;
use crate::checksum::{self, MAX_CHECKSUM_FILE};
use crate::description::{Description, MAX_DESCRIPTION_FILE};
use crate::error::Result;
use crate::layout::{self, FoundImage, ImageKind, Repository, STAGING_PREFIX, VM_DIR};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works, but not as the convention writes it.
    Warning,
    /// Breaks the convention or the image's integrity records.
    Error,
}

/// One thing wrong in the tree.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Path relative to the repository root.
    pub path: String,
    /// Stable code (see docs/json.md).
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
}

/// Lints the whole tree.
///
/// # Errors
/// The tree cannot be listed.
pub fn lint(repo: &Repository) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    quarantined(repo, &mut out);
    let vm_root = repo.vm_root();
    if std::fs::symlink_metadata(&vm_root).is_ok_and(|m| m.file_type().is_symlink()) {
        out.push(Finding {
            path: VM_DIR.into(),
            code: "symlinked-folder",
            severity: Severity::Error,
            message: "vm is a symbolic link to a folder elsewhere: vmrepo neither catalogs, writes nor deletes through it; make it a real folder".into(),
        });
        return Ok(out);
    }
    if !vm_root.is_dir() {
        out.push(Finding {
            path: VM_DIR.into(),
            code: "no-vm-folder",
            severity: Severity::Error,
            message: "the repository has no vm/ folder".into(),
        });
        return Ok(out);
    }
    let (folders, strays) = layout::vm_folders(&vm_root)?;
    for s in strays {
        let severity = if s.code == "symlink" { Severity::Warning } else { Severity::Error };
        out.push(Finding {
            path: format!("{VM_DIR}/{}", s.file),
            code: s.code,
            severity,
            message: s.problem,
        });
    }
    for (vm, folder) in folders {
        if folder != vm.as_str() {
            out.push(Finding {
                path: format!("{VM_DIR}/{folder}"),
                code: "vm-folder-spelling",
                severity: Severity::Warning,
                message: format!("the convention spells this folder {}", vm.as_str()),
            });
        }
        let dir = vm_root.join(&folder);
        let scan = layout::scan_folder(&dir)?;
        let rel = |f: &str| format!("{VM_DIR}/{folder}/{f}");
        for s in scan.strays {
            let severity = if s.code == "symlink" { Severity::Warning } else { Severity::Error };
            out.push(Finding { path: rel(&s.file), code: s.code, severity, message: s.problem });
        }
        for s in scan.staging {
            out.push(Finding {
                path: rel(&s),
                code: "staging-leftover",
                severity: Severity::Warning,
                message: format!("an import in progress, or one that died (removed by the next command once its process is gone; {STAGING_PREFIX}* is never cataloged)"),
            });
        }
        for img in &scan.images {
            lint_image(&dir, vm, &folder, img, &mut out);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.code.cmp(b.code)));
    Ok(out)
}

fn lint_image(dir: &Path, vm: Vm, folder: &str, img: &FoundImage, out: &mut Vec<Finding>) {
    let stem = img.name.stem();
    let rel = |f: &str| format!("{VM_DIR}/{folder}/{f}");
    let mut push = |path: String, code: &'static str, severity: Severity, message: String| {
        out.push(Finding { path, code, severity, message });
    };
    if img.kind == ImageKind::File
        && let Ok(md) = std::fs::symlink_metadata(dir.join(&img.file))
        && std::os::unix::fs::MetadataExt::nlink(&md) > 1
    {
        push(
            rel(&img.file),
            "hard-linked",
            Severity::Warning,
            format!(
                "the image has {} names: writing to another changes the stored image (an import by --move that was killed after it was stored leaves its source so; remove the source)",
                std::os::unix::fs::MetadataExt::nlink(&md)
            ),
        );
    }
    if img.kind == ImageKind::Missing {
        push(
            rel(&stem),
            "missing-image",
            Severity::Error,
            "sidecars without their image (orphaned .checksum or .txt)".into(),
        );
    }
    if img.checksum_ino.is_none() {
        push(
            rel(&img.file),
            "missing-checksum",
            Severity::Error,
            format!("no {stem}.checksum beside the image"),
        );
    }
    if img.description_ino.is_none() {
        push(
            rel(&img.file),
            "missing-description",
            Severity::Error,
            format!("no {stem}.txt beside the image"),
        );
    }
    let sidecars = layout::Sidecars::of(dir, &img.file, &stem, img.kind);
    let in_folder =
        |p: &Path| p.strip_prefix(dir).map_or_else(|_| p.display().to_string(), |r| r.display().to_string());
    if img.checksum_ino.is_some() {
        let name = in_folder(&sidecars.checksum);
        match read_capped(&sidecars.checksum, MAX_CHECKSUM_FILE) {
            Err(e) => push(rel(&name), "checksum-format", Severity::Error, e),
            Ok(bytes) => match std::str::from_utf8(&bytes) {
                Err(_) => push(
                    rel(&name),
                    "checksum-format",
                    Severity::Error,
                    "not text: not in md5sum's format".into(),
                ),
                Ok(text) => match checksum::parse(text) {
                    Err(e) => push(
                        rel(&name),
                        "checksum-format",
                        Severity::Error,
                        format!("not in md5sum's format: {e}"),
                    ),
                    Ok(lines) => match img.kind {
                        ImageKind::File => {
                            if lines.len() != 1 || lines[0].path != img.file {
                                push(
                                    rel(&name),
                                    "checksum-other-file",
                                    Severity::Error,
                                    format!(
                                        "should hold one line for {}, as `md5sum {}` prints",
                                        img.file, img.file
                                    ),
                                );
                            }
                        }
                        ImageKind::Folder => {
                            let parts = layout::folder_parts(&dir.join(&img.file))
                                .map(|(p, _)| p)
                                .unwrap_or_default();
                            let mut want: Vec<String> =
                                parts.iter().map(|(n, _)| format!("{}/{n}", img.file)).collect();
                            let mut have: Vec<String> =
                                lines.iter().map(|l| sidecars.part_key(&img.file, &l.path)).collect();
                            want.sort();
                            have.sort();
                            if want != have {
                                push(
                                    rel(&name),
                                    "checksum-other-file",
                                    Severity::Error,
                                    format!("should hold one line for each file of {}/", img.file),
                                );
                            }
                        }
                        ImageKind::Missing => {}
                    },
                },
            },
        }
    }
    // What the file really is, against its name and its description.
    let content = match img.kind {
        ImageKind::Missing => None,
        _ => match crate::content::read(&dir.join(&img.file)) {
            Ok(c) => {
                for d in c.disagreements(&img.name).into_iter().chain(c.vm_disagreements(vm)) {
                    let severity = match d.code {
                        "has-backing-file" | "has-data-file" | "has-parent" => Severity::Warning,
                        _ => Severity::Error,
                    };
                    push(rel(&img.file), d.code, severity, d.message);
                }
                if let Some(g) = &c.guest {
                    for (code, message) in guest_warnings(g) {
                        push(rel(&img.file), code, Severity::Warning, message);
                    }
                }
                Some(c)
            }
            Err(e) => {
                push(rel(&img.file), "unreadable-image", Severity::Error, e.to_string());
                None
            }
        },
    };
    if img.kind == ImageKind::Folder
        && let Ok((_, others)) = layout::folder_parts(&dir.join(&img.file))
    {
        for o in others {
            push(
                rel(&format!("{}/{o}", img.file)),
                "folder-content",
                Severity::Warning,
                "not a regular file: an image folder holds only the image's files".into(),
            );
        }
    }
    if img.description_ino.is_some() {
        let name = in_folder(&sidecars.description);
        let d = match read_capped(&sidecars.description, MAX_DESCRIPTION_FILE) {
            Err(e) => {
                push(rel(&name), "description-unreadable", Severity::Error, e);
                return;
            }
            Ok(bytes) => match Description::parse(&bytes) {
                Err(e) => {
                    push(rel(&name), "description-unreadable", Severity::Error, e.to_string());
                    return;
                }
                Ok(d) => d,
            },
        };
        let (facts, problems) = d.facts();
        for p in problems {
            push(
                rel(&name),
                "description-field",
                Severity::Error,
                format!("line {}: {}: {}", p.line, p.key, p.problem),
            );
        }
        let n: &ImageName = &img.name;
        let mut disagree = |what: &str, says: String, name_says: String| {
            push(
                rel(&name),
                "description-disagrees",
                Severity::Error,
                format!("{what}: the description says {says}, the name says {name_says}"),
            );
        };
        if let Some(image) = &facts.image
            && img.kind != ImageKind::Missing
            && image != &img.file
        {
            disagree("image", image.clone(), img.file.clone());
        }
        if let Some(v) = facts.vm
            && v != vm
        {
            disagree("VM", v.to_string(), format!("{} (its folder)", vm.as_str()));
        }
        if let Some(os) = &facts.os
            && os != n.os()
        {
            disagree("operating system", os.to_string(), n.os().to_string());
        }
        if let Some(isa) = facts.isa
            && isa != n.isa()
        {
            disagree("instruction set", Isa::as_str(isa).into(), n.isa().to_string());
        }
        if let Some(w) = facts.word_size
            && w != n.word_size()
        {
            disagree("word size", w.to_string(), n.word_size().to_string());
        }
        if let Some(l) = &facts.lib
            && l != n.lib()
        {
            disagree("STAR library", l.to_string(), n.lib().to_string());
        }
        if let Some(m) = &facts.max_size
            && m.bytes() != n.max_size().bytes()
        {
            disagree("maximum size", m.to_string(), n.max_size().to_string());
        }
        if let Some(c) = &content {
            let is = c.info.format;
            if let Some(f) = &facts.format
                && !f.eq_ignore_ascii_case(is.name())
                && !f.eq_ignore_ascii_case(is.qemu_name())
            {
                push(
                    rel(&name),
                    "description-disagrees",
                    Severity::Error,
                    format!("format: the description says {f}, the image is {}", is.name()),
                );
            }
            if let Some(v) = facts.virtual_size
                && v != c.info.virtual_size
            {
                push(
                    rel(&name),
                    "description-disagrees",
                    Severity::Error,
                    format!("virtual size: the description says {v}, the image has {}", c.info.virtual_size),
                );
            }
        }
    }
}

/// What the specification recommends of every image's accounts and that the
/// guest does not have: a `root` with a password, a `star` account, and the
/// STAR environment set up for it. Said only of a guest whose files were read.
fn guest_warnings(g: &vmrepo_inspect::Report) -> Vec<(&'static str, String)> {
    use vmrepo_inspect::accounts::Password;
    let mut out = Vec::new();
    if g.root().is_none() {
        return out;
    }
    if let Some(a) = &g.accounts {
        match a.root_password {
            Password::Empty => out.push((
                "root-password-empty",
                "root has an empty password: anyone logs in as root without one".to_string(),
            )),
            Password::Locked | Password::Unknown => out.push((
                "root-no-password",
                "root has no password (the specification wants a root account with a hard password)"
                    .to_string(),
            )),
            Password::Set => {}
        }
    }
    if g.monthly_password.as_ref().is_some_and(|m| m.root_password_static) {
        out.push((
            "root-password-static",
            "root's password is set and nothing sets it for the month at boot (the specification wants a hard \
             password that changes: vmrepo password boot-script)"
                .to_string(),
        ));
    }
    if !g.star.account {
        out.push(("no-star-account", "no star account: the specification's jobs run as star".to_string()));
    } else if g.star.startup_scripts.is_empty() {
        out.push((
            "no-star-startup",
            format!(
                "the star account ({}) has no STAR start-up script: its login files do not set the STAR environment",
                g.star.home.as_deref().unwrap_or("no home")
            ),
        ));
    }
    out
}

/// Journals recovery set aside because they could not be used safely.
fn quarantined(repo: &Repository, out: &mut Vec<Finding>) {
    let q = repo.meta_dir().join(crate::txn::QUARANTINE_DIR);
    let Ok(entries) = std::fs::read_dir(&q) else { return };
    let mut names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        let Some(id) = name.strip_suffix(".json") else { continue };
        let why = read_capped(&q.join(format!("{id}.why")), 64 * 1024)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        out.push(Finding {
            path: format!("{}/{}/{name}", crate::layout::META_DIR, crate::txn::QUARANTINE_DIR),
            code: "quarantined-journal",
            severity: Severity::Error,
            message: format!(
                "an interrupted change vmrepo did not finish or undo ({why}); its staging folder vm/*/{}{id} is kept: look, then remove both",
                crate::layout::STAGING_PREFIX
            ),
        });
    }
}
