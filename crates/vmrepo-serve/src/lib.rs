//! `vmrepo serve`: the repository as an HTTP service.
//!
//! This crate owns the axum application ([`app`]) and the server that runs it
//! ([`server::run`]): the JSON API under `/api/v1/` (the same documents as the
//! CLI's `--json`, docs/json.md), downloads of images and sidecars under
//! `/vm/` (byte ranges, `If-Range`, digests), a web page for people at `/`
//! ([`web`]), `/healthz` and `/metrics`; and, with a token ([`auth`]),
//! uploads and deletions ([`upload`]), each recorded in the audit log ([`audit`]);
//! with a signing key, the signed catalog `vmrepo pull` reads ([`signed`])
//! and the signed SSH key list `/keys/authorized_keys` ([`ssh_keys`]).
//! Every answer comes from the same [`vmrepo_repo::Catalog`] the CLI uses,
//! brought up to date on each request, so that what another process adds is
//! seen at once. Nothing outside `vm/`, and nothing the catalog does not know
//! as an image or a sidecar, is ever served. docs/serve.md documents the API.

pub mod answers;
pub mod api;
pub mod audit;
pub mod auth;
pub mod download;
pub mod error;
pub mod metrics;
pub mod paths;
pub mod server;
pub mod signed;
pub mod ssh_keys;
pub mod state;
pub mod upload;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use error::ApiError;
pub use server::{ServeOptions, run};
pub use state::{AppState, Limits};

/// The application: every route over `state`, with the access log and the
/// metrics around them. Tests call it without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::prometheus))
        .merge(api::routes())
        .merge(download::routes())
        .merge(signed::routes())
        .merge(ssh_keys::routes())
        .merge(web::routes())
        .merge(upload::routes())
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::observe))
        .with_state(state)
}
