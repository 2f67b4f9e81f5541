//! The JSON API under `/api/v1/`: the CLI's `find`, `show`, `inventory` and
//! `lint`, with the same documents as their `--json` (docs/json.md).
//!
//! Answers carry a strong `ETag` (a digest of the body) and honour
//! `If-None-Match`, so that a client polling the catalog gets `304` until it
//! changes. `/api/v1/images` pages its answer: `limit` and `offset`
//! parameters, the total in `X-Total-Count` and the next page in `Link`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query as UrlQuery, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vmrepo_repo::Query;
use vmrepo_repo::checksum::hex;

use crate::answers::Answer;
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1", get(index))
        .route("/api/v1/", get(index))
        .route("/api/v1/images", get(images))
        .route("/api/v1/images/{vm}/{name}", get(show))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/lint", get(lint))
}

/// What the API offers, for a person who opens `/api/v1` in a browser.
async fn index() -> Response {
    json_response(
        &HeaderMap::new(),
        StatusCode::OK,
        &serde_json::json!({
            "version": 1,
            "endpoints": {
                "images": "/api/v1/images?q=EXPR...&FIELD=VALUE&limit=N&offset=N",
                "image": "/api/v1/images/{vm}/{name}",
                "inventory": "/api/v1/inventory",
                "lint": "/api/v1/lint",
                "download": "/vm/{vm}/{file}",
            },
            "docs": "docs/serve.md",
        }),
    )
}

/// Parameters of `/api/v1/images` that are not query expressions.
const RESERVED: [&str; 3] = ["q", "limit", "offset"];

/// The query expressions of a request: each word of every `q`, and one per
/// other parameter (`os=sl5.3`; `maxsize>=8GB` arrives as the key
/// `maxsize>` and the value `8GB` and is put back together).
pub fn expressions(params: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in params {
        if k == "q" {
            out.extend(v.split_whitespace().map(str::to_string));
        } else if RESERVED.contains(&k.as_str()) {
        } else if v.is_empty() && k.contains(['<', '>', '=', '~']) {
            out.push(k.clone());
        } else {
            out.push(format!("{k}={v}"));
        }
    }
    out
}

fn number(params: &[(String, String)], key: &str) -> Result<Option<usize>, ApiError> {
    match params.iter().rev().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => v
            .parse::<usize>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{key}={v}: a whole number is expected"))),
    }
}

/// `GET /api/v1/images`: `vmrepo find --json`, a page at a time.
async fn images(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    UrlQuery(params): UrlQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = Query::parse(&expressions(&params))?;
    let limit = number(&params, "limit")?.unwrap_or(state.limits.default_page);
    if limit == 0 || limit > state.limits.max_page {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: between 1 and {} records a page",
            state.limits.max_page
        )));
    }
    let offset = number(&params, "offset")?.unwrap_or(0);
    let key = format!("images?{}", raw.unwrap_or_default());
    cached(&state, &headers, key, move |catalog| {
        let mut page = Vec::with_capacity(16 * 1024);
        page.push(b'[');
        let total = catalog.find_page::<ApiError>(&query, offset as u64, limit as u64, |rec| {
            if page.len() > 1 {
                page.push(b',');
            }
            serde_json::to_writer(&mut page, rec)
                .map_err(|e| ApiError::internal(format!("cannot write JSON: {e}")))
        })?;
        page.push(b']');
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        let mut extra = vec![("x-total-count", total.to_string())];
        if offset.saturating_add(limit) < total {
            let mut next: Vec<(String, String)> =
                params.iter().filter(|(k, _)| k != "offset" && k != "limit").cloned().collect();
            next.push(("limit".into(), limit.to_string()));
            next.push(("offset".into(), (offset + limit).to_string()));
            let qs = next
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            extra.push(("link", format!("</api/v1/images?{qs}>; rel=\"next\"")));
        }
        Ok((page, extra))
    })
    .await
}

