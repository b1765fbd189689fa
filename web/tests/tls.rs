//! HTTPS: the API and UI served over TLS with a certificate from PEM files, HSTS on every
//! response, `Secure` session cookies, and no answer to plain HTTP on the TLS port.

mod common;

use common::{Server, PASSWORD};
use serde_json::json;

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
