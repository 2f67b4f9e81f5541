//! `GET`/`HEAD /keys/authorized_keys` and its signatures: the repository's
//! SSH public keys ([`vmrepo_site::keys`]) as `vmrepo publish` writes them
//! ([`vmrepo_dist::export::keys`]): `/keys/authorized_keys.minisig` signed
//! with `--sign-key`, `/keys/authorized_keys.sig` (RSA-SHA-256, what
//! `openssl dgst -sha256 -verify` checks) with `--keys-rsa-key`, whose
//! public key is `/keys/authorized_keys.pub.pem`.
//!
//! The keys are read at each request (a few small files), so that a key
//! added or removed is served at once; the signatures are kept while the
//! list has the same bytes, so that a list and a signature fetched one
//! after the other match. 404 when the repository has no key, when the
//! server has no key to sign with, or for the signature it has no key for.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use vmrepo_dist::export::keys::{FILE, MINISIG, PUB_PEM, SIG};
use vmrepo_dist::rsasig::RsaSigner;

use crate::error::ApiError;
use crate::signed::{etag_of, respond};
use crate::state::AppState;

/// The RSA key (`--keys-rsa-key`) and the list last signed.
#[derive(Default)]
pub struct SshKeys {
    rsa: Option<RsaSigner>,
    last: Mutex<Option<Arc<Signed>>>,
}

impl SshKeys {
    pub fn new(rsa: Option<RsaSigner>) -> SshKeys {
        SshKeys { rsa, last: Mutex::new(None) }
    }
}

/// A list and its signatures.
struct Signed {
    list: Bytes,
    minisig: Option<Bytes>,
    sig: Option<Bytes>,
    pub_pem: Option<Bytes>,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(&format!("/{FILE}"), get(list))
        .route(&format!("/{SIG}"), get(sig))
        .route(&format!("/{MINISIG}"), get(minisig))
        .route(&format!("/{PUB_PEM}"), get(pub_pem))
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = current(&state).await?;
    answer(&headers, Some(s.list.clone()), "text/plain; charset=utf-8", "")
}

async fn sig(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = current(&state).await?;
    answer(&headers, s.sig.clone(), "application/octet-stream", "--keys-rsa-key")
}

async fn minisig(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = current(&state).await?;
    answer(&headers, s.minisig.clone(), "text/plain; charset=utf-8", "--sign-key")
}

async fn pub_pem(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = current(&state).await?;
    answer(&headers, s.pub_pem.clone(), "application/x-pem-file", "--keys-rsa-key")
}

fn answer(
    headers: &HeaderMap,
    body: Option<Bytes>,
    content_type: &'static str,
    needs: &str,
) -> Result<Response, ApiError> {
    let Some(body) = body else {
        return Err(ApiError::not_found(format!(
            "this server signs the SSH key list without it: start it with {needs}"
        )));
    };
    Ok(respond(headers, body.clone(), &etag_of(&body), content_type))
}

/// The list as the repository has it now, signed.
async fn current(state: &Arc<AppState>) -> Result<Arc<Signed>, ApiError> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || build(&st))
        .await
        .map_err(|e| ApiError::internal(format!("the key list could not be made: {e}")))?
}

fn build(state: &AppState) -> Result<Arc<Signed>, ApiError> {
    let minisign = state.signing.as_ref().map(crate::signed::Signing::signers);
    let rsa = state.ssh_keys.rsa.as_ref();
    if minisign.is_none() && rsa.is_none() {
        return Err(ApiError::not_found(
            "no signed SSH key list here: start vmrepo serve with --sign-key FILE and/or --keys-rsa-key FILE",
        ));
    }
    let entries = vmrepo_site::keys::list(state.repo.root()).map_err(|e| {
        tracing::warn!("cannot read the SSH keys: {e}");
        ApiError::from(e)
    })?;
    if entries.is_empty() {
        return Err(ApiError::not_found("this repository has no SSH key (vmrepo keys add)"));
    }
    let list = vmrepo_site::keys::authorized_keys(&entries).into_bytes();
    let mut last = state.ssh_keys.last.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = &*last
        && s.list == list
    {
        return Ok(s.clone());
    }
    let generated = jiff::Timestamp::now().to_string();
    let minisig = match minisign {
        Some(s) => {
            let comment = format!("vmrepo {FILE} {} keys generated {generated}", entries.len());
            Some(Bytes::from(vmrepo_dist::key::sign(
                &s.minisign_secret,
                &s.minisign_public,
                &list,
                &comment,
            )?))
        }
        None => None,
    };
    let (sig, pub_pem) = match rsa {
        Some(r) => (Some(Bytes::from(r.sign(&list))), Some(Bytes::from(r.public_pem()?))),
        None => (None, None),
    };
    tracing::info!("signed the SSH key list ({} keys)", entries.len());
    let signed = Arc::new(Signed { list: Bytes::from(list), minisig, sig, pub_pem });
    *last = Some(signed.clone());
    Ok(signed)
}
