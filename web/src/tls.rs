//! HTTPS for the UI and API: a rustls server configuration from PEM files, and a listener that
//! completes TLS handshakes concurrently (each with a time limit) and hands axum the streams
//! that completed.

use axum::serve::{Listener, ListenerExt};
use axum::Router;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Time a client has to complete the TLS handshake; a slow or silent one is dropped.
pub const HANDSHAKE_MS_MAX: u64 = 10_000;
/// Handshakes in progress at once; connections past it wait in the kernel's backlog.
pub const HANDSHAKES_MAX: usize = 1_024;
/// Completed connections waiting for the HTTP server to take them.
const ACCEPTED_QUEUE_MAX: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`): {reason}")]
    NoCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from a PEM certificate chain (leaf first) and its private key.
/// The crypto provider is named here rather than taken from the process default, so that it
/// does not matter which providers other crates link.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::NoCertificate {
            path: cert.to_path_buf(),
            reason: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
            reason: "the file has no certificate block".to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::NoKey {
        path: key.to_path_buf(),
        reason: error.to_string(),
    })?;
    // ring rather than aws-lc-rs: ring is in the tree already (JWT signing, the HTTP client)
    // and builds without cmake. rustls deprecates its ring provider because ring has no
    // post-quantum key exchange; the classical groups (X25519, P-256, P-384) remain.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/1.1 only: the server is built without axum's HTTP/2 support, and a client that
    // negotiated h2 would speak it to an HTTP/1.1 server.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections have completed a TLS handshake.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TCP connections on `listener` and runs their handshakes in the background, so
    /// that one slow client holds up no other.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let mut listener = listener;
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = Listener::accept(&mut listener).await;
                if sender.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let limit = Duration::from_millis(HANDSHAKE_MS_MAX);
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            drop(permit);
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (its runtime is shutting down): wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes; handlers see the
/// client's address as with [`crate::serve`].
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // `tap_io` is what gives a custom listener's connections the `SocketAddr` connect info
    // (axum implements it for tapped listeners only); the tap itself turns Nagle off, as for
    // plain connections answers are small and latency matters.
    let listener = TlsListener::new(listener, config)?.tap_io(|tls: &mut TlsStream<TcpStream>| {
        let _ = tls.get_ref().0.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
