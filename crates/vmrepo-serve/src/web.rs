//! The web page: the catalog for people, served by the same binary.
//!
//! `/` shows the inventory (totals by VM, OS and STAR library) and a table
//! of images that a form filters (GET parameters, one per field, and free
//! text) and whose column headings sort it: links and a form, so that it
//! works without JavaScript. `/images/{vm}/{name}` shows one image: its
//! record, its description, what an inspection of its guest finds, its
//! sidecars, download links with their digests and commands to copy.
//! `/static/` serves the style sheet and a small script (copy buttons,
//! filtering as one types) with long cache lifetimes.
//!
//! Pages are askama templates compiled into the binary with HTML escaping
//! on: names, notes and descriptions are text from the files, and text from
//! the files is hostile. Answers carry a Content-Security-Policy that allows
//! no inline script or style.

mod image;
pub mod inspection;

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use vmrepo_repo::description::human_bytes;
use vmrepo_repo::{ImageRecord, Inventory, Query, Totals};

use crate::api::if_none_match;
use crate::error::ApiError;
use crate::state::AppState;
use vmrepo_repo::checksum::hex;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(catalog))
        .route("/images/{vm}/{name}", get(image::page))
        .route("/static/{file}", get(asset))
}

/// What every page's frame needs.
pub struct Frame {
    pub css: String,
    pub js: String,
}

impl Frame {
    fn new() -> Frame {
        Frame {
            css: format!("/static/style.css?v={}", STYLE.tag()),
            js: format!("/static/app.js?v={}", SCRIPT.tag()),
        }
    }
}

// ---------------------------------------------------------------- static files

/// A file compiled into the binary, with its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset { body, content_type, etag: OnceLock::new() }
    }

    /// A digest of the content: its `ETag` and the version in its URL.
    fn tag(&self) -> &str {
        self.etag.get_or_init(|| hex(&Sha256::digest(self.body.as_bytes())[..8]))
    }
}

static STYLE: Asset = Asset::new(include_str!("../static/style.css"), "text/css; charset=utf-8");
static SCRIPT: Asset = Asset::new(include_str!("../static/app.js"), "text/javascript; charset=utf-8");

/// `GET /static/{file}`: the URL carries the digest, so the file may be kept a year.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let a = match file.as_str() {
        "style.css" => &STYLE,
        "app.js" => &SCRIPT,
        _ => return page_error(ApiError::not_found("no such file")),
    };
    let etag = format!("\"{}\"", a.tag());
    let mut r = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

// ---------------------------------------------------------------- answers

/// The policy of every page: scripts and styles from this server only, no
/// inline code, no frames, forms posted here only.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A rendered page with the headers every page carries.
pub fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            // The catalog changes behind the server's back: always ask again.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => {
            tracing::error!("a page cannot be rendered: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page cannot be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    frame: Frame,
    status: String,
    message: String,
}

