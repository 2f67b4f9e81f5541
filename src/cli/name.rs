//! `vmrepo name check` and `name format`; naming an image from its flags and its
//! content is the library's ([`vmrepo_repo::naming`]).

use anyhow::Result;
use vmrepo_name::ImageName;
use vmrepo_repo::naming::{build_name, name_json};

use super::Ctx;
use crate::Outcome;
use crate::args::NameFields;
use crate::output::{self, line};

pub(crate) fn name_check(ctx: &Ctx<'_>, names: &[String]) -> Result<Outcome> {
    let mut bad = 0;
    let mut results = Vec::new();
    for n in names {
        let errors = ImageName::check(n);
        if !errors.is_empty() {
            bad += 1;
        }
        if ctx.cli.json {
            let parsed = ImageName::parse(n).ok();
            results.push(serde_json::json!({
                "name": n,
                "valid": errors.is_empty(),
                "fields": parsed.as_ref().map(name_json),
                "errors": errors.iter().map(|e| serde_json::json!({
                    "field": e.field().as_str(), "value": e.value(), "problem": e.problem(),
                })).collect::<Vec<_>>(),
            }));
        } else if errors.is_empty() {
            if !ctx.cli.quiet {
                line(format_args!("{n}: ok"))?;
            }
        } else {
            for e in &errors {
                line(format_args!("{n}: {e}"))?;
            }
        }
    }
    if ctx.cli.json {
        output::json(&results)?;
    }
    Ok(if bad > 0 { Outcome::Problems } else { Outcome::Clean })
}

pub(crate) fn name_format(ctx: &Ctx<'_>, fields: &NameFields, folder: bool) -> Result<Outcome> {
    let name = build_name(&fields.to_lib(), None)?;
    let name = if folder { name.with_ext(None)? } else { name };
    if ctx.cli.json {
        output::json(&serde_json::json!({ "name": name.to_string(), "fields": name_json(&name) }))?;
    } else {
        line(&name)?;
    }
    Ok(Outcome::Clean)
}
