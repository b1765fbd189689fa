//! The QUIC link over real UDP sockets on 127.0.0.1: mutual TLS with certificates from
//! `certs`, identities from the certificates, the hello's version check, and bad frames
//! closing one connection while the others go on.

mod common;

use common::Deployment;
use quinn::crypto::rustls::QuicClientConfig;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use weft_cells::certs::Identity;
use weft_cells::link::{
    self, Connector, Credentials, Link, LinkError, LinkSettings, Listener, CLOSE_BAD_FRAME,
    CLOSE_VERSION_MISMATCH, FRAME_BYTES_MAX, FRAME_FORMAT,
};

const WAIT: Duration = Duration::from_secs(15);

/// Counts the counters incremented on this thread (a `#[tokio::test]` runs its tasks on it).
#[derive(Default, Clone)]
struct Counters(Arc<Mutex<HashMap<String, u64>>>);

struct CounterHandle {
    key: String,
    counters: Counters,
}

impl metrics::CounterFn for CounterHandle {
    fn increment(&self, value: u64) {
        *self
            .counters
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.counters
            .0
            .lock()
            .unwrap()
            .insert(self.key.clone(), value);
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        metrics::Counter::from_arc(Arc::new(CounterHandle {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            counters: self.clone(),
        }))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// A node listening on 127.0.0.1: every handshake's outcome goes to `handshakes`, every link
/// echoes the frames of each channel, and a channel's error goes to `errors`.
struct Server {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Result<Identity, LinkError>>,
    errors: mpsc::UnboundedReceiver<LinkError>,
    _listener: Arc<Listener>,
}

fn serve(credentials: &Credentials) -> Server {
    let listener = Arc::new(
        Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            credentials,
            LinkSettings::default(),
        )
        .unwrap(),
    );
    let addr = listener.local_addr().unwrap();
    let (handshake_tx, handshakes) = mpsc::unbounded_channel();
    let (error_tx, errors) = mpsc::unbounded_channel();
    let accepting = listener.clone();
    tokio::spawn(async move {
        while let Some(attempt) = accepting.accept().await {
            let handshake_tx = handshake_tx.clone();
            let error_tx = error_tx.clone();
            tokio::spawn(async move {
                match attempt.handshake().await {
                    Ok(link) => {
                        let _ = handshake_tx.send(Ok(link.peer().clone()));
                        echo(link, error_tx).await;
                    }
                    Err(error) => {
                        let _ = handshake_tx.send(Err(error));
                    }
                }
            });
        }
    });
    Server {
        addr,
        handshakes,
        errors,
        _listener: listener,
    }
}

async fn echo(link: Link, errors: mpsc::UnboundedSender<LinkError>) {
    while let Ok(mut channel) = link.accept().await {
        let errors = errors.clone();
        tokio::spawn(async move {
            loop {
                match channel.recv().await {
                    Ok(Some(payload)) => {
                        if channel.send(&payload).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return channel.finish(),
                    Err(error) => {
                        let _ = errors.send(error);
                        return;
                    }
                }
            }
        });
    }
}

fn connector(credentials: &Credentials, settings: LinkSettings) -> Connector {
    Connector::bind("127.0.0.1:0".parse().unwrap(), credentials, settings).unwrap()
}

/// A frame sent and echoed back on a new channel of `link`.
async fn round_trip(link: &Link, payload: &[u8]) -> Vec<u8> {
    let mut channel = within(link.open()).await.unwrap();
    within(channel.send(payload)).await.unwrap();
    within(channel.recv()).await.unwrap().unwrap()
}

async fn server_handshake(server: &mut Server) -> Result<Identity, LinkError> {
    within(server.handshakes.recv()).await.unwrap()
}

#[tokio::test]
async fn a_worker_and_a_node_learn_each_other_from_their_certificates() {
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    let client = connector(&deployment.worker(), LinkSettings::default());
    for name in ["localhost", "127.0.0.1"] {
        let link = within(client.connect(server.addr, name)).await.unwrap();
        assert_eq!(link.peer(), &Identity::node("n1").unwrap());
        assert_eq!(
            server_handshake(&mut server).await.unwrap(),
            Identity::worker("w1").unwrap()
        );
        assert_eq!(round_trip(&link, b"ping").await, b"ping");
        // The connection's negotiated ALPN is weft/1.
        let alpn = link
            .connection()
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        assert_eq!(alpn.as_deref(), Some(link::ALPN));
    }
    // A name the node's certificate does not carry is refused by the client.
    let error = within(client.connect(server.addr, "elsewhere.example"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("TLS refused by this side"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let deployment = Deployment::new();
    let foreign = Deployment::new();
    let mut server = serve(&deployment.node());
    // It trusts this deployment's CA, so it is the node that refuses it.
    let credentials = Credentials::from_pem(
        &deployment.read("ca.pem"),
        &foreign.read("worker-w1.pem"),
        &foreign.read("worker-w1.key"),
    )
    .unwrap();
    let client = connector(&credentials, LinkSettings::default());
    let error = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("TLS refused by the peer"),
        "{error}"
    );
    let error = server_handshake(&mut server).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("TLS refused by this side: invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    assert!(message.contains("another deployment's CA"), "{message}");

    // And the other way: a client that trusts only its own CA refuses this node.
    let client = connector(&foreign.worker(), LinkSettings::default());
    let error = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

/// A QUIC client configuration with this deployment's trust but TLS settings of its own.
fn raw_config(deployment: &Deployment, alpn: &[u8], with_certificate: bool) -> quinn::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&deployment.read("ca.pem")).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = if with_certificate {
        builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(&deployment.read("worker-w1.pem")).unwrap()],
                PrivateKeyDer::from_pem_slice(&deployment.read("worker-w1.key")).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

/// A connector with [`raw_config`], announcing itself as worker `w1`.
fn raw_client(deployment: &Deployment, alpn: &[u8], with_certificate: bool) -> Connector {
    Connector::with_config(
        "127.0.0.1:0".parse().unwrap(),
        raw_config(deployment, alpn, with_certificate),
        Identity::worker("w1").unwrap(),
        LinkSettings::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    let client = raw_client(&deployment, link::ALPN, false);
    let error = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the client presented no certificate"),
        "{error}"
    );
    let error = server_handshake(&mut server).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("TLS refused by this side: peer sent no certificates"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_with_another_alpn_is_refused() {
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    let client = raw_client(&deployment, b"weft/2", true);
    let error = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no common application protocol"),
        "{error}"
    );
    let error = server_handshake(&mut server).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("peer doesn't support any known protocol"),
        "{error}"
    );

    // The same client with weft/1 gets in: only the ALPN differed.
    let client = raw_client(&deployment, link::ALPN, true);
    let link = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap();
    assert_eq!(round_trip(&link, b"in").await, b"in");
}

#[tokio::test]
async fn a_protocol_version_mismatch_is_refused_on_both_sides_naming_both_versions() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    let settings = LinkSettings {
        protocol_version: link::PROTOCOL_VERSION + 1,
        ..LinkSettings::default()
    };
    let client = connector(&deployment.worker(), settings);
    let error = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            LinkError::VersionMismatch {
                ours: 2,
                theirs: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("protocol version mismatch: this side speaks 2, the peer speaks 1"),
        "{error}"
    );
    let error = server_handshake(&mut server).await.unwrap_err();
    assert!(
        matches!(
            error,
            LinkError::VersionMismatch {
                ours: 1,
                theirs: 2,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("protocol version mismatch: this side speaks 1, the peer speaks 2"),
        "{error}"
    );
    // Counted on both sides (client and node share this thread's recorder here).
    assert_eq!(
        counters.get("weft_link_handshakes_refused_total{reason=version}"),
        2
    );
}

#[tokio::test]
async fn the_peer_sees_the_version_mismatch_close_code() {
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    // A client that sends a hello of another version and reads what comes back, without
    // closing: the node closes with the mismatch code and both versions in the reason.
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = raw_config(&deployment, link::ALPN, true);
    let connection = within(
        endpoint
            .connect_with(config, server.addr, "localhost")
            .unwrap(),
    )
    .await
    .unwrap();
    let (mut send, mut recv) = within(connection.open_bi()).await.unwrap();
    // Version 7, role worker.
    within(link::write_frame(&mut send, &[0, 7, 0]))
        .await
        .unwrap();
    let hello = within(link::read_frame(&mut recv)).await.unwrap().unwrap();
    assert_eq!(&hello[..2], &link::PROTOCOL_VERSION.to_be_bytes());
    match within(connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(CLOSE_VERSION_MISMATCH)
            );
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(
                reason.contains("this side speaks 1, the peer speaks 7"),
                "{reason}"
            );
        }
        other => panic!("closed otherwise: {other}"),
    }
    let error = server_handshake(&mut server).await.unwrap_err();
    assert!(
        matches!(
            error,
            LinkError::VersionMismatch {
                ours: 1,
                theirs: 7,
                ..
            }
        ),
        "{error}"
    );
}

/// Sends `bytes` raw on a new stream of `link` and waits for the node to close the
/// connection; returns the close reason.
async fn send_raw_and_expect_close(link: &Link, bytes: &[u8]) -> String {
    let (mut send, _recv) = within(link.connection().open_bi()).await.unwrap();
    within(send.write_all(bytes)).await.unwrap();
    let _ = send.finish();
    match within(link.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(CLOSE_BAD_FRAME));
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        other => panic!("closed otherwise: {other}"),
    }
}

#[tokio::test]
async fn a_bad_frame_closes_its_connection_only() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    let client = connector(&deployment.worker(), LinkSettings::default());
    let steady = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap();
    server_handshake(&mut server).await.unwrap();
    let mut steady_channel = within(steady.open()).await.unwrap();
    within(steady_channel.send(b"before")).await.unwrap();
    assert_eq!(
        within(steady_channel.recv()).await.unwrap().unwrap(),
        b"before"
    );

    let oversized = (FRAME_BYTES_MAX + 1).to_be_bytes().to_vec();
    let bad_format = vec![0, 0, 0, 3, FRAME_FORMAT + 1, 1, 2];
    // A length of 10, then the stream ends after 4 bytes of it.
    let truncated = vec![0, 0, 0, 10, FRAME_FORMAT, 1, 2, 3];
    let empty = vec![0, 0, 0, 0];
    for (bytes, expected, counted) in [
        (oversized, "over the limit of 1048576 bytes", "oversized"),
        (bad_format, "frame format byte is 2, expected 1", "format"),
        (truncated, "the stream ended inside a frame", "truncated"),
        (empty, "frame is empty", "empty"),
    ] {
        let link = within(client.connect(server.addr, "localhost"))
            .await
            .unwrap();
        server_handshake(&mut server).await.unwrap();
        assert_eq!(round_trip(&link, b"fine").await, b"fine");
        let reason = send_raw_and_expect_close(&link, &bytes).await;
        assert!(reason.contains(expected), "{reason}");
        let error = within(server.errors.recv()).await.unwrap();
        assert!(
            matches!(error, LinkError::BadFrame { ref peer, .. } if peer == &Identity::worker("w1").unwrap()),
            "{error}"
        );
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(
            counters.get(&format!(
                "weft_link_frames_refused_total{{reason={counted}}}"
            )),
            1
        );

        // The other connection, and its open channel, go on.
        within(steady_channel.send(b"still")).await.unwrap();
        assert_eq!(
            within(steady_channel.recv()).await.unwrap().unwrap(),
            b"still"
        );
        assert_eq!(round_trip(&steady, b"new channel").await, b"new channel");
    }
    assert!(steady.connection().close_reason().is_none());
}

#[tokio::test]
async fn a_hello_whose_role_disagrees_with_the_certificate_is_refused() {
    let deployment = Deployment::new();
    let mut server = serve(&deployment.node());
    // The worker's certificate, announcing itself as a node.
    let client = Connector::with_config(
        "127.0.0.1:0".parse().unwrap(),
        raw_config(&deployment, link::ALPN, true),
        Identity::node("n9").unwrap(),
        LinkSettings::default(),
    )
    .unwrap();
    let error = within(client.connect(server.addr, "localhost"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(
            "the peer closed the link (code 2): the hello says node but the certificate names \
             weft://worker/w1"
        ),
        "{error}"
    );
    let error = server_handshake(&mut server).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the hello says node but the certificate names weft://worker/w1"),
        "{error}"
    );
}