/// An error as a page for people.
pub fn page_error(e: ApiError) -> Response {
    let page = ErrorPage {
        frame: Frame::new(),
        status: format!("{} {}", e.status.as_u16(), e.status.canonical_reason().unwrap_or("")),
        message: e.message,
    };
    let mut r = html(e.status, &page);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What stays as it is in a path segment or a query value: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a path segment or a query value.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A query string from pairs (without the `?`).
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs.into_iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// The page of an image.
pub fn image_href(rec: &ImageRecord) -> String {
    format!("/images/{}/{}", encode(&rec.vm), encode(&rec.name))
}

// ---------------------------------------------------------------- the catalog

/// The fields the form offers a choice of values for: (parameter, label).
const CHOICES: [(&str, &str); 8] = [
    ("vm", "VM"),
    ("os", "Operating system"),
    ("arch", "Architecture"),
    ("bits", "Word size"),
    ("lib", "STAR library"),
    ("maxsize", "Maximum size"),
    ("format", "Format"),
    ("storage", "Storage"),
];

/// The verification states the form filters by: (value, label).
const STATES: [(&str, &str); 4] = [
    ("verified", "verified"),
    ("failed", "failed"),
    ("unverified", "not verified"),
    ("checksum-problem", "checksum problem"),
];

/// The sortable columns: (key, heading).
const SORTS: [(&str, &str); 9] = [
    ("name", "Image"),
    ("os", "OS"),
    ("arch", "Arch"),
    ("lib", "Library"),
    ("maxsize", "Max size"),
    ("size", "Size"),
    ("format", "Format"),
    ("state", "Verification"),
    ("added", "Added"),
];

/// Rows shown at most; past that the page says how to narrow the filter.
const MAX_ROWS: usize = 2000;

/// One `<select>` of the filter form.
pub struct Choice {
    pub name: &'static str,
    pub label: &'static str,
    pub id: String,
    pub options: Vec<(String, bool)>,
    /// A value asked that no image has (kept so that the form shows it).
    pub value: String,
}

/// A column heading: its sort link and state.
pub struct Column {
    pub label: &'static str,
    pub href: String,
    /// `ascending`, `descending` or `none` (aria-sort).
    pub aria: &'static str,
    pub arrow: &'static str,
}

/// A row of the table.
pub struct Row {
    pub href: String,
    pub vm: String,
    pub name: String,
    pub file: String,
    pub os: String,
    pub arch: String,
    pub lib: String,
    pub maxsize: String,
    pub maxsize_bytes: String,
    pub size: String,
    pub size_bytes: String,
    pub format: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub state_detail: String,
    pub added: String,
    pub download: Option<String>,
    /// Lower-case text of the row for the script's filtering.
    pub text: String,
}

/// A line of the inventory.
pub struct TotalRow {
    pub key: String,
    pub href: String,
    pub images: u64,
    pub bytes: String,
    pub disk_usage: String,
    pub max_bytes: String,
}

/// A table of the inventory.
pub struct TotalTable {
    pub caption: &'static str,
    pub heading: &'static str,
    pub rows: Vec<TotalRow>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    frame: Frame,
    total: TotalRow,
    missing: u64,
    tables: Vec<TotalTable>,
    choices: Vec<Choice>,
    states: Vec<(&'static str, &'static str, bool)>,
    q: String,
    sort: String,
    order: String,
    columns: Vec<Column>,
    rows: Vec<Row>,
    matched: usize,
    filtered: bool,
    error: Option<String>,
    /// With `--sign-key`: how to pull from this server with vmrepo.
    pull: Option<PullHelp>,
}

/// The `vmrepo pull` commands the catalog page shows when the server signs its catalog.
struct PullHelp {
    key_id: String,
    trust: String,
    pull: String,
    base_known: bool,
}

/// The form as asked.
#[derive(Default)]
struct Form {
    /// (field, value) of each `<select>` set.
    fields: Vec<(&'static str, String)>,
    q: String,
    state: String,
    sort: String,
    descending: bool,
}

impl Form {
    fn parse(params: &[(String, String)]) -> Form {
        let get = |k: &str| params.iter().rev().find(|(p, _)| p == k).map(|(_, v)| v.trim().to_string());
        let mut f = Form::default();
        for (name, _) in CHOICES {
            if let Some(v) = get(name).filter(|v| !v.is_empty()) {
                f.fields.push((name, v));
            }
        }
        f.q = get("q").unwrap_or_default();
        f.state = get("state").filter(|s| STATES.iter().any(|(v, _)| v == s)).unwrap_or_default();
        f.sort = get("sort").filter(|s| SORTS.iter().any(|(k, _)| k == s)).unwrap_or_else(|| "name".into());
        f.descending = get("order").as_deref() == Some("desc");
        f
    }

    /// The parameters that make this form again, without sorting.
    fn filter_params(&self) -> Vec<(&str, &str)> {
        let mut p: Vec<(&str, &str)> = self.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if !self.q.is_empty() {
            p.push(("q", &self.q));
        }
        if !self.state.is_empty() {
            p.push(("state", &self.state));
        }
        p
    }

    /// The catalog query and the free-text words: a word of `q` that reads
    /// as an expression of a known field (`kernel~2.6*`, `maxsize>=8GB`) goes
    /// to the query, any other is looked for in every field.
    fn query(&self) -> Result<(Query, Vec<String>), ApiError> {
        let mut exprs: Vec<String> = self.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut words = Vec::new();
        for w in self.q.split_whitespace() {
            let field_end = w.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(w.len());
            let is_expr = field_end > 0
                && w[field_end..].starts_with(['=', '!', '<', '>', '~'])
                && vmrepo_repo::query::field_names().contains(&&w[..field_end]);
            if is_expr {
                exprs.push(w.to_string());
            } else {
                words.push(w.to_lowercase());
            }
        }
        Ok((Query::parse(&exprs)?, words))
    }
}

/// The verification state of a record: (label, CSS class, detail).
fn state_of(rec: &ImageRecord) -> (&'static str, &'static str, String) {
    if rec.checksum != "ok" && rec.kind == "file" {
        return ("checksum problem", "bad", format!(".checksum is {}", rec.checksum));
    }
    match rec.verified_ok {
        Some(true) => ("verified", "ok", rec.verified_at.clone().unwrap_or_default()),
        Some(false) => {
            ("failed", "bad", rec.verified_at.clone().map(|t| format!("at {t}")).unwrap_or_default())
        }
        None => ("not verified", "none", String::new()),
    }
}

fn state_key(rec: &ImageRecord) -> &'static str {
    match state_of(rec).0 {
        "verified" => "verified",
        "failed" => "failed",
        "checksum problem" => "checksum-problem",
        _ => "unverified",
    }
}

/// Whether every free-text word is in one of the record's fields.
fn matches_words(rec: &ImageRecord, words: &[String]) -> bool {
    if words.is_empty() {
        return true;
    }
    let text = haystack(rec);
    words.iter().all(|w| text.contains(w.as_str()))
}

/// The record's text, lower case, for free-text search.
fn haystack(rec: &ImageRecord) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    [
        rec.vm.clone(),
        rec.name.clone(),
        rec.file.clone(),
        rec.os.clone(),
        opt(&rec.osinfo),
        rec.arch.clone(),
        format!("{}bit", rec.bits),
        rec.lib.clone(),
        rec.maxsize.clone(),
        opt(&rec.detail),
        opt(&rec.format),
        opt(&rec.storage),
        opt(&rec.kernel),
        opt(&rec.added),
        opt(&rec.added_by),
        opt(&rec.sha256),
        opt(&rec.md5),
        state_of(rec).0.to_string(),
    ]
    .join(" ")
    .to_lowercase()
}

