//! `/images/{vm}/{name}`: one image, whole.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use vmrepo_inspect::Report;
use vmrepo_inspect::accounts::Password;
use vmrepo_inspect::kernel::Verdict;
use vmrepo_repo::ImageRecord;
use vmrepo_repo::description::human_bytes;
use vmrepo_repo::layout::Sidecars;
use vmrepo_repo::show::Shown;

use super::inspection::{self, Inspected, Key, Lookup};
use super::{Frame, base_url, encode, html, page_error};
use crate::error::ApiError;
use crate::state::AppState;

/// A link to a file with what proves it.
pub struct Download {
    pub label: String,
    pub href: String,
    pub size: String,
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

/// A command to copy.
pub struct Command {
    pub label: String,
    pub text: String,
    pub id: String,
}

/// A stretch of the budget bar.
pub struct Segment {
    pub label: &'static str,
    pub class: &'static str,
    pub bytes: String,
    /// Position and width in thousandths of the bar.
    pub x: u64,
    pub width: u64,
}

pub struct BudgetView {
    pub segments: Vec<Segment>,
    pub fits: bool,
    pub unpartitioned: String,
    pub summary: String,
}

/// A table of the inspection: caption, headings, rows.
pub struct Table {
    pub caption: &'static str,
    pub headings: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// What the inspection shows.
pub struct InspectionView {
    pub facts: Vec<(String, String)>,
    pub verdict: String,
    pub verdict_class: &'static str,
    pub tables: Vec<Table>,
    pub budget: Option<BudgetView>,
    pub disagreements: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Template)]
#[template(path = "image.html")]
struct ImagePage {
    frame: Frame,
    vm: String,
    vm_href: String,
    name: String,
    summary: Vec<(&'static str, String)>,
    downloads: Vec<Download>,
    sidecars: Vec<(String, String)>,
    commands: Vec<Command>,
    base_known: bool,
    notes: Option<String>,
    described: Vec<(String, String)>,
    problems: Vec<String>,
    inspection: Option<InspectionView>,
    inspection_note: Option<String>,
    missing: bool,
}

/// `GET /images/{vm}/{name}`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Path((vm, name)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match build(&state, vm, name, &headers, &uri).await {
        Ok((status, p)) => html(status, &p),
        Err(e) => page_error(e),
    }
}

