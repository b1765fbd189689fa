//! `weft standalone` and TLS: with `web.tls_cert` and `web.tls_key` it serves the UI and API
//! over HTTPS (HSTS, Secure cookies, a page policy that allows exactly the page's inline
//! script); without them it refuses plain HTTP on an address other than loopback.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `weft` command with its own data directory and an empty DAG folder.
fn weft(home: &Path, args: &[&str]) -> Command {
    let dags = home.join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command
        .args(args)
        .env("WEFT_HOME", home.join("home"))
        .env("WEFT_DAGS_FOLDER", dags)
        .env("WEFT_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn plain_http_beyond_loopback_is_refused_with_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let mut node = Node(
        weft(home.path(), &["standalone", "--bind", "0.0.0.0:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not refuse to start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(node.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("refusing to serve"), "{stderr}");
    assert!(
        stderr.contains("web.tls_cert") && stderr.contains("--insecure-http"),
        "{stderr}"
    );
    assert!(!stderr.contains("UI and API on"), "{stderr}");
}

/// The inline scripts of an HTML page: (attributes, content).
fn inline_scripts(html: &str) -> Vec<String> {
    let mut scripts = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        rest = &rest[start..];
        let open_end = rest.find('>').unwrap();
        let attributes = &rest[..open_end];
        let close = rest.find("</script>").unwrap();
        if !attributes.contains(" src=") {
            scripts.push(rest[open_end + 1..close].to_string());
        }
        rest = &rest[close..];
    }
    scripts
}

fn sha256_base64(text: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_https_with_hsts_secure_cookies_and_a_strict_page_policy() {
    let home = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: PathBuf = home.path().join("cert.pem");
    let key: PathBuf = home.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut node = Node(
        weft(home.path(), &["standalone", "--bind", "127.0.0.1:0"])
            .env("WEFT_WEB__TLS_CERT", &cert)
            .env("WEFT_WEB__TLS_KEY", &key)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = node.0.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if let Some(address) = line.split("UI and API on https://").nth(1) {
                let _ = found.send(address.trim().to_string());
            }
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .expect("standalone says it serves HTTPS");
    let port = address.rsplit(':').next().unwrap().to_string();
    let password = std::fs::read_to_string(home.path().join("home/standalone_admin_password.txt"))
        .unwrap()
        .trim()
        .to_string();
    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));

    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"username":"admin","password":"{password}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies.len(), 2);
    assert!(
        cookies.iter().all(|cookie| cookie.contains("; Secure")),
        "{cookies:?}"
    );

    // The sign-in page and a page behind it: every inline script they carry is allowed by
    // its hash, and nothing else inline is.
    let session = cookies[0].split(';').next().unwrap().to_string();
    let mut policy = String::new();
    let mut refused = Vec::new();
    for path in ["/login", "/"] {
        let page = client
            .get(format!("{base}{path}"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
        policy = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        let html = page.text().await.unwrap();
        let scripts = inline_scripts(&html);
        assert!(
            !scripts.is_empty(),
            "the page hydrates with an inline script: {html}"
        );
        for script in scripts {
            let hash = format!("'sha256-{}'", sha256_base64(&script));
            if !policy.contains(&hash) {
                refused.push(format!("{path}: {script:?} {hash}"));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "inline scripts the policy refuses: {refused:#?}\n{policy}"
    );
    let script_src = policy
        .split(';')
        .map(str::trim)
        .find(|directive| directive.starts_with("script-src "))
        .expect("the policy names script sources");
    assert!(!script_src.contains("'unsafe-inline'"), "{policy}");
    assert!(!script_src.contains(" 'unsafe-eval'"), "{policy}");
}