/// An answer computed by `compute` on an up-to-date catalog, or the one
/// kept for `key` while nothing it depends on has changed ([`crate::answers`]).
async fn cached(
    state: &Arc<AppState>,
    req: &HeaderMap,
    key: String,
    compute: impl FnOnce(&mut vmrepo_repo::Catalog) -> Result<(Vec<u8>, Vec<(&'static str, String)>), ApiError>
    + Send
    + 'static,
) -> Result<Response, ApiError> {
    // Witnesses first: a change after them makes what is kept look older.
    let stamp = state.answers.stamp(&state.repo);
    if let Some(s) = &stamp
        && let Some(v) = state.answers.version(&state.repo, &state.stopping, false)
        && let Some(a) = state.answers.get(&key, s, v)
    {
        state.metrics.answers_reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(answer_response(req, a.body.clone(), &a.etag, &a.headers));
    }
    let st = state.clone();
    let (body, extra, version) = state
        .with_catalog(move |catalog| {
            // After this request's refresh, before its query.
            let version = st.answers.version(&st.repo, &st.stopping, true);
            let (body, extra) = compute(catalog)?;
            Ok((body, extra, version))
        })
        .await?;
    let body = Bytes::from(body);
    let etag = etag_of(&body);
    let r = answer_response(req, body.clone(), &etag, &extra);
    if let (Some(stamp), Some(version)) = (stamp, version) {
        state.answers.put(key, Answer { stamp, version, body, etag, headers: extra });
    }
    Ok(r)
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex(&Sha256::digest(body)[..16]))
}

fn answer_response(req: &HeaderMap, body: Bytes, etag: &str, extra: &[(&'static str, String)]) -> Response {
    let mut r = bytes_response_with(req, StatusCode::OK, body, etag);
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /api/v1/images/{vm}/{name}`: `vmrepo show --json VM/NAME`. An image
/// whose file is missing is answered `404` with the document all the same,
/// as `show` exits 4 after printing it.
async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((vm, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if vm.contains('/') || name.contains('/') || vm.starts_with('.') || name.starts_with('.') {
        return Err(ApiError::bad_request("a VM and an image name are expected"));
    }
    let vm = vmrepo_name::Vm::from_user(&vm)?;
    let spec = format!("{}/{name}", vm.as_str());
    let shown = state.with_catalog(move |catalog| Ok(vmrepo_repo::show::show(catalog, &spec)?)).await?;
    let status = if shown.missing() { StatusCode::NOT_FOUND } else { StatusCode::OK };
    Ok(json_response(&headers, status, &shown))
}

/// `GET /api/v1/inventory`: `vmrepo inventory --json`.
async fn inventory(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    cached(&state, &headers, "inventory".into(), |catalog| {
        let inv = catalog.inventory()?;
        let body =
            serde_json::to_vec(&inv).map_err(|e| ApiError::internal(format!("cannot write JSON: {e}")))?;
        Ok((body, Vec::new()))
    })
    .await
}

/// `GET /api/v1/lint`: `vmrepo lint --json` (`200` whatever it finds: the
/// findings are the answer).
async fn lint(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let findings = state.with_catalog(|catalog| Ok(vmrepo_repo::lint(catalog.repo())?)).await?;
    Ok(json_response(&headers, StatusCode::OK, &findings))
}

/// A JSON answer with its `ETag`, or `304` when the client has it already.
pub fn json_response<T: Serialize + ?Sized>(req: &HeaderMap, status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(req, status, body),
        Err(e) => ApiError::internal(format!("cannot write JSON: {e}")).into_response(),
    }
}

fn bytes_response(req: &HeaderMap, status: StatusCode, body: Vec<u8>) -> Response {
    let etag = etag_of(&body);
    bytes_response_with(req, status, Bytes::from(body), &etag)
}

fn bytes_response_with(req: &HeaderMap, status: StatusCode, body: Bytes, etag: &str) -> Response {
    let mut r = if status == StatusCode::OK && if_none_match(req, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (status, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Clients may keep it, but must ask again before using it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 says for it).
pub fn if_none_match(req: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    req.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t == "*" || strip(t) == strip(etag)
        })
    })
}
