//! `vmrepo serve`: the repository over HTTP (the vmrepo-serve crate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use vmrepo_dist::export::Signers;
use vmrepo_dist::key::PASSWORD_ENV;
use vmrepo_repo::{ErrorKind, Repository};
use vmrepo_serve::signed::Signing;
use vmrepo_serve::{AppState, Limits, ServeOptions};

use super::{Ctx, open_repo};
use crate::Outcome;
use crate::args::ServeArgs;
use crate::output::{self, line};

/// Threads for blocking work (file reads and writes, SQLite).
const BLOCKING_THREADS: usize = 64;

/// glibc gives each thread that allocates its own malloc arena, up to 8 per
/// core, and freed download buffers stay in them: under a few hundred
/// connections the resident memory grows by tens of MiB that nothing uses.
/// Two arenas are enough for a server whose threads mostly wait.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter, before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub(crate) fn serve(ctx: &Ctx<'_>, a: &ServeArgs) -> Result<Outcome> {
    serve_repo(ctx, open_repo(ctx)?, a)
}

pub(crate) fn serve_repo(ctx: &Ctx<'_>, repo: Repository, a: &ServeArgs) -> Result<Outcome> {
    let addr: SocketAddr = a.listen.parse().map_err(|_| {
        vmrepo_repo::Error::new(
            ErrorKind::InvalidInput,
            format!("--listen {}: ADDR:PORT is expected, like 127.0.0.1:8080 or [::]:8080", a.listen),
        )
    })?;
    // Open the catalog once now: a repository that cannot be served is said at once.
    vmrepo_repo::Catalog::open(repo.clone(), ctx.cancel)?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            // Checked before listening, so that a bad file is a clear error, not a dead server.
            vmrepo_serve::server::tls_config(c, k)
                .map_err(|e| vmrepo_repo::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
            Some((c.clone(), k.clone()))
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = a.public_url.as_deref().map(public_url).transpose()?;
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vmrepo-serve")
        // Reads of downloads, SQLite and uploads' writes block: a few dozen
        // threads keep the disk busy; hundreds would only hold memory.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("cannot start the server's threads")?;
    // Files of uploads a crashed server was receiving.
    vmrepo_serve::upload::remove_leftovers(&repo);
    let defaults = Limits::default();
    let limits = Limits {
        header_timeout: a.header_timeout.unwrap_or(defaults.header_timeout),
        grace: a.grace.unwrap_or(defaults.grace),
        ..defaults
    };
    let signing = signing(a, &repo, public_url.clone())?;
    let keys_rsa = a.keys_rsa_key.as_deref().map(vmrepo_dist::rsasig::RsaSigner::load).transpose()?;
    let mut state = AppState::new(repo, a.read_only, limits);
    state.scheme = scheme;
    state.public_url = public_url;
    state.signing = signing;
    state.ssh_keys = vmrepo_serve::ssh_keys::SshKeys::new(keys_rsa);
    let state = Arc::new(state);
    let cancel = ctx.cancel;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| vmrepo_repo::Error::new(ErrorKind::Io, format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        if ctx.cli.json {
            // One line, so that a program reading the first line has it whole.
            line(serde_json::json!({ "url": format!("{scheme}://{bound}/"), "root": state.repo.root() }))?;
        } else if !ctx.cli.quiet {
            line(format_args!(
                "Serving {} at {scheme}://{bound}/{}  (Ctrl-C to stop)",
                state.repo.root().display(),
                if a.read_only { " read-only" } else { "" }
            ))?;
        }
        output::flush()?;
        // The first SIGINT or SIGTERM sets `cancel` (src/ui.rs): shut down
        // gracefully; a second one ends the process at once.
        let shutdown = async {
            while !cancel.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        vmrepo_serve::run(listener, state, ServeOptions { tls }, shutdown)
            .await
            .map_err(|e| vmrepo_repo::Error::new(ErrorKind::Io, e.to_string()))?;
        anyhow::Ok(())
    })?;
    Ok(Outcome::Clean)
}

/// With `--sign-key`: the key, unlocked and checked before listening.
fn signing(a: &ServeArgs, repo: &Repository, base_url: Option<String>) -> Result<Option<Signing>> {
    let Some(path) = &a.sign_key else { return Ok(None) };
    let validity = vmrepo_dist::publish::parse_expires(&a.catalog_expires).map_err(|e| {
        vmrepo_repo::Error::new(
            ErrorKind::InvalidInput,
            e.to_string().replacen("--expires", "--catalog-expires", 1),
        )
    })?;
    if let Some(root) = vmrepo_dist::key::inside_repository(path)
        && root == repo.root()
    {
        return Err(vmrepo_repo::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--sign-key {}: inside the repository {}: keep the secret key out of the tree it signs",
                path.display(),
                root.display()
            ),
        )
        .into());
    }
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let (minisign_secret, minisign_public) = vmrepo_dist::key::load_secret_key(path, password)?;
    let signers = Signers::minisign(minisign_secret, minisign_public);
    Ok(Some(Signing::new(signers, validity, base_url)))
}

/// A `--public-url`: http or https, a host, perhaps a port and a path; no
/// query, fragment, credentials, space or quote (it is shown in commands to copy).
fn public_url(u: &str) -> Result<String> {
    let bad = || {
        vmrepo_repo::Error::new(
            ErrorKind::InvalidInput,
            format!("--public-url {u}: an http:// or https:// URL is expected, like https://vm.example.org"),
        )
    };
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://")).ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or("");
    let plain = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~' | '/' | ':' | '[' | ']' | '%')
    };
    if host.is_empty() || host.contains('@') || !rest.chars().all(plain) {
        return Err(bad().into());
    }
    Ok(u.trim_end_matches('/').to_string())
}
