//! What makes a started copy of an image a node: `password` (the month's
//! root password). The seed is read, never printed.

use std::os::unix::fs::PermissionsExt;

use anyhow::Result;
use vmrepo_repo::{Error, ErrorKind};
use vmrepo_site::password::{self, Month, Scheme};

use super::Ctx;
use crate::Outcome;
use crate::args::{BootScriptArgs, BootStyle, PasswordArgs, PasswordCommand, PasswordScheme};
use crate::output::{self, line};

/// The variable that holds the seed when no `--seed-file` is given.
pub const SEED_ENV: &str = "VMREPO_PASSWORD_SEED";
/// The largest seed file read.
const MAX_SEED_FILE: u64 = 64 << 10;

#[derive(serde::Serialize)]
struct Answer {
    month: String,
    scheme: Scheme,
    password: String,
}

pub(crate) fn password(ctx: &Ctx<'_>, a: &PasswordArgs) -> Result<Outcome> {
    if let Some(PasswordCommand::BootScript(b)) = &a.command {
        return boot_script(ctx, b);
    }
    let month = match &a.month {
        Some(m) => Month::parse(m)?,
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            Month::of_unix(now)
        }
    };
    let seed = seed(ctx, a)?;
    let scheme = scheme_of(a.scheme);
    let password = password::password(scheme, &seed, month)?;
    if ctx.cli.json {
        output::json(&Answer { month: month.yymm(), scheme, password })?;
    } else {
        line(password)?;
    }
    Ok(Outcome::Clean)
}

/// The seed: the first line of `--seed-file` (without its line break), else
/// the variable. A file others can read is used, with a warning.
fn seed(ctx: &Ctx<'_>, a: &PasswordArgs) -> Result<Vec<u8>> {
    let Some(path) = &a.seed_file else {
        return match std::env::var_os(SEED_ENV) {
            Some(v) => Ok(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("no seed: give --seed-file FILE or set {SEED_ENV}"),
            )
            .into()),
        };
    };
    read_seed_file(ctx, path)
}

/// The seed in `path`: its first line without the line break (and a CR
/// before it); a file others can read is used, with a warning.
pub(crate) fn read_seed_file(ctx: &Ctx<'_>, path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = vmrepo_dist::key::read_key_file(path, MAX_SEED_FILE, "the seed file")?;
    if let Ok(md) = std::fs::metadata(path)
        && md.permissions().mode() & 0o077 != 0
        && !ctx.cli.quiet
    {
        eprintln!(
            "vmrepo: warning: {} can be read by others than its owner (mode {:o}): chmod 600 it",
            path.display(),
            md.permissions().mode() & 0o777
        );
    }
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(first.strip_suffix(b"\r").unwrap_or(first).to_vec())
}

pub(crate) fn scheme_of(s: PasswordScheme) -> Scheme {
    match s {
        PasswordScheme::Spec => Scheme::Spec,
        PasswordScheme::Hmac => Scheme::Hmac,
    }
}

/// A file to put in the image.
#[derive(serde::Serialize)]
struct ImageFile {
    path: &'static str,
    /// Octal, as `install -m` takes it.
    mode: &'static str,
    /// `true`: the content is a line to append to the file, not the file.
    append: bool,
    content: String,
}

#[derive(serde::Serialize)]
struct BootScriptAnswer<'a> {
    scheme: Scheme,
    style: &'static str,
    seed_path: &'a str,
    /// The seed file, to make in the image (never made by vmrepo).
    seed_mode: &'static str,
    files: Vec<ImageFile>,
    /// What to run in the image (or its chroot) once the files are there.
    enable: Vec<String>,
    /// What gives whoever starts the image the month's password.
    retrieval: String,
}

/// `vmrepo password boot-script`: what an image runs at each boot.
fn boot_script(ctx: &Ctx<'_>, b: &BootScriptArgs) -> Result<Outcome> {
    use vmrepo_site::boot;
    if !b.seed_path.starts_with('/') || b.seed_path.bytes().any(|c| c == b'\n' || c == 0) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("--seed-path {:?}: an absolute path in the image, on one line", b.seed_path),
        )
        .into());
    }
    let scheme = scheme_of(b.scheme);
    let script = boot::password_script(scheme, &b.seed_path);
    let script_file =
        ImageFile { path: boot::SCRIPT_PATH, mode: "0755", append: false, content: script.clone() };
    let (style, files, enable) = match b.style {
        BootStyle::Sh => ("sh", vec![script_file], Vec::new()),
        BootStyle::RcLocal => (
            "rc-local",
            vec![
                script_file,
                ImageFile {
                    path: "/etc/rc.d/rc.local",
                    mode: "0755",
                    append: true,
                    content: boot::rc_local_line(),
                },
            ],
            Vec::new(),
        ),
        BootStyle::Systemd => (
            "systemd",
            vec![
                script_file,
                ImageFile {
                    path: boot::UNIT_PATH,
                    mode: "0644",
                    append: false,
                    content: boot::systemd_unit(scheme),
                },
            ],
            vec!["systemctl enable vmrepo-password.service".to_string()],
        ),
    };
    let retrieval =
        format!("vmrepo password --scheme {} --seed-file <your copy of the seed>", boot::scheme_name(scheme));
    if ctx.cli.json {
        output::json(&BootScriptAnswer {
            scheme,
            style,
            seed_path: &b.seed_path,
            seed_mode: "0600",
            files,
            enable,
            retrieval,
        })?;
        return Ok(Outcome::Clean);
    }
    if b.style == BootStyle::Sh {
        line(script.trim_end_matches('\n'))?;
        return Ok(Outcome::Clean);
    }
    let mut out = String::new();
    out.push_str("# Install in the image, as root (in the image's own root, or a chroot into it):\n");
    out.push_str(&format!(
        "#   install -d -m 700 {dir}\n#   install -m 600 -o root -g root /dev/null {seed}   # then write the seed on its first line\n",
        dir = std::path::Path::new(&b.seed_path).parent().map_or("/".into(), |p| p.display().to_string()),
        seed = b.seed_path
    ));
    for f in &files {
        if f.append {
            out.push_str(&format!("#   append the line below to {} (mode {})\n", f.path, f.mode));
        } else {
            out.push_str(&format!("#   install -m {} <the file below> {}\n", f.mode, f.path));
        }
    }
    for e in &enable {
        out.push_str(&format!("#   {e}\n"));
    }
    out.push_str(&format!("# Whoever starts the image gets the month's password with\n#   {retrieval}\n"));
    for f in &files {
        out.push_str(&format!(
            "\n# ==> {} (mode {}{}) <==\n",
            f.path,
            f.mode,
            if f.append { ", append" } else { "" }
        ));
        out.push_str(&f.content);
    }
    line(out.trim_end_matches('\n'))?;
    Ok(Outcome::Clean)
}