fn compare(a: &ImageRecord, b: &ImageRecord, sort: &str) -> Ordering {
    let by_name = || a.vm.cmp(&b.vm).then_with(|| a.name.cmp(&b.name)).then_with(|| a.file.cmp(&b.file));
    let first = match sort {
        "os" => a.os.cmp(&b.os),
        "arch" => (&a.arch, a.bits).cmp(&(&b.arch, b.bits)),
        "lib" => a.lib.cmp(&b.lib),
        "maxsize" => a.maxsize_bytes.cmp(&b.maxsize_bytes),
        "size" => a.size.cmp(&b.size),
        "format" => a.format.cmp(&b.format),
        "state" => state_key(a).cmp(state_key(b)),
        "added" => a.added.cmp(&b.added),
        _ => Ordering::Equal,
    };
    first.then_with(by_name)
}

fn total_row(t: &Totals, field: &str) -> TotalRow {
    TotalRow {
        key: t.key.clone(),
        href: if field.is_empty() {
            "/".into()
        } else {
            format!("/?{}", query_string([(field, t.key.as_str())]))
        },
        images: t.images,
        bytes: human_bytes(t.bytes),
        disk_usage: human_bytes(t.disk_usage),
        max_bytes: human_bytes(t.max_bytes),
    }
}

fn row(rec: &ImageRecord) -> Row {
    let (state, state_class, state_detail) = state_of(rec);
    let download = match rec.kind.as_str() {
        "file" => Some(format!("/vm/{}/{}", encode(&rec.vm), encode(&rec.file))),
        "folder" => Some(format!("/vm/{}/{}.tar", encode(&rec.vm), encode(&rec.file))),
        _ => None,
    };
    Row {
        href: image_href(rec),
        vm: rec.vm.clone(),
        name: rec.name.clone(),
        file: rec.file.clone(),
        os: rec.os.clone(),
        arch: format!("{} {}-bit", rec.arch, rec.bits),
        lib: rec.lib.clone(),
        maxsize: rec.maxsize.clone(),
        maxsize_bytes: rec.maxsize_bytes.to_string(),
        size: rec.size.map(human_bytes).unwrap_or_else(|| "—".into()),
        size_bytes: rec.size.map(|s| s.to_string()).unwrap_or_default(),
        format: rec.format.clone().unwrap_or_else(|| "—".into()),
        state,
        state_class,
        state_detail,
        added: rec.added.as_deref().map(|a| a.get(..10).unwrap_or(a).to_string()).unwrap_or_default(),
        download,
        text: haystack(rec),
    }
}

