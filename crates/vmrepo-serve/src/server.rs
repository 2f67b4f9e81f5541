//! The server around [`crate::app`]: accepts connections (TLS with rustls
//! when a certificate is given, HTTP/1.1 and HTTP/2 on the same port),
//! bounds header time, header size and connections, and shuts down
//! gracefully: no new connection, in-flight answers get
//! [`crate::Limits::grace`] to finish.
//!
//! Slow clients: a connection must say which protocol it speaks within
//! [`crate::Limits::header_timeout`] (its first bytes in clear, the TLS
//! handshake and ALPN otherwise), then an HTTP/1.1 request head must arrive
//! whole within the same time (hyper's header read time-out, which also
//! closes a keep-alive connection left idle that long). hyper-util's
//! automatic choice of protocol is not used: it waits for the first bytes
//! with no time limit, so a client that connects and sends nothing would
//! hold a connection slot for ever.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::metrics::Peer;
use crate::state::AppState;

/// How to serve.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// PEM certificate chain and private key: HTTPS (HTTP/2 by ALPN) when given.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Tls(String),
    #[error("cannot accept connections: {0}")]
    Io(#[from] std::io::Error),
}

/// A rustls configuration from PEM files.
///
/// # Errors
/// A file cannot be read or holds no certificate or key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!("{}: no certificate in it", cert.display())));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("the certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `state` on `listener` until `shutdown` completes, then lets
/// in-flight answers finish within the grace period.
///
/// # Errors
/// The TLS files are unusable.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = match &options.tls {
        Some((c, k)) => Some(tokio_rustls::TlsAcceptor::from(tls_config(c, k)?)),
        None => None,
    };
    let app = crate::app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(state.limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(128).max_header_list_size(64 * 1024);
    let h1 = Arc::new(builder.clone().http1_only());
    let h2 = Arc::new(builder.http2_only());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little, go on.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = app.clone().map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            req
        });
        let svc = TowerToHyperService::new(svc);
        let (h1, h2) = (h1.clone(), h2.clone());
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = state.limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let http2 = match tokio::time::timeout(header_timeout, sniff(&stream)).await {
                        Ok(Ok(Some(http2))) => http2,
                        // Closed, failed or silent for too long.
                        Ok(Ok(None) | Err(_)) | Err(_) => return,
                    };
                    let builder = if http2 { h2 } else { h1 };
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS from {peer}: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let builder = if http2 { h2 } else { h1 };
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                }
            }
        });
    }
    drop(listener);
    state.begin_stop();
    tracing::info!("shutting down: waiting up to {:?} for answers in flight", state.limits.grace);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(state.limits.grace) => tracing::warn!("grace period over: closing the connections left"),
    }
    Ok(())
}

/// What a connection in clear must start with to speak HTTP/2 (RFC 9113 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits for the first bytes of a connection in clear, without taking them
/// from it: `Some(true)` for the HTTP/2 preface, `Some(false)` as soon as a
/// byte differs from it (HTTP/1.1), `None` when the client closes first.
/// The caller bounds the wait.
async fn sniff(stream: &tokio::net::TcpStream) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // A part of the preface: peek would return the same bytes at once,
        // so wait a little for the rest (clients send it in one packet).
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
