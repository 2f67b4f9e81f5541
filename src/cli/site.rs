//! What makes a started copy of an image a node: `password` (the month's
//! root password). The seed is read, never printed.

use std::os::unix::fs::PermissionsExt;

use anyhow::Result;
use vmrepo_repo::{Error, ErrorKind};
use vmrepo_site::password::{self, Month, Scheme};

use super::Ctx;
use crate::Outcome;
use crate::args::{PasswordArgs, PasswordScheme};
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
    let scheme = match a.scheme {
        PasswordScheme::Spec => Scheme::Spec,
        PasswordScheme::Hmac => Scheme::Hmac,
    };
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
