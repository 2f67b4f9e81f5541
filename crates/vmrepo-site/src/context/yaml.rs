//! The little YAML this part needs, written and read with care.
//!
//! Written: block style, every string of ours double-quoted with escapes (or
//! a literal block for a script), so no value can turn into a key, a comment,
//! a tag (`!!python/object`) or another type, whatever it holds.
//!
//! Read: the admin's `--user-data`, through `saphyr-parser` (the maintained
//! successor of yaml-rust, pure Rust, events with line numbers). The tree is
//! built here, with caps on nodes and depth counted through aliases (no
//! billion laughs), duplicate keys and tags other than YAML's own refused.
//! A plain scalar is kept as written, so that cloud-init's PyYAML (YAML 1.1:
//! `yes` is true, `0755` octal) reads it as it would have read the admin's file.

use std::fmt::Write as _;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// A string, always written quoted (or as a literal block).
    Str(String),
    /// A plain scalar from the admin's file, written again as it was.
    Plain(String),
    Seq(Vec<Value>),
    Map(Vec<(Key, Value)>),
}

/// A mapping key: its text, and whether it was a plain scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub text: String,
    pub plain: bool,
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key { text: s.into(), plain: true }
    }
}

/// The most nodes (scalars, sequences, maps, each alias expanded) read from an admin's file.
pub const MAX_NODES: usize = 100_000;
/// The deepest nesting read.
pub const MAX_DEPTH: usize = 64;

/// Builds a map from `(key, value)` pairs.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Key::from(k), v)).collect())
}

/// A string value.
pub fn s(v: impl Into<String>) -> Value {
    Value::Str(v.into())
}

/// A sequence of strings.
pub fn strs<S: AsRef<str>>(v: &[S]) -> Value {
    Value::Seq(v.iter().map(|x| s(x.as_ref())).collect())
}

impl Value {
    /// The entry of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|(k, _)| k.text == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Appends an entry to a map (nothing for other values).
    pub fn push(&mut self, key: &str, v: Value) {
        if let Value::Map(m) = self {
            m.push((Key::from(key), v));
        }
    }
}

