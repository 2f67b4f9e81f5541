//! `/healthz`, `/metrics` (Prometheus text format) and the middleware that
//! counts, times and logs every request. The access log goes through
//! `tracing` (target `vmrepo_serve::access`): method, path, status, bytes,
//! duration and peer; never a header, so never a token.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 30.0];

/// The server's counters, all since it started.
#[derive(Default)]
pub struct Metrics {
    /// Answers by status class: 1xx..5xx at [0..5].
    pub responses: [AtomicU64; 5],
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub downloads_in_flight: AtomicU64,
    pub uploads_in_flight: AtomicU64,
    /// API answers given again from [`crate::answers`] without the index.
    pub answers_reused: AtomicU64,
    /// Signed catalogs built (`--sign-key`): once per change of the repository.
    pub catalogs_signed: AtomicU64,
    /// Durations: counts per bucket (the last is +Inf), sum in microseconds.
    pub duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    pub duration_sum_us: AtomicU64,
}

/// The peer's address, put in the request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Counts and logs each request; refuses an over-long request target.
pub async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = req.extensions().get::<Peer>().map(|p| p.0.to_string()).unwrap_or_else(|| "-".into());
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let resp = if target_len > state.limits.max_uri {
        ApiError::new(StatusCode::URI_TOO_LONG, "invalid-input", 6, "the request target is too long")
            .into_response()
    } else {
        next.run(req).await
    };
    let m = &state.metrics;
    let class = usize::from(resp.status().as_u16() / 100).clamp(1, 5) - 1;
    m.responses[class].fetch_add(1, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let bucket = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
    m.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    m.duration_sum_us.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    let shown: String = path.chars().take(256).filter(|c| !c.is_control()).collect();
    tracing::info!(
        target: "vmrepo_serve::access",
        peer = %peer,
        method = %method,
        path = %shown,
        status = resp.status().as_u16(),
        length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| http_body::Body::size_hint(resp.body()).exact()),
        ms = format!("{:.3}", secs * 1e3),
    );
    resp
}

/// `GET /healthz`: `ok` while the repository can be read.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let vm = state.repo.vm_root();
    match tokio::task::spawn_blocking(move || std::fs::metadata(vm)).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the repository cannot be read\n").into_response(),
    }
}

/// `GET /metrics`: the counters in the Prometheus text format (version 0.0.4).
pub async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut s = String::new();
    let _ = writeln!(s, "# HELP vmrepo_http_responses_total HTTP answers by status class.");
    let _ = writeln!(s, "# TYPE vmrepo_http_responses_total counter");
    for (i, c) in m.responses.iter().enumerate() {
        let _ = writeln!(s, "vmrepo_http_responses_total{{class=\"{}xx\"}} {}", i + 1, g(c));
    }
    let errors = g(&m.responses[4]);
    let _ = writeln!(s, "# HELP vmrepo_http_errors_total Answers with a 5xx status.");
    let _ = writeln!(s, "# TYPE vmrepo_http_errors_total counter");
    let _ = writeln!(s, "vmrepo_http_errors_total {errors}");
    for (name, help, kind, v) in [
        ("vmrepo_bytes_sent_total", "Bytes of files sent.", "counter", g(&m.bytes_sent)),
        ("vmrepo_bytes_received_total", "Bytes of uploads received.", "counter", g(&m.bytes_received)),
        ("vmrepo_downloads_in_flight", "Downloads being sent.", "gauge", g(&m.downloads_in_flight)),
        ("vmrepo_uploads_in_flight", "Uploads being received.", "gauge", g(&m.uploads_in_flight)),
        (
            "vmrepo_api_answers_reused_total",
            "API answers given again while the catalog was unchanged.",
            "counter",
            g(&m.answers_reused),
        ),
        (
            "vmrepo_catalogs_signed_total",
            "Signed catalogs built (--sign-key): one per change of the repository or renewal.",
            "counter",
            g(&m.catalogs_signed),
        ),
    ] {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    let _ = writeln!(
        s,
        "# HELP vmrepo_http_request_duration_seconds Time to answer (headers; a body may stream on)."
    );
    let _ = writeln!(s, "# TYPE vmrepo_http_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, c) in m.duration_buckets.iter().enumerate() {
        cumulative += g(c);
        let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(s, "vmrepo_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(s, "vmrepo_http_request_duration_seconds_sum {}", g(&m.duration_sum_us) as f64 / 1e6);
    let _ = writeln!(s, "vmrepo_http_request_duration_seconds_count {cumulative}");
    let mut r = (StatusCode::OK, s).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
