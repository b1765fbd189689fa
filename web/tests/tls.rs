//! HTTPS: the API and UI served over TLS with a certificate from PEM files, HSTS on every
//! response, `Secure` session cookies, and no answer to plain HTTP on the TLS port.

mod common;

use common::{Server, PASSWORD};
use serde_json::json;
use std::sync::Arc;

/// The protocol the server picks when a client offers `h2` and `http/1.1` (trusting any
/// certificate: only the negotiation is looked at).
async fn tls_alpn(base: &str) -> Option<Vec<u8>> {
    use tokio_rustls::rustls;
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_serves_the_api_with_hsts_and_secure_cookies() {
    let server = Server::start_tls().await;
    assert!(server.base.starts_with("https://"));
    let response = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let hsts = response.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(hsts.starts_with("max-age=31536000"), "{hsts}");

    let response = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "viewer", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(
        cookies.iter().all(|cookie| cookie.contains("; Secure")),
        "{cookies:?}"
    );
    // The session works over HTTPS.
    let session = cookies[0].split(';').next().unwrap().to_string();
    let me = server
        .client
        .get(server.url("/api/v1/me"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // A client that offers HTTP/2 first (as browsers and curl do) is answered in HTTP/1.1,
    // which the server speaks.
    let alpn = tls_alpn(&server.base).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let port = server.base.rsplit(':').next().unwrap();
    let answer = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreadable_or_wrong_pem_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let error = weft_web::tls::server_config(&missing, &missing).unwrap_err();
    assert!(error.to_string().contains("cannot read"), "{error}");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    // The certificate given as its own key.
    let error = weft_web::tls::server_config(&cert, &cert).unwrap_err();
    assert!(error.to_string().contains("no PEM private key"), "{error}");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let error = weft_web::tls::server_config(&key, &key).unwrap_err();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
    assert!(weft_web::tls::server_config(&cert, &key).is_ok());
}
