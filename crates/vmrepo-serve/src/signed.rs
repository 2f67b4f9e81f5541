//! `GET`/`HEAD /catalog.json` and `/catalog.json.minisig` with
//! `--sign-key`: the signed catalog `vmrepo publish` writes, of every image
//! whose SHA-256 and MD5 are recorded, each one's `path` the URL path this
//! server downloads it from (`vm/<VM>/<file>`), so that `vmrepo pull
//! http://host:port/` reads this server as it reads a published folder.
//!
//! The entries are made by [`vmrepo_dist::entries`] and signed by
//! [`vmrepo_dist::served`], which keeps the serial growing across restarts
//! in the repository's `.vmrepo/serve-catalog.json`. Building the catalog
//! reads every record and description, so it is kept and answered again
//! while the witnesses of [`crate::answers`] hold (the tree's stamp and the
//! index's data version), the serial's state file is the one it was left
//! as (another server on the repository chose a serial), and less than half
//! of its validity has passed. A build that started after a request arrived
//! answers it too, so that requests arriving during a build share it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use vmrepo_dist::export::Signers;
use vmrepo_dist::schema::{CATALOG_FILE, SIGNATURE_FILE};
use vmrepo_dist::{entries, served};
use vmrepo_repo::Query;
use vmrepo_repo::checksum::hex;

use crate::answers::Stamp;
use crate::api::if_none_match;
use crate::error::ApiError;
use crate::state::AppState;

/// What the server signs with, and the catalog it last signed.
pub struct Signing {
    signers: Signers,
    /// The public key's id, as minisign prints it (for the web page).
    pub key_id: String,
    /// How long each catalog is valid (`--catalog-expires`).
    validity: SignedDuration,
    /// `--public-url`, written as the catalog's `base_url`.
    base_url: Option<String>,
    built: Mutex<Option<Arc<Built>>>,
    /// The last build that failed: when it started, and its error. Requests
    /// that were waiting for it get the same answer rather than each
    /// building again (a 20,000-image build takes seconds).
    failed: Mutex<Option<(Instant, ApiError)>>,
    /// One build at a time; the others wait for it.
    building: tokio::sync::Mutex<()>,
}

/// A signed catalog and what it was built from.
struct Built {
    started: Instant,
    stamp: Option<Stamp>,
    version: Option<i64>,
    mark: Option<(u64, i64, u64)>,
    renew_at: Timestamp,
    catalog: Bytes,
    catalog_etag: String,
    signature: Bytes,
    signature_etag: String,
}

impl Signing {
    /// Signing with `signers`, each catalog valid for `validity`, naming
    /// `base_url` (the server's public URL) when known.
    pub fn new(signers: Signers, validity: SignedDuration, base_url: Option<String>) -> Signing {
        Signing {
            key_id: vmrepo_dist::key::key_id(&signers.minisign_public),
            signers,
            validity,
            base_url,
            built: Mutex::new(None),
            failed: Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys it signs with (the SSH key list is signed with them too).
    pub fn signers(&self) -> &Signers {
        &self.signers
    }

    /// The catalog last built, if it still holds for a request that `arrived`.
    fn kept(&self, state: &AppState, arrived: Instant) -> Option<Arc<Built>> {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner).clone()?;
        if built.started >= arrived {
            return Some(built);
        }
        let holds = built.stamp.is_some()
            && built.version.is_some()
            && Timestamp::now() < built.renew_at
            && built.mark == served::state_mark(&state.repo.meta_dir())
            && state.answers.stamp(&state.repo) == built.stamp
            && state.answers.version(&state.repo, &state.stopping, false) == built.version;
        holds.then_some(built)
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(&format!("/{CATALOG_FILE}"), get(catalog))
        .route(&format!("/{SIGNATURE_FILE}"), get(signature))
}

/// `GET /catalog.json`.
async fn catalog(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let b = current(&state).await?;
    Ok(respond(&headers, b.catalog.clone(), &b.catalog_etag, "application/json"))
}

/// `GET /catalog.json.minisig`.
async fn signature(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let b = current(&state).await?;
    Ok(respond(&headers, b.signature.clone(), &b.signature_etag, "text/plain; charset=utf-8"))
}

/// The signed catalog as it is now: the one kept, or a new one.
async fn current(state: &Arc<AppState>) -> Result<Arc<Built>, ApiError> {
    let Some(signing) = &state.signing else {
        return Err(ApiError::not_found(
            "no signed catalog here: start vmrepo serve with --sign-key FILE (a minisign secret key, vmrepo key generate) to serve one for vmrepo pull",
        ));
    };
    let arrived = Instant::now();
    if let Some(b) = signing.kept(state, arrived) {
        return Ok(b);
    }
    let _turn = signing.building.lock().await;
    if let Some(b) = signing.kept(state, arrived) {
        return Ok(b);
    }
    if let Some((at, e)) = &*signing.failed.lock().unwrap_or_else(PoisonError::into_inner)
        && *at >= arrived
    {
        return Err(e.clone());
    }
    let started = Instant::now();
    // Witnesses first: a change after them makes the catalog look older than it is.
    let stamp = state.answers.stamp(&state.repo);
    let st = state.clone();
    let built = state
        .with_catalog(move |catalog| {
            // After this request's refresh, before the records are read.
            let version = st.answers.version(&st.repo, &st.stopping, true);
            let listed = entries::entries(catalog, &Query::all(), &st.stopping)?;
            let Some(signing) = &st.signing else {
                return Err(ApiError::internal("signing was turned off"));
            };
            let (images, left_out) = (listed.images.len(), listed.left_out.len());
            let signed = served::sign(
                &st.repo.meta_dir(),
                &signing.signers,
                signing.base_url.clone(),
                listed.images,
                signing.validity,
                Timestamp::now(),
            )?;
            tracing::info!(
                "signed catalog serial {} ({images} images, {left_out} without recorded digests left out), expires {}",
                signed.serial,
                signed.expires
            );
            let catalog = Bytes::from(signed.catalog);
            let signature = Bytes::from(signed.signature);
            Ok(Built {
                started,
                stamp,
                version,
                mark: signed.mark,
                renew_at: signed.renew_at,
                catalog_etag: etag_of(&catalog),
                catalog,
                signature_etag: etag_of(&signature),
                signature,
            })
        })
        .await;
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot sign the catalog: {}", e.message);
            *signing.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some((started, e.clone()));
            return Err(e);
        }
    };
    state.metrics.catalogs_signed.fetch_add(1, Ordering::Relaxed);
    let built = Arc::new(built);
    *signing.built.lock().unwrap_or_else(PoisonError::into_inner) = Some(built.clone());
    Ok(built)
}

pub(crate) fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex(&Sha256::digest(body)[..16]))
}

/// The body with its strong `ETag`, or `304` when the client has it;
/// clients may keep it but must ask again before using it.
pub(crate) fn respond(req: &HeaderMap, body: Bytes, etag: &str, content_type: &'static str) -> Response {
    let mut r = if if_none_match(req, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
