//! `weft certs` end to end: the built binary makes a CA and certificates, and the files it
//! wrote carry a real QUIC link with mutual TLS.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use weft_cells::certs::Identity;
use weft_cells::link::{Connector, Credentials, LinkSettings, Listener};

fn weft(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env("WEFT_HOME", home)
        .env("WEFT_LOG", "warn")
        .env_remove("WEFT_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn succeeds(home: &Path, args: &[&str]) -> String {
    let output = weft(home, args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The one line of error `args` prints, checking that it fails.
fn fails(home: &Path, args: &[&str]) -> String {
    let output = weft(home, args);
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_init_and_issue_make_files_that_carry_a_link() {
    let temporary = tempfile::tempdir().unwrap();
    let home = temporary.path().join("home");
    let certs = home.join("certs");

    let error = fails(&home, &["certs", "issue", "--worker", "w1"]);
    assert!(error.contains("run `weft certs init` first"), "{error}");

    let printed = succeeds(&home, &["certs", "init"]);
    assert!(
        printed.contains(&certs.join("ca.pem").display().to_string()),
        "{printed}"
    );
    assert!(
        printed.contains(&certs.join("ca.key").display().to_string()),
        "{printed}"
    );
    assert_eq!(mode(&certs.join("ca.key")), 0o600);
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();

    let error = fails(&home, &["certs", "init"]);
    assert!(error.contains("a CA already exists"), "{error}");
    assert_eq!(
        std::fs::read(certs.join("ca.pem")).unwrap(),
        ca,
        "the CA is kept"
    );

    let printed = succeeds(&home, &["certs", "issue", "--worker", "w1"]);
    assert!(
        printed.contains("issued weft://worker/w1")
            && printed.contains(&certs.join("worker-w1.pem").display().to_string()),
        "{printed}"
    );
    assert_eq!(mode(&certs.join("worker-w1.key")), 0o600);
    succeeds(
        &home,
        &[
            "certs",
            "issue",
            "--node",
            "n1",
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        ],
    );
    assert_eq!(mode(&certs.join("node-n1.key")), 0o600);

    let error = fails(&home, &["certs", "issue", "--worker", "a/b"]);
    assert!(
        error.contains("worker name `a/b` is invalid: `/` is not allowed"),
        "{error}"
    );
    let error = fails(&home, &["certs", "issue", "--node", "n2"]);
    assert!(
        error.contains("at least one DNS name or IP address"),
        "{error}"
    );
    let error = fails(
        &home,
        &["certs", "issue", "--node", "n2", "--san", "no way"],
    );
    assert!(
        error.contains("neither an IP address nor a DNS name"),
        "{error}"
    );
    // clap refuses a certificate for both or neither.
    assert!(
        !weft(&home, &["certs", "issue", "--worker", "a", "--node", "b"])
            .status
            .success()
    );
    assert!(!weft(&home, &["certs", "issue"]).status.success());

    // --dir, with --json.
    let elsewhere = temporary.path().join("elsewhere");
    let dir = elsewhere.to_str().unwrap();
    succeeds(&home, &["certs", "init", "--dir", dir]);
    let printed = succeeds(
        &home,
        &["certs", "issue", "--worker", "w2", "--dir", dir, "--json"],
    );
    let issued: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(issued["identity"], "weft://worker/w2");
    assert_eq!(issued["replaced"], false);
    assert!(elsewhere.join("worker-w2.key").exists());

    // The files carry a link: the worker connects to the node, each learns the other from its
    // certificate, and a frame goes both ways.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = Credentials::load(&certs, &Identity::node("n1").unwrap()).unwrap();
        let worker = Credentials::load(&certs, &Identity::worker("w1").unwrap()).unwrap();
        let listener = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &node,
            LinkSettings::default(),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let link = listener.accept().await.unwrap().handshake().await.unwrap();
            let mut channel = link.accept().await.unwrap();
            let payload = channel.recv().await.unwrap().unwrap();
            channel.send(&payload).await.unwrap();
            channel.finish();
            let peer = link.peer().clone();
            // Stay until the client has read the answer and closed.
            link.closed().await;
            peer
        });
        let connector = Connector::bind(
            "127.0.0.1:0".parse().unwrap(),
            &worker,
            LinkSettings::default(),
        )
        .unwrap();
        let wait = Duration::from_secs(15);
        let link = tokio::time::timeout(wait, connector.connect(addr, "127.0.0.1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(link.peer(), &Identity::node("n1").unwrap());
        let mut channel = link.open().await.unwrap();
        channel.send(b"hello").await.unwrap();
        let echoed = tokio::time::timeout(wait, channel.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed.as_deref(), Some(&b"hello"[..]));
        link.close("done");
        let peer = tokio::time::timeout(wait, server).await.unwrap().unwrap();
        assert_eq!(peer, Identity::worker("w1").unwrap());
    });
}