/// Writes a document: `header` (such as `#cloud-config\n`), then the value.
pub fn to_string(header: &str, v: &Value) -> String {
    let mut out = String::from(header);
    match v {
        Value::Map(m) if !m.is_empty() => emit_map(&mut out, m, 0, false),
        Value::Seq(q) if !q.is_empty() => emit_seq(&mut out, q, 0, false),
        other => {
            out.push_str(&scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// The one-line form of a scalar or empty collection; `None` for the rest.
fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Str(s) => quote(s),
        Value::Plain(p) if safe_plain(p) => p.clone(),
        Value::Plain(p) => quote(p),
        Value::Seq(q) if q.is_empty() => "[]".into(),
        Value::Map(m) if m.is_empty() => "{}".into(),
        _ => return None,
    })
}

fn key(k: &Key) -> String {
    if k.plain && safe_plain(&k.text) { k.text.clone() } else { quote(&k.text) }
}

/// Writes `: value` (or `:` and the block below) after a key or `-` at `n`.
fn emit_value(out: &mut String, v: &Value, n: usize, after_dash: bool) {
    match v {
        Value::Str(s) if literal_ok(s) => {
            out.push_str(if after_dash { "|" } else { " |" });
            if !s.ends_with('\n') {
                out.push('-');
            }
            out.push('\n');
            for l in s.lines() {
                if !l.is_empty() {
                    indent(out, n + 2);
                    out.push_str(l);
                }
                out.push('\n');
            }
        }
        Value::Map(m) if !m.is_empty() => {
            if after_dash {
                emit_map(out, m, n + 2, true);
            } else {
                out.push('\n');
                emit_map(out, m, n + 2, false);
            }
        }
        Value::Seq(q) if !q.is_empty() => {
            if after_dash {
                emit_seq(out, q, n + 2, true);
            } else {
                out.push('\n');
                emit_seq(out, q, n + 2, false);
            }
        }
        other => {
            if !after_dash {
                out.push(' ');
            }
            out.push_str(&scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

fn emit_map(out: &mut String, m: &[(Key, Value)], n: usize, first_inline: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if !(first_inline && i == 0) {
            indent(out, n);
        }
        out.push_str(&key(k));
        out.push(':');
        emit_value(out, v, n, false);
    }
}

fn emit_seq(out: &mut String, q: &[Value], n: usize, first_inline: bool) {
    for (i, v) in q.iter().enumerate() {
        if !(first_inline && i == 0) {
            indent(out, n);
        }
        out.push_str("- ");
        emit_value(out, v, n, true);
    }
}

/// Whether a string can be a literal block (`|`) and read back the same:
/// printable ASCII lines, none empty at the end or starting with a space,
/// no trailing spaces, at least one line break.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with("\n\n")
        && s.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
        && s.lines().all(|l| !l.ends_with(' '))
}

/// Whether a plain scalar can be written as it is in block context and read
/// back as the same text: a conservative subset of YAML's plain scalars.
fn safe_plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars().all(|c| c.is_ascii_graphic() && !"[]{},".contains(c) || c == ' ')
}

/// A double-quoted YAML string that any YAML 1.1 or 1.2 reader reads back exactly.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            // Line breaks to YAML 1.1 (PyYAML): written raw, they would be folded.
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            // Printable as YAML (and PyYAML's reader) defines it; the rest escaped.
            ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' => {
                out.push(c)
            }
            c if u32::from(c) >= 0x10000 => out.push(c),
            c if u32::from(c) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// A problem in the admin's file, with its line (1-based; 0 when unknown).
#[derive(Debug, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

enum Frame {
    Seq(Vec<Value>, usize),
    Map(Vec<(Key, Value)>, Option<Key>, usize),
}

/// Reads one YAML document into a [`Value`].
///
/// # Errors
/// The first problem and its line: malformed YAML, several documents, a tag
/// other than YAML's own `!!str`, `!!int`, `!!bool`, `!!null`, `!!float`,
/// `!!seq`, `!!map`, a key that is not a scalar, a key given twice, more
/// than [`MAX_NODES`] nodes or [`MAX_DEPTH`] levels.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let err = |line: usize, m: &str| ParseError { line, message: m.to_string() };
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: Vec<(usize, Value, usize)> = Vec::new();
    let mut result: Option<Value> = None;
    let mut nodes = 0usize;
    let mut docs = 0;
    let mut anchor_starts: Vec<usize> = Vec::new();
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| err(e.marker().line(), &e.to_string()))?;
        let line = span.start.line();
        let collection_end = matches!(ev, Event::SequenceEnd | Event::MappingEnd);
        let is_map = matches!(ev, Event::MappingStart(..));
        let (value, anchor, size) = match ev {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(err(line, "more than one YAML document"));
                }
                continue;
            }
            Event::Alias(id) => {
                let (_, v, size) = anchors
                    .iter()
                    .rev()
                    .find(|(a, _, _)| *a == id)
                    .ok_or_else(|| err(line, "an unknown alias"))?;
                (v.clone(), 0, *size)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let v = scalar_value(&text, style, tag.as_deref()).map_err(|m| err(line, &m))?;
                (v, anchor, 1)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                if let Some(t) = tag.as_deref()
                    && !(t.is_yaml_core_schema() && ["seq", "map"].contains(&t.suffix.as_str()))
                {
                    return Err(err(line, &format!("the tag {t} is not accepted")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err(line, &format!("nested deeper than {MAX_DEPTH} levels")));
                }
                anchor_starts.push(anchor);
                let start = nodes;
                stack.push(if is_map {
                    Frame::Map(Vec::new(), None, start)
                } else {
                    Frame::Seq(Vec::new(), start)
                });
                nodes += 1;
                if nodes > MAX_NODES {
                    return Err(err(line, &format!("more than {MAX_NODES} values")));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = anchor_starts.pop().unwrap_or(0);
                match stack.pop() {
                    Some(Frame::Seq(v, start)) => (Value::Seq(v), anchor, nodes - start),
                    Some(Frame::Map(m, _, start)) => (Value::Map(m), anchor, nodes - start),
                    None => return Err(err(line, "an unbalanced collection")),
                }
            }
        };
        // Collections were counted at their start and through their
        // children; a scalar adds one, an alias all it repeats.
        if !collection_end {
            nodes = nodes.saturating_add(size);
            if nodes > MAX_NODES {
                return Err(err(line, &format!("more than {MAX_NODES} values (aliases counted each time)")));
            }
        }
        if anchor != 0 {
            anchors.push((anchor, value.clone(), size.max(1)));
        }
        match stack.last_mut() {
            None => result = Some(value),
            Some(Frame::Seq(v, _)) => v.push(value),
            Some(Frame::Map(m, pending, _)) => match pending.take() {
                None => {
                    let k = match value {
                        Value::Plain(t) => Key { text: t, plain: true },
                        Value::Str(t) => Key { text: t, plain: false },
                        Value::Null => Key { text: String::new(), plain: true },
                        Value::Bool(_) | Value::Int(_) => {
                            return Err(err(line, "a key that is not a string"));
                        }
                        Value::Seq(_) | Value::Map(_) => return Err(err(line, "a key that is not a string")),
                    };
                    if k.text == "<<" && k.plain {
                        return Err(err(line, "merge keys (<<) are not accepted: write the entries out"));
                    }
                    if m.iter().any(|(x, _)| x.text == k.text) {
                        return Err(err(line, &format!("the key {:?} is given twice", k.text)));
                    }
                    *pending = Some(k);
                }
                Some(k) => m.push((k, value)),
            },
        }
    }
    Ok(result.unwrap_or(Value::Null))
}

