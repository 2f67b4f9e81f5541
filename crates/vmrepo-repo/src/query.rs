//! `vmrepo find` expressions: `FIELD=VALUE`, `FIELD!=VALUE`, `FIELD~GLOB`,
//! `FIELD!~GLOB`, and for numbers and dates `<`, `<=`, `>`, `>=`. A bare word
//! matches names containing it. Every expression must hold (AND).
//!
//! Values of `vm`, `os`, `arch` and `lib` are read as a person types them
//! (`os=SL5.3` finds `sl5.3`); sizes take units (`maxsize>=4GB`, `size<1.5G`);
//! globs ignore case; `added=2026-11` matches every image added that month.

use rusqlite::types::Value;
use vmrepo_name::{Isa, MaxSize, Os, StarLib, Vm};

use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Size,
    Date,
}

/// The fields `find` knows: (name, column, kind).
const FIELDS: &[(&str, &str, Kind)] = &[
    ("vm", "vm", Kind::Text),
    ("name", "stem", Kind::Text),
    ("file", "file", Kind::Text),
    ("kind", "kind", Kind::Text),
    ("os", "os", Kind::Text),
    ("osinfo", "osinfo", Kind::Text),
    ("arch", "arch", Kind::Text),
    ("bits", "bits", Kind::Int),
    ("lib", "lib", Kind::Text),
    ("maxsize", "maxsize_bytes", Kind::Size),
    ("detail", "detail", Kind::Text),
    ("ext", "ext", Kind::Text),
    ("size", "size", Kind::Size),
    ("disk_usage", "disk_usage", Kind::Size),
    ("parts", "parts", Kind::Int),
    ("format", "format", Kind::Text),
    ("virtual_size", "virtual_size", Kind::Size),
    ("storage", "storage", Kind::Text),
    ("kernel", "kernel", Kind::Text),
    ("sha256", "sha256", Kind::Text),
    ("md5", "md5", Kind::Text),
    ("checksum", "checksum_state", Kind::Text),
    ("description", "description_state", Kind::Text),
    ("added", "added", Kind::Date),
    ("added_by", "added_by", Kind::Text),
    ("verified", "verified_at", Kind::Date),
];

/// The operators, longest first so that `<=` is not read as `<`.
const OPS: [&str; 8] = ["!=", "!~", "<=", ">=", "=", "~", "<", ">"];

/// A parsed `find` query.
#[derive(Clone, Debug, Default)]
pub struct Query {
    clauses: Vec<String>,
    values: Vec<Value>,
    mentions_kind: bool,
}

/// The field names, for help texts.
pub fn field_names() -> Vec<&'static str> {
    FIELDS.iter().map(|f| f.0).collect()
}

impl Query {
    /// Every image (not those whose file is missing).
    pub fn all() -> Query {
        Query::default()
    }

    /// Parses expressions.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the expression and what is wrong.
    pub fn parse<S: AsRef<str>>(exprs: &[S]) -> Result<Query> {
        let mut q = Query::default();
        for e in exprs {
            q.add(e.as_ref())?;
        }
        Ok(q)
    }

    fn add(&mut self, expr: &str) -> Result<()> {
        let bad = |why: String| Error::new(ErrorKind::InvalidInput, format!("find {expr:?}: {why}"));
        let field_end = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len());
        let rest = &expr[field_end..];
        let Some(op) = OPS.iter().copied().find(|op| rest.starts_with(op)) else {
            if expr.contains(['=', '~', '<', '>']) || expr.is_empty() {
                return Err(bad("expected FIELD=VALUE, FIELD~GLOB or FIELD<VALUE".into()));
            }
            self.clauses.push("lower(stem) GLOB ?".into());
            self.values.push(Value::Text(format!("*{}*", glob_escape(&expr.to_ascii_lowercase()))));
            return Ok(());
        };
        let name = &expr[..field_end];
        let value = &rest[op.len()..];
        let Some(&(_, column, kind)) = FIELDS.iter().find(|f| f.0 == name) else {
            return Err(bad(format!("unknown field {name:?} (fields: {})", field_names().join(", "))));
        };
        if name == "kind" {
            self.mentions_kind = true;
        }
        match op {
            "~" | "!~" => {
                let not = if op == "!~" { "NOT " } else { "" };
                let col = if kind == Kind::Text || kind == Kind::Date {
                    format!("lower({column})")
                } else {
                    format!("CAST({column} AS TEXT)")
                };
                let col = if column == "maxsize_bytes" { "lower(maxsize)".to_string() } else { col };
                self.clauses.push(format!("{col} {not}GLOB ?"));
                self.values.push(Value::Text(value.to_ascii_lowercase()));
            }
            _ => {
                let sql_op = match op {
                    "=" => "=",
                    "!=" => "!=",
                    "<" => "<",
                    "<=" => "<=",
                    ">" => ">",
                    _ => ">=",
                };
                let v = match kind {
                    Kind::Text => {
                        if !matches!(op, "=" | "!=") {
                            return Err(bad(format!("{name} is text: use =, != or ~")));
                        }
                        Value::Text(canonical_text(name, value))
                    }
                    Kind::Int => Value::Integer(
                        value.parse::<i64>().map_err(|_| bad(format!("{name} takes a number")))?,
                    ),
                    Kind::Size => {
                        // A plain number is bytes, exactly; a unit is read in binary, as
                        // the catalog stores maximum sizes (maxsize>=10GB finds the
                        // names 10GB and up, whichever reading their disks are in).
                        let bytes = match value.parse::<u64>() {
                            Ok(b) => b,
                            Err(_) => MaxSize::from_user(value)
                                .map_err(|e| bad(format!("{name} takes a size like 8GB: {}", e.problem())))?
                                .bytes(),
                        };
                        Value::Integer(i64::try_from(bytes).map_err(|_| bad("size too large".into()))?)
                    }
                    Kind::Date => {
                        if !is_date(value) {
                            return Err(bad(format!(
                                "{name} takes a date like 2026, 2026-11, 2026-11-26 or 2026-11-26T06:47:19Z"
                            )));
                        }
                        if op == "=" || op == "!=" {
                            // A date or month matches every time within it.
                            let not = if op == "!=" { "NOT " } else { "" };
                            self.clauses.push(format!("{column} {not}GLOB ?"));
                            self.values.push(Value::Text(format!("{}*", glob_escape(value))));
                            return Ok(());
                        }
                        Value::Text(value.to_string())
                    }
                };
                self.clauses.push(format!("{column} {sql_op} ?"));
                self.values.push(v);
            }
        }
        Ok(())
    }

    /// The WHERE clause and its values.
    pub fn to_sql(&self) -> (String, Vec<Value>) {
        let mut clauses = self.clauses.clone();
        if !self.mentions_kind {
            clauses.insert(0, "kind != 'missing'".into());
        }
        (clauses.join(" AND "), self.values.clone())
    }
}