async fn build(
    state: &Arc<AppState>,
    vm: String,
    name: String,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(StatusCode, ImagePage), ApiError> {
    if vm.contains('/') || name.contains('/') || vm.starts_with('.') || name.starts_with('.') {
        return Err(ApiError::not_found("no such image"));
    }
    let vm = vmrepo_name::Vm::from_user(&vm).map_err(|_| ApiError::not_found("no such VM"))?;
    let spec = format!("{}/{name}", vm.as_str());
    let (shown, sidecars) = state
        .with_catalog(move |catalog| {
            let shown = vmrepo_repo::show::show(catalog, &spec)?;
            let dir = catalog.repo().vm_root().join(&shown.image.folder);
            let rec = &shown.image;
            let s = Sidecars::of(&dir, &rec.file, &rec.name, rec.image_kind());
            let mut links = Vec::new();
            for p in [&s.checksum, &s.description] {
                let Some(f) = p.file_name().map(|f| f.to_string_lossy().into_owned()) else { continue };
                if !p.is_file() {
                    continue;
                }
                let href = if p.parent() == Some(dir.as_path()) {
                    format!("/vm/{}/{}", encode(&rec.vm), encode(&f))
                } else {
                    format!("/vm/{}/{}/{}", encode(&rec.vm), encode(&rec.file), encode(&f))
                };
                links.push((f, href));
            }
            let inside = s.checksum_inside;
            Ok((shown, (links, inside)))
        })
        .await?;
    let rec = &shown.image;
    let missing = shown.missing();
    let (inspection, inspection_note) = if missing {
        (None, Some("The image file is missing: only its sidecars remain.".to_string()))
    } else {
        let key = Key {
            path: state.repo.vm_root().join(&rec.folder).join(&rec.file),
            ino: rec.ino,
            size: rec.size,
            mtime_ns: rec.mtime_ns,
        };
        match state.inspections.get(key, Some(vm), rec.image_name(), inspection::BUDGET).await {
            Lookup::Done(Ok(i)) => (Some(inspection_view(&i)), None),
            Lookup::Done(Err(e)) => (None, Some(format!("The image could not be inspected: {e}"))),
            Lookup::Running => (
                None,
                Some("The inspection of this image is still running; reload the page in a moment.".into()),
            ),
            Lookup::Busy => (None, Some("The server is busy inspecting other images; reload later.".into())),
        }
    };
    let base = base_url(state, headers, uri);
    let page = ImagePage {
        frame: Frame::new(),
        vm: rec.vm.clone(),
        vm_href: format!("/?vm={}", encode(&rec.vm)),
        name: rec.name.clone(),
        summary: summary(rec),
        downloads: downloads(rec),
        commands: commands(
            rec,
            base.as_deref().unwrap_or("http://SERVER"),
            sidecars.1,
            state.signing.as_ref().map(|s| s.key_id.as_str()),
        ),
        base_known: base.is_some(),
        sidecars: sidecars.0,
        notes: shown.notes.clone().filter(|n| !n.trim().is_empty()),
        described: described(&shown),
        problems: shown
            .description_problems
            .iter()
            .map(|p| format!("line {}: {}: {}", p.line, p.key, p.problem))
            .collect(),
        inspection,
        inspection_note,
        missing,
    };
    Ok((if missing { StatusCode::NOT_FOUND } else { StatusCode::OK }, page))
}

fn or_dash(o: Option<String>) -> String {
    o.filter(|s| !s.is_empty()).unwrap_or_else(|| "—".into())
}

fn bytes(n: Option<u64>) -> String {
    n.map(|n| format!("{} ({n} bytes)", human_bytes(n))).unwrap_or_else(|| "—".into())
}

fn summary(rec: &ImageRecord) -> Vec<(&'static str, String)> {
    let (state, _, detail) = super::state_of(rec);
    vec![
        ("VM", rec.vm.clone()),
        ("File", rec.path.clone()),
        (
            "Kind",
            match (rec.kind.as_str(), rec.parts) {
                ("folder", Some(p)) => format!("a folder of {p} files"),
                (k, _) => k.to_string(),
            },
        ),
        (
            "Operating system",
            match &rec.osinfo {
                Some(o) => format!("{} ({o})", rec.os),
                None => rec.os.clone(),
            },
        ),
        ("Architecture", format!("{} {}-bit", rec.arch, rec.bits)),
        ("STAR library", rec.lib.clone()),
        ("Maximum size", format!("{} ({} bytes)", rec.maxsize, rec.maxsize_bytes)),
        ("Detail", or_dash(rec.detail.clone())),
        ("Format", or_dash(rec.format.clone())),
        ("Storage", or_dash(rec.storage.clone())),
        ("Virtual size", bytes(rec.virtual_size)),
        ("Size", bytes(rec.size)),
        ("On disk", bytes(rec.disk_usage)),
        ("Kernel", or_dash(rec.kernel.clone())),
        ("Added", or_dash(rec.added.clone())),
        ("Added by", or_dash(rec.added_by.clone())),
        (".checksum", rec.checksum.clone()),
        ("Description", rec.description.clone()),
        ("Verification", if detail.is_empty() { state.to_string() } else { format!("{state} ({detail})") }),
    ]
}

fn downloads(rec: &ImageRecord) -> Vec<Download> {
    match rec.kind.as_str() {
        "file" => vec![Download {
            label: rec.file.clone(),
            href: format!("/vm/{}/{}", encode(&rec.vm), encode(&rec.file)),
            size: bytes(rec.size),
            sha256: rec.sha256.clone(),
            md5: rec.md5.clone(),
        }],
        "folder" => vec![Download {
            label: format!("{}.tar (the folder, its parts and sidecars)", rec.file),
            href: format!("/vm/{}/{}.tar", encode(&rec.vm), encode(&rec.file)),
            size: format!("{} in {} files", bytes(rec.size), rec.parts.unwrap_or(0)),
            sha256: None,
            md5: None,
        }],
        _ => Vec::new(),
    }
}

/// A word for a POSIX shell: as it is when it holds only safe characters,
/// else single-quoted.
fn sh(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '_' | '-' | '/' | ':' | '%' | '+' | '=' | ',' | '@')
        });
    if safe { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// The commands to copy; with the key id of `--sign-key`, `vmrepo pull`
/// too, for an image the signed catalog lists.
fn commands(rec: &ImageRecord, base: &str, checksum_inside: bool, key_id: Option<&str>) -> Vec<Command> {
    let mut out = Vec::new();
    let mut add = |label: &str, text: String| {
        let id = format!("cmd-{}", out.len());
        out.push(Command { label: label.to_string(), text, id });
    };
    let vm = encode(&rec.vm);
    let checksum = format!("{}.checksum", rec.name);
    match rec.kind.as_str() {
        "file" => {
            add(
                "Download (resumes where it stopped)",
                format!("curl -C - -O {}", sh(&format!("{base}/vm/{vm}/{}", encode(&rec.file)))),
            );
            add(
                "Its checksum file",
                format!("curl -O {}", sh(&format!("{base}/vm/{vm}/{}", encode(&checksum)))),
            );
            add("Check the MD5", format!("md5sum -c {}", sh(&checksum)));
            if let Some(sha) = &rec.sha256 {
                add(
                    "Check the SHA-256",
                    format!("echo {} | sha256sum -c", sh(&format!("{sha}  {}", rec.file))),
                );
            }
        }
        "folder" => {
            let tar = format!("{}.tar", rec.file);
            add(
                "Download the folder (resumes where it stopped)",
                format!("curl -C - -O {}", sh(&format!("{base}/vm/{vm}/{}", encode(&tar)))),
            );
            add("Unpack it", format!("tar -xf {}", sh(&tar)));
            if checksum_inside {
                add("Check the MD5s", format!("cd {} && md5sum -c {}", sh(&rec.file), sh(&checksum)));
            } else {
                add("Check the MD5s", format!("md5sum -c {}", sh(&checksum)));
            }
        }
        _ => {}
    }
    if let Some(id) = key_id
        && vmrepo_dist::entries::digests(rec).is_ok()
    {
        add(
            &format!(
                "With vmrepo, once: trust the key that signs this server's catalog (its .pub file, from the administrator by a channel you trust; key id {id})"
            ),
            "vmrepo trust add KEYFILE.pub".to_string(),
        );
        add(
            "With vmrepo: pull it, checked against the signed catalog (resumes where it stopped)",
            format!(
                "vmrepo pull {} {} {}",
                sh(&format!("{base}/")),
                sh(&format!("vm={}", rec.vm)),
                sh(&format!("name={}", rec.name))
            ),
        );
    }
    out
}

/// The description's own facts, key by key, for the page when the image
/// is not inspected (and beside the inspection when it is).
fn described(shown: &Shown) -> Vec<(String, String)> {
    shown.description.guest.iter().map(|(k, lines)| (k.to_string(), lines.join("\n"))).collect()
}

fn inspection_view(i: &Inspected) -> InspectionView {
    let facts = i.facts.iter().map(|(k, lines)| (k.to_string(), lines.join("\n"))).collect();
    let Some(r) = &i.report else {
        return InspectionView {
            facts,
            verdict: i
                .unreadable
                .clone()
                .map(|u| format!("the guest cannot be read: {u}"))
                .unwrap_or_default(),
            verdict_class: "none",
            tables: Vec::new(),
            budget: None,
            disagreements: i.disagreements.clone(),
            warnings: Vec::new(),
        };
    };
    let (verdict, verdict_class) = verdict(r);
    InspectionView {
        facts,
        verdict,
        verdict_class,
        tables: tables(r),
        budget: i.budget.as_ref().map(budget_view),
        disagreements: i.disagreements.clone(),
        warnings: r.warnings.iter().chain(&r.partitions.warnings).cloned().collect(),
    }
}

fn verdict(r: &Report) -> (String, &'static str) {
    match r.boot.verdict {
        Verdict::OwnKernel => {
            let mut s =
                "Boots on its own: it has a kernel of its own (not a Xen paravirtual guest)".to_string();
            if !r.boot.xen_evidence.is_empty() {
                s.push_str(&format!("; set up for Xen too: {}", r.boot.xen_evidence.join("; ")));
            }
            (s, "ok")
        }
        Verdict::XenParavirtual => (
            format!(
                "A Xen paravirtual guest ({}): it will not boot on VirtualBox, VMware or KVM",
                r.boot.xen_evidence.join("; ")
            ),
            "warn",
        ),
        Verdict::NoKernel => {
            ("No kernel: not bootable on its own, and nothing says it is a Xen guest".into(), "warn")
        }
        Verdict::Unknown => ("Unknown: /boot could not be read".into(), "none"),
    }
}

fn password(p: Password) -> &'static str {
    match p {
        Password::Set => "set",
        Password::Empty => "EMPTY: logs in without a password",
        Password::Locked => "locked",
        Password::Unknown => "unknown (no entry in /etc/shadow)",
    }
}