fn scalar_value(text: &str, style: ScalarStyle, tag: Option<&saphyr_parser::Tag>) -> Result<Value, String> {
    if let Some(t) = tag {
        let ok =
            t.is_yaml_core_schema() && ["str", "int", "bool", "null", "float"].contains(&t.suffix.as_str());
        if !ok {
            return Err(format!("the tag {t} is not accepted"));
        }
        if t.suffix == "str" {
            return Ok(Value::Str(text.into()));
        }
        // `!!int 1` and friends: the text is kept plain, so the reader types it.
        return if safe_plain(text) {
            Ok(Value::Plain(text.into()))
        } else {
            Err(format!("{text:?} under the tag {t}"))
        };
    }
    Ok(match style {
        ScalarStyle::Plain if text.is_empty() => Value::Null,
        ScalarStyle::Plain => Value::Plain(text.into()),
        _ => Value::Str(text.into()),
    })
}

/// Merges the admin's `theirs` into `ours`: maps merged key by key, lists
/// appended (ours first), and for anything else the admin's value wins.
pub fn merge(ours: &mut Value, theirs: Value) {
    match (ours, theirs) {
        (Value::Map(a), Value::Map(b)) => {
            for (k, v) in b {
                match a.iter_mut().find(|(x, _)| x.text == k.text) {
                    Some((_, old)) => merge(old, v),
                    None => a.push((k, v)),
                }
            }
        }
        (Value::Seq(a), Value::Seq(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        (e.line, e.message)
    }

    #[test]
    fn refusals_name_the_line() {
        assert_eq!(line_of("a: 1\nb: !!python/object:os.system x\n").0, 2);
        assert!(line_of("a: 1\na: 2\n").1.contains("twice"));
        assert!(line_of("a: !custom x\n").1.contains("not accepted"));
        assert!(line_of("? [a]\n: 1\n").1.contains("not a string"));
        assert!(line_of("a: 1\n---\nb: 2\n").1.contains("more than one"));
        assert!(line_of("base: &b {x: 1}\nother:\n  <<: *b\n").1.contains("merge keys"));
        assert_eq!(line_of("a: [1, 2\nb: 3\n").0, 2);
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(line_of(&deep).1.contains("deeper"));
    }

    #[test]
    fn aliases_are_counted_each_time() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(line_of(&t).1.contains("more than"));
        let ok = parse("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(ok.get("b"), ok.get("a"));
    }

    #[test]
    fn plain_scalars_are_kept_as_written() {
        let v = parse("a: yes\nb: '0755'\nc: 0755\nd:\ne: !!str 12\n").unwrap();
        assert_eq!(v.get("a"), Some(&Value::Plain("yes".into())));
        assert_eq!(v.get("b"), Some(&Value::Str("0755".into())));
        assert_eq!(v.get("c"), Some(&Value::Plain("0755".into())));
        assert_eq!(v.get("d"), Some(&Value::Null));
        assert_eq!(v.get("e"), Some(&Value::Str("12".into())));
        let out = to_string("", &v);
        assert_eq!(out, "a: yes\nb: \"0755\"\nc: 0755\nd: null\ne: \"12\"\n");
    }

    #[test]
    fn merge_appends_lists_merges_maps_and_theirs_win() {
        let mut ours = parse("a: [1]\nm: {x: 1, y: 2}\ns: ours\n").unwrap();
        merge(&mut ours, parse("a: [2]\nm: {y: 3, z: 4}\ns: theirs\nn: new\n").unwrap());
        assert_eq!(to_string("", &ours), "a:\n  - 1\n  - 2\nm:\n  x: 1\n  y: 3\n  z: 4\ns: theirs\nn: new\n");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\nd\u{7}\u{85}\u{feff}\u{2028}"), "\"a\\\"b\\\\c\\nd\\x07\\x85\\ufeff\\L\"");
        assert_eq!(to_string("", &map([("k", s("line\n  two\n"))])), "k: |\n  line\n    two\n");
        assert_eq!(to_string("", &map([("k", s("one\ntwo"))])), "k: |-\n  one\n  two\n");
        // Nothing that needs care goes into a literal block.
        assert_eq!(to_string("", &map([("k", s(" x\n"))])), "k: \" x\\n\"\n");
        assert_eq!(to_string("", &map([("k", s("x \n"))])), "k: \"x \\n\"\n");
        assert_eq!(to_string("", &map([("k", s("x\n\n"))])), "k: \"x\\n\\n\"\n");
    }
}
