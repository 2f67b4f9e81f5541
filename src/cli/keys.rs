//! `vmrepo keys`: the repository's SSH public keys (add, list, rm) and the
//! boot script that installs the signed list on an image (the library is
//! vmrepo_site::keys; docs/site.md).

use std::io::Read;
use std::path::Path;

use anyhow::Result;
use vmrepo_repo::{Error, ErrorKind};
use vmrepo_site::keys::{self, KeyInfo, MAX_KEY_FILE};

use super::{Ctx, open_repo};
use crate::Outcome;
use crate::args::KeysBootScriptArgs;
use crate::output::{self, Table, line};

pub(crate) fn add(ctx: &Ctx<'_>, file: &Path, name: Option<&str>) -> Result<Outcome> {
    let repo = open_repo(ctx)?;
    let (bytes, source, file_name) = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read standard input: {e}")))?;
        if u64::try_from(buf.len()).unwrap_or(u64::MAX) > MAX_KEY_FILE {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("standard input: larger than {MAX_KEY_FILE} bytes"),
            )
            .into());
        }
        (buf, "standard input".to_string(), None)
    } else {
        let bytes = vmrepo_dist::key::read_key_file(file, MAX_KEY_FILE, "the public key")?;
        let file_name = file.file_name().map(|f| f.to_string_lossy().into_owned());
        (bytes, file.display().to_string(), file_name)
    };
    let k = keys::add(&repo, &bytes, &source, name, file_name.as_deref(), ctx.cancel)?;
    if ctx.cli.json {
        output::json(&k)?;
    } else if !ctx.cli.quiet {
        line(format_args!("kept {} {} {} as {:?}", k.key_type, k.bits, k.fingerprint, k.name))?;
    }
    Ok(Outcome::Clean)
}

pub(crate) fn list(ctx: &Ctx<'_>) -> Result<Outcome> {
    let repo = open_repo(ctx)?;
    let all = keys::list_keys(repo.root())?;
    if ctx.cli.json {
        output::json(&all)?;
        return Ok(Outcome::Clean);
    }
    let mut t = Table::new(vec!["NAME", "TYPE", "BITS", "FINGERPRINT", "COMMENT"]).right_align(&[2]);
    for k in &all {
        t.row(vec![
            k.name.clone(),
            k.key_type.clone(),
            k.bits.to_string(),
            k.fingerprint.clone(),
            comment(k),
        ]);
    }
    if all.is_empty() {
        if !ctx.cli.quiet {
            eprintln!("vmrepo: no SSH key is kept (vmrepo keys add FILE.pub)");
        }
    } else {
        t.print()?;
    }
    Ok(Outcome::Clean)
}

/// As ssh-keygen -l says it.
fn comment(k: &KeyInfo) -> String {
    if k.comment.is_empty() { "no comment".into() } else { k.comment.clone() }
}

pub(crate) fn rm(ctx: &Ctx<'_>, name: &str) -> Result<Outcome> {
    let k = keys::remove(&open_repo(ctx)?, name, ctx.cancel)?;
    if ctx.cli.json {
        output::json(&k)?;
    } else if !ctx.cli.quiet {
        line(format_args!("removed {:?} ({} {})", k.name, k.key_type, k.fingerprint))?;
    }
    Ok(Outcome::Clean)
}

#[derive(serde::Serialize)]
struct ScriptAnswer<'a> {
    url: &'a str,
    users: Vec<String>,
    /// Where the script reads the public key, or `embedded`.
    pubkey: String,
    script: String,
}

pub(crate) fn boot_script(ctx: &Ctx<'_>, a: &KeysBootScriptArgs) -> Result<Outcome> {
    let pem = a.pubkey.as_deref().map(vmrepo_dist::rsasig::read_public_pem).transpose()?;
    let opts = keys::script::ScriptOptions {
        url: a.url.clone(),
        pubkey_pem: pem,
        users: a.users.clone(),
        test_home_root: a.test_home_root.clone(),
    };
    let script = keys::script::boot_script(&opts)?;
    if ctx.cli.json {
        let users = if a.users.is_empty() {
            keys::script::DEFAULT_USERS.iter().map(|u| (*u).to_string()).collect()
        } else {
            a.users.clone()
        };
        let pubkey =
            if a.pubkey.is_some() { "embedded".into() } else { keys::script::DEFAULT_PUBKEY.to_string() };
        output::json(&ScriptAnswer { url: &a.url, users, pubkey, script })?;
    } else {
        line(script.trim_end())?;
    }
    Ok(Outcome::Clean)
}
