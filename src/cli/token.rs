//! `vmrepo token add|list|revoke`: the tokens that allow writes through
//! `vmrepo serve` (the store is vmrepo_serve::auth).

use anyhow::Result;
use vmrepo_name::Vm;
use vmrepo_serve::auth;

use super::{Ctx, open_repo};
use crate::Outcome;
use crate::output::{self, Table, line, or_dash};

pub(crate) fn add(ctx: &Ctx<'_>, name: &str, vms: &[String], expires: Option<&str>) -> Result<Outcome> {
    let repo = open_repo(ctx)?;
    let vms: Vec<Vm> = vms.iter().map(|v| Vm::from_user(v)).collect::<Result<_, _>>()?;
    let expires = expires.map(auth::parse_expiry).transpose()?;
    let (entry, token) = auth::add_token(&repo, name, &vms, expires, ctx.cancel)?;
    if ctx.cli.json {
        output::json(&serde_json::json!({
            "name": entry.name,
            "token": token,
            "vms": entry.vms,
            "created": entry.created,
            "expires": entry.expires,
        }))?;
    } else {
        // Printed even with --quiet: it is shown this once and never again.
        line(&token)?;
        if !ctx.cli.quiet {
            let scope =
                if entry.vms.is_empty() { "every VM folder".to_string() } else { entry.vms.join(", ") };
            eprintln!(
                "token {} for {scope}{}: keep it now, it is not stored and cannot be shown again",
                entry.name,
                entry.expires.as_deref().map(|e| format!(", until {e}")).unwrap_or_default()
            );
        }
    }
    Ok(Outcome::Clean)
}

pub(crate) fn list(ctx: &Ctx<'_>) -> Result<Outcome> {
    let repo = open_repo(ctx)?;
    let tokens = auth::list_tokens(&repo)?;
    if ctx.cli.json {
        output::json(&tokens)?;
        return Ok(Outcome::Clean);
    }
    let mut t = Table::new(vec!["NAME", "STATE", "VM", "CREATED", "EXPIRES"]);
    for k in &tokens {
        let vms = if k.vms.is_empty() { "all".to_string() } else { k.vms.join(",") };
        t.row(vec![
            k.name.clone(),
            k.state.to_string(),
            vms,
            k.created.clone(),
            or_dash(k.expires.as_deref()),
        ]);
    }
    t.print()?;
    Ok(Outcome::Clean)
}

pub(crate) fn revoke(ctx: &Ctx<'_>, name: &str) -> Result<Outcome> {
    let repo = open_repo(ctx)?;
    let entry = auth::revoke_token(&repo, name, ctx.cancel)?;
    if ctx.cli.json {
        output::json(&serde_json::json!({ "name": entry.name, "revoked": entry.revoked }))?;
    } else if !ctx.cli.quiet {
        line(format_args!("revoked the token {}", entry.name))?;
    }
    Ok(Outcome::Clean)
}
