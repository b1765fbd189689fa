//! What the browser tests share: the processes they start (ChromeDriver, headless Chromium),
//! the UI bundle they serve, and the steps they take in a page (wait for a condition, click,
//! check that a page updated in place, screenshots).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long one step may take before the test gives up on it (a failure, not a measurement).
pub const STEP_LIMIT: Duration = Duration::from_secs(120);

/// The UI's WASM bundle, built for the current sources: the folder to serve as `/pkg`.
pub async fn build_bundle() -> Result<PathBuf> {
    let profile = profile_dir()?;
    let target = profile
        .parent()
        .context("no target directory")?
        .to_path_buf();
    let mut build = weft_ui_build::BuildOptions::for_repo();
    build.out_dir = target.join("browser-tests/pkg");
    build.target_dir = target.join("ui-wasm");
    let bundle = tokio::task::spawn_blocking(move || weft_ui_build::build(&build)).await??;
    Ok(bundle
        .js
        .parent()
        .context("bundle without a directory")?
        .to_path_buf())
}

/// A child process killed when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `target/<profile>`: this test runs from `target/<profile>/deps/`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("cannot tell the target directory from the test's path")
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A plain HTTP GET on localhost: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn start_chromedriver() -> Result<(Guard, u16)> {
    let port = free_port()?;
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting chromedriver (scripts/install-deps.sh installs it)")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((guard, port))
}

pub async fn start_browser(driver_port: u16, profile: &Path) -> Result<Client> {
    let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("chromium");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,950",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .context("opening a Chromium session through chromedriver")?;
    client.set_window_size(1400, 950).await?;
    Ok(client)
}

/// Runs `script` (a JS expression's body: `return …`) until it returns something truthy.
pub async fn wait_until(client: &Client, what: &str, script: &str) -> Result<Value> {
    let deadline = Instant::now() + STEP_LIMIT;
    let mut last: Value;
    loop {
        match client.execute(script, vec![]).await {
            Ok(value) => {
                let truthy = match &value {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::String(s) => !s.is_empty(),
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    _ => true,
                };
                if truthy {
                    return Ok(value);
                }
                last = value;
            }
            Err(error) => last = json!(error.to_string()),
        }
        if Instant::now() > deadline {
            let url = client
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            bail!("waited {STEP_LIMIT:?} for {what} on {url} (last answer: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_hydrated(client: &Client) -> Result<()> {
    wait_until(
        client,
        "the page to hydrate",
        "return document.body && document.body.dataset.hydrated === 'true';",
    )
    .await
    .map(|_| ())
}

pub async fn click(client: &Client, css: &str) -> Result<()> {
    client
        .wait()
        .at_most(STEP_LIMIT)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("finding {css}"))?
        .click()
        .await
        .with_context(|| format!("clicking {css}"))
}

/// The page was not reloaded since the marker was set (a reload clears `window`).
pub async fn assert_not_reloaded(client: &Client, step: &str) -> Result<()> {
    let marker = client
        .execute("return window.__weftNoReload === 1;", vec![])
        .await?;
    if marker != json!(true) {
        bail!("{step}: the page was reloaded, but it should have updated in place");
    }
    Ok(())
}

pub fn screenshots_dir() -> PathBuf {
    repo_root().join("target/browser-screenshots")
}

pub async fn screenshot(client: &Client, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    if !png.starts_with(b"\x89PNG") {
        bail!("the screenshot {name} is not a PNG");
    }
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png)?;
    Ok(path)
}

/// A string as a JS (and CSS) string literal.
pub fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// What `child` writes on its piped standard output and error, line by line (echoed to this
/// test's output with `[name]` in front).
pub fn capture(child: &mut Child, name: &str) -> Arc<Mutex<Vec<String>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let (output, name) = (output.clone(), name.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                if let Ok(mut lines) = output.lock() {
                    lines.push(line);
                }
            }
        });
    }
    output
}