fn tables(r: &Report) -> Vec<Table> {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    let dash = |s: String| if s.is_empty() { "—".to_string() } else { s };
    let mut t = Vec::new();
    let mut system = vec![];
    if let Some(os) = &r.os {
        system.push(vec!["Distribution".into(), format!("{} (from {})", os.product_name, os.source)]);
        if let Some(id) = &os.osinfo {
            system.push(vec!["Osinfo short-id".into(), id.clone()]);
        }
    }
    if let Some(a) = &r.arch {
        system.push(vec![
            "Architecture".into(),
            format!("{} {}-bit ({}, from {})", a.isa, a.bits, a.machine, a.from),
        ]);
    }
    system.push(vec!["Hostname".into(), dash(o(&r.hostname))]);
    system.push(vec!["Packages".into(), dash(o(&r.package_format))]);
    system.push(vec!["Bootloader".into(), dash(r.boot.bootloader.join(", "))]);
    system.push(vec![
        "Xen paravirtual".into(),
        r.boot.xen_paravirtual.map(yes).unwrap_or_else(|| "unknown".into()),
    ]);
    if !r.boot.xen_evidence.is_empty() {
        system.push(vec!["Xen evidence".into(), r.boot.xen_evidence.join("; ")]);
    }
    if r.star.account {
        system.push(vec!["star's home".into(), dash(o(&r.star.home))]);
        let scripts =
            if r.star.startup_scripts.is_empty() { "none".into() } else { r.star.startup_scripts.join(", ") };
        system.push(vec!["STAR start-up scripts".into(), scripts]);
    }
    t.push(Table { caption: "System", headings: vec!["Fact", "Value"], rows: system });
    t.push(Table {
        caption: "Kernels",
        headings: vec!["Path", "Version", "Header version", "Xen", "Initrd", "Modules"],
        rows: r
            .boot
            .kernels
            .iter()
            .map(|k| {
                vec![
                    k.path.clone(),
                    k.version.clone(),
                    o(&k.header_version),
                    yes(k.xen),
                    o(&k.initrd),
                    yes(k.modules),
                ]
            })
            .collect(),
    });
    let mut star: Vec<Vec<String>> = r
        .star
        .libraries
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.path.clone(),
                format!("{}{}", human_bytes(l.size), if l.partial { " (at least)" } else { "" }),
                l.files.to_string(),
            ]
        })
        .collect();
    for (from, to) in &r.star.symbolic {
        star.push(vec![from.clone(), format!("→ {to}"), String::new(), String::new()]);
    }
    t.push(Table {
        caption: "STAR libraries",
        headings: vec!["Library", "Folder", "Size", "Files"],
        rows: star,
    });
    let mut accounts = Vec::new();
    if let Some(a) = &r.accounts {
        accounts.push(vec!["root".into(), yes(a.root_account), password(a.root_password).into()]);
        accounts.push(vec![
            "star".into(),
            yes(a.star_account),
            a.star_password.map(password).unwrap_or("—").into(),
        ]);
        accounts.push(vec!["users (login shells)".into(), a.users.to_string(), String::new()]);
        accounts.push(vec!["SSH authorized keys".into(), a.keys_summary(), String::new()]);
    }
    t.push(Table { caption: "Accounts", headings: vec!["Account", "Present", "Password"], rows: accounts });
    t.push(Table {
        caption: "Partitions",
        headings: vec!["#", "Start", "Size", "Type", "Type id", "Boot", "Name"],
        rows: r
            .partitions
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.number.to_string(),
                    human_bytes(p.start),
                    human_bytes(p.size),
                    p.kind.clone(),
                    p.type_id.clone(),
                    yes(p.bootable),
                    o(&p.name),
                ]
            })
            .collect(),
    });
    let mut fs: Vec<Vec<String>> = r
        .filesystems
        .iter()
        .map(|v| {
            vec![
                v.device.clone(),
                v.fs.kind.clone(),
                o(&v.role),
                o(&v.fs.label),
                human_bytes(v.fs.size),
                v.fs.used.map(human_bytes).unwrap_or_default(),
                v.fs.free.map(human_bytes).unwrap_or_default(),
            ]
        })
        .collect();
    for s in &r.swap {
        fs.push(vec![
            s.device.clone(),
            "swap".into(),
            String::new(),
            o(&s.swap.label),
            human_bytes(s.swap.size),
            String::new(),
            String::new(),
        ]);
    }
    for lv in &r.logical_volumes {
        fs.push(vec![
            format!("{}/{}", lv.vg, lv.name),
            "LVM logical volume".into(),
            String::new(),
            String::new(),
            human_bytes(lv.size),
            String::new(),
            o(&lv.unmapped),
        ]);
    }
    t.push(Table {
        caption: "Filesystems and swap",
        headings: vec!["Device", "Type", "Mounted on", "Label", "Size", "Used", "Free"],
        rows: fs,
    });
    t
}