/// The stored spelling of a value a person typed, where the field has one.
fn canonical_text(field: &str, value: &str) -> String {
    let canon = match field {
        "vm" => Vm::from_user(value).ok().map(|v| v.as_str().to_string()),
        "os" => Os::from_user(value).ok().map(|o| o.to_string()),
        "arch" => Isa::from_user(value).ok().map(|(i, _)| i.as_str().to_string()),
        "lib" => StarLib::from_user(value).ok().map(|l| l.to_string()),
        "sha256" | "md5" => Some(value.to_ascii_lowercase()),
        "storage" if value.to_ascii_lowercase().starts_with("dynamic") => Some("dynamic".into()),
        _ => None,
    };
    canon.unwrap_or_else(|| value.to_string())
}

/// Whether `v` is a year, a month, a day or a time that exists, written as
/// the catalog stores times (`2026-11-26T06:47:19Z`) or a prefix of it.
fn is_date(v: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = v.splitn(3, '-').collect();
    match parts.as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2) && (1..=12).contains(&m.parse::<u8>().unwrap_or(0)),
        [y, m, rest] => {
            let (d, time) = rest.split_once('T').map_or((*rest, None), |(d, t)| (d, Some(t)));
            if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
                return false;
            }
            let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i16>(), m.parse::<i8>(), d.parse::<i8>()) else {
                return false;
            };
            if jiff::civil::Date::new(y, m, d).is_err() {
                return false;
            }
            match time {
                None => true,
                Some(t) => {
                    let t = t.strip_suffix('Z').unwrap_or(t);
                    let f: Vec<&str> = t.split(':').collect();
                    let ok = |s: &str, max: u8| digits(s, 2) && s.parse::<u8>().is_ok_and(|n| n <= max);
                    match f.as_slice() {
                        [h] => ok(h, 23),
                        [h, mi] => ok(h, 23) && ok(mi, 59),
                        [h, mi, sec] => ok(h, 23) && ok(mi, 59) && ok(sec, 60),
                        _ => false,
                    }
                }
            }
        }
        _ => false,
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operators_and_canonicalises() {
        let q = Query::parse(&["os=SL5.3", "maxsize>=4G", "name~*ec2*", "bits=64", "added=2026-11"]).unwrap();
        let (sql, values) = q.to_sql();
        assert_eq!(
            sql,
            "kind != 'missing' AND os = ? AND maxsize_bytes >= ? AND lower(stem) GLOB ? AND bits = ? AND added GLOB ?"
        );
        assert_eq!(values[0], Value::Text("sl5.3".into()));
        assert_eq!(values[1], Value::Integer(4 << 30));
        assert_eq!(values[4], Value::Text("2026-11*".into()));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "colour=red",
            "bits=sixty",
            "os<sl5",
            "maxsize>=lots",
            "=x",
            "added>yesterday",
            "added>=2026-13-45",
            "added=2026-02-30",
            "added<2026-11-26T25:00:00Z",
            "verified=26-11",
        ] {
            assert!(Query::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn real_dates_and_their_prefixes() {
        for good in [
            "added=2026",
            "added>=2026-11",
            "added<2026-02-28",
            "added>2024-02-29T23:59:60Z",
            "verified=2026-11-26T06",
        ] {
            assert!(Query::parse(&[good]).is_ok(), "{good}");
        }
    }

    #[test]
    fn kind_filter_lifts_the_default() {
        let (sql, _) = Query::parse(&["kind=missing"]).unwrap().to_sql();
        assert_eq!(sql, "kind = ?");
    }
}