/// `GET /`: the inventory and the table of images.
async fn catalog(
    State(state): State<Arc<AppState>>,
    UrlQuery(params): UrlQuery<Vec<(String, String)>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let form = Form::parse(&params);
    let (query, words, error) = match form.query() {
        Ok((q, w)) => (q, w, None),
        // The page is shown all the same, with every image and the reason.
        Err(e) => (Query::all(), Vec::new(), Some(e.message)),
    };
    let state_filter = form.state.clone();
    let sort = form.sort.clone();
    let descending = form.descending;
    let found = state
        .with_catalog(move |catalog| {
            let inventory = catalog.inventory()?;
            let mut values: Vec<BTreeSet<String>> = vec![BTreeSet::new(); CHOICES.len()];
            catalog.find_each::<ApiError>(&Query::all(), |rec| {
                let v = [
                    rec.vm.clone(),
                    rec.os.clone(),
                    rec.arch.clone(),
                    rec.bits.to_string(),
                    rec.lib.clone(),
                    rec.maxsize.clone(),
                    rec.format.clone().unwrap_or_default(),
                    rec.storage.clone().unwrap_or_default(),
                ];
                for (set, v) in values.iter_mut().zip(v) {
                    if !v.is_empty() {
                        set.insert(v);
                    }
                }
                Ok(())
            })?;
            let mut matched = Vec::new();
            catalog.find_each::<ApiError>(&query, |rec| {
                if matches_words(rec, &words) && (state_filter.is_empty() || state_key(rec) == state_filter) {
                    matched.push(rec.clone());
                }
                Ok(())
            })?;
            matched.sort_by(|a, b| {
                let o = compare(a, b, &sort);
                if descending { o.reverse() } else { o }
            });
            Ok((inventory, values, matched))
        })
        .await;
    let (inventory, values, matched) = match found {
        Ok(f) => f,
        Err(e) => return page_error(e),
    };
    let mut page = catalog_page(&form, inventory, values, &matched, error.clone());
    page.pull = state.signing.as_ref().map(|s| {
        let base = base_url(&state, &headers, &uri);
        PullHelp {
            key_id: s.key_id.clone(),
            trust: "vmrepo trust add KEYFILE.pub".into(),
            pull: format!("vmrepo pull {}/", base.as_deref().unwrap_or("http://SERVER")),
            base_known: base.is_some(),
        }
    });
    html(if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK }, &page)
}

fn catalog_page(
    form: &Form,
    inventory: Inventory,
    values: Vec<BTreeSet<String>>,
    matched: &[ImageRecord],
    error: Option<String>,
) -> CatalogPage {
    let choices = CHOICES
        .iter()
        .zip(values)
        .map(|((name, label), set)| {
            let asked =
                form.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
            let mut options: Vec<(String, bool)> = set.into_iter().map(|v| (v.clone(), v == asked)).collect();
            if !asked.is_empty() && !options.iter().any(|(_, s)| *s) {
                options.push((asked.clone(), true));
            }
            Choice { name, label, id: format!("f-{name}"), options, value: asked }
        })
        .collect();
    let filter = form.filter_params();
    let columns = SORTS
        .iter()
        .map(|(key, label)| {
            let current = form.sort == *key;
            let next_desc = current && !form.descending;
            let mut p = filter.clone();
            p.push(("sort", key));
            if next_desc {
                p.push(("order", "desc"));
            }
            Column {
                label,
                href: format!("/?{}", query_string(p)),
                aria: match (current, form.descending) {
                    (false, _) => "none",
                    (true, false) => "ascending",
                    (true, true) => "descending",
                },
                arrow: match (current, form.descending) {
                    (false, _) => "",
                    (true, false) => " ▲",
                    (true, true) => " ▼",
                },
            }
        })
        .collect();
    CatalogPage {
        frame: Frame::new(),
        total: total_row(&inventory.total, ""),
        missing: inventory.missing,
        tables: vec![
            TotalTable {
                caption: "By VM",
                heading: "VM",
                rows: inventory.by_vm.iter().map(|t| total_row(t, "vm")).collect(),
            },
            TotalTable {
                caption: "By operating system",
                heading: "OS",
                rows: inventory.by_os.iter().map(|t| total_row(t, "os")).collect(),
            },
            TotalTable {
                caption: "By STAR library",
                heading: "Library",
                rows: inventory.by_lib.iter().map(|t| total_row(t, "lib")).collect(),
            },
        ],
        choices,
        states: STATES.iter().map(|(v, l)| (*v, *l, form.state == *v)).collect(),
        q: form.q.clone(),
        sort: form.sort.clone(),
        order: if form.descending { "desc".into() } else { String::new() },
        columns,
        rows: matched.iter().take(MAX_ROWS).map(row).collect(),
        matched: matched.len(),
        filtered: !filter.is_empty(),
        error,
        pull: None,
    }
}

/// The base URL of the server for commands to copy: the configured one,
/// else the scheme and the host the client used when the host is a plain
/// host name or address (never anything else reflected), else `None`.
pub fn base_url(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(u) = &state.public_url {
        return Some(u.trim_end_matches('/').to_string());
    }
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && !host.contains('@')
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    plain.then(|| format!("{}://{host}", state.scheme))
}