/// Thousandths of `total` that `n` is (0 when `total` is 0).
fn share(n: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    u64::try_from(u128::from(n) * 1000 / u128::from(total)).unwrap_or(1000).min(1000)
}

fn budget_view(b: &vmrepo_inspect::Budget) -> BudgetView {
    // The bar spans the maximum size, or what is committed and free when more.
    let total = b.max_size.max(b.committed.saturating_add(b.left_for_data));
    let parts: [(&'static str, &'static str, u64); 4] = [
        ("Operating system", "os", b.os),
        ("Swap", "swap", b.swap),
        ("STAR software", "star", b.star_software),
        ("Left for data", "free", b.left_for_data),
    ];
    let mut x = 0u64;
    let segments = parts
        .iter()
        .map(|(label, class, n)| {
            let width = share(*n, total);
            let s = Segment { label, class, bytes: human_bytes(*n), x, width };
            x = x.saturating_add(width);
            s
        })
        .collect();
    BudgetView {
        segments,
        fits: b.fits,
        unpartitioned: human_bytes(b.unpartitioned),
        summary: format!(
            "OS {} + swap {} + STAR {} = {} of {}",
            human_bytes(b.os),
            human_bytes(b.swap),
            human_bytes(b.star_software),
            human_bytes(b.committed),
            human_bytes(b.max_size)
        ),
    }
}
