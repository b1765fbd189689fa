//! The UI across cells, in a real headless Chromium: two `weft cell` processes on the CQL test
//! server (`WEFT_TEST_CQL`, set by CI; without it the test says so and passes), linked over
//! QUIC with mutual TLS. A person signed in on the cell that does NOT own a DAG opens a run of
//! it and watches it change state live, the run page naming the owning cell; the run is the
//! owner's, and its changes reach this cell's page only over the link between the cells.
//!
//! Needs what `browser.rs` needs (chromium, chromedriver, the `weft` binary beside the test).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, Locator};
use serde_json::Value;
use weft_browser_tests::{
    assert_not_reloaded, build_bundle, capture, click, free_port, http_get, js, profile_dir,
    screenshot, start_browser, start_chromedriver, wait_hydrated, wait_until, Guard, STEP_LIMIT,
};

const SHARDS: u32 = 4;
const DAG_ID: &str = "ui_gated";

struct Cell {
    name: String,
    home: PathBuf,
    port: u16,
    output: Arc<Mutex<Vec<String>>>,
    _process: Guard,
}

impl Cell {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn said(&self) -> String {
        self.output
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    fn wait_for(&self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + STEP_LIMIT;
        while !self.said().contains(needle) {
            if Instant::now() > deadline {
                bail!("{} did not say `{needle}`:\n{}", self.name, self.said());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

struct Deployment {
    work: tempfile::TempDir,
    store: String,
    binary: PathBuf,
    pkg: PathBuf,
}

impl Deployment {
    fn command(&self, home: &Path) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--store")
            .arg(&self.store)
            .arg("--dags-folder")
            .arg(self.work.path().join("dags"))
            .env("WEFT_HOME", home)
            .env("WEFT_WORKERS__CERTS_DIR", self.work.path().join("certs"))
            .env("WEFT_CELL__SHARDS", SHARDS.to_string())
            .env("WEFT_CELL__LEASE_MS", "2000")
            .env("WEFT_CELL__RENEW_MS", "500")
            .env("WEFT_CELL__SKEW_MS", "200")
            .env("WEFT_WORKERS__IDLE_TIMEOUT_MS", "3000")
            .env("WEFT_WEB__PKG_DIR", &self.pkg)
            // The gate file is in the test's temporary directory, which a task running as
            // another user could not see.
            .env("WEFT_SANDBOX__ISOLATION", "none")
            .env("WEFT_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command(&self.work.path().join("cli"))
            .args(args)
            .output()?;
        if !output.status.success() {
            bail!("weft {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    }

    fn start_cell(&self, name: &str) -> Result<Cell> {
        let home = self.work.path().join(name);
        let port = free_port()?;
        let quic = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let mut child = self
            .command(&home)
            .args(["cell", "--name", name, "--region", name])
            .arg("--listen")
            .arg(quic.to_string())
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let output = capture(&mut child, name);
        let cell = Cell {
            name: name.to_string(),
            home,
            port,
            output,
            _process: Guard(child),
        };
        let deadline = Instant::now() + STEP_LIMIT;
        while !matches!(http_get(port, "/health"), Ok((200, _))) {
            if Instant::now() > deadline {
                bail!("{name} did not answer /health:\n{}", cell.said());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(cell)
    }

    /// The owner of each shard, from `weft cells list`.
    fn owners(&self) -> Result<Vec<(String, u64)>> {
        let list: Value = serde_json::from_str(&self.run(&["cells", "list", "--json"])?)?;
        let mut owners = Vec::new();
        for cell in list["cells"].as_array().into_iter().flatten() {
            for shard in cell["shards"].as_array().into_iter().flatten() {
                owners.push((
                    cell["name"].as_str().unwrap_or_default().to_string(),
                    shard["shard"].as_u64().unwrap_or_default(),
                ));
            }
        }
        Ok(owners)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_on_one_cell_watches_a_run_another_cell_owns_change_live() -> Result<()> {
    let Ok(address) = std::env::var("WEFT_TEST_CQL") else {
        eprintln!("WEFT_TEST_CQL is not set: no CQL server to run cells on");
        return Ok(());
    };
    let binary = profile_dir()?.join("weft");
    if !binary.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p weft`",
            binary.display()
        );
    }
    let pkg = build_bundle().await?;
    let work = tempfile::tempdir()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let keyspace = format!("ui_cells_{}_{nanos}", std::process::id());
    let deployment = Deployment {
        store: format!("cql://{address}/{keyspace}?dc=dc1&replication=dc1:1"),
        binary,
        pkg,
        work,
    };
    let dags = deployment.work.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    let gate = deployment.work.path().join("gate");
    let gated =
        include_str!("../dags/ui_gated.py.in").replace("@GATE@", &gate.display().to_string());
    std::fs::write(dags.join("ui_gated.py"), gated)?;
    let certs = deployment.work.path().join("certs");
    let certs = certs
        .to_str()
        .context("a temporary path that is not UTF-8")?;
    deployment.run(&["certs", "init", "--dir", certs])?;
    for cell in ["cell-a", "cell-b"] {
        deployment.run(&[
            "certs",
            "issue",
            "--node",
            cell,
            "--san",
            "127.0.0.1",
            "--dir",
            certs,
        ])?;
    }

    // cell-a first (it creates the admin), then cell-b; they split the shards and link.
    let a = deployment.start_cell("cell-a")?;
    let b = deployment.start_cell("cell-b")?;
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let owners = deployment.owners()?;
        let split = ["cell-a", "cell-b"].iter().all(|cell| {
            owners.iter().filter(|(owner, _)| owner == cell).count() == SHARDS as usize / 2
        });
        if split && owners.len() == SHARDS as usize {
            break;
        }
        if Instant::now() > deadline {
            bail!("the cells did not split the shards: {owners:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    a.wait_for("cell link up")?;
    b.wait_for("cell link up")?;
    let shard = u64::from(weft_core::lease::shard_of(DAG_ID, SHARDS));
    let owner_name = deployment
        .owners()?
        .into_iter()
        .find(|(_, held)| *held == shard)
        .map(|(owner, _)| owner)
        .context("the DAG's shard has no owner")?;
    let (owner, watcher) = if owner_name == "cell-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    owner.wait_for("DAGs from")?;
    watcher.wait_for("DAGs from")?;

    // The run is triggered on its owner (its control socket, as `weft dags trigger` there).
    let output = deployment
        .command(&owner.home)
        .args(["dags", "trigger", DAG_ID, "--json"])
        .output()?;
    if !output.status.success() {
        bail!(
            "trigger on {}: {}",
            owner.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let created: Value = serde_json::from_slice(&output.stdout)?;
    let run_id = created["run_id"]
        .as_str()
        .context("the trigger named no run")?
        .to_string();

    let password = std::fs::read_to_string(a.home.join("standalone_admin_password.txt"))
        .context("cell-a kept no admin password")?;
    let (_driver, driver_port) = start_chromedriver()?;
    let client = start_browser(driver_port, &deployment.work.path().join("chromium")).await?;
    let outcome = watch(
        &client,
        watcher,
        &owner.name,
        &run_id,
        password.trim(),
        &gate,
    )
    .await;
    if outcome.is_err() {
        let _ = screenshot(&client, "cells-failure").await;
    }
    let _ = client.close().await;
    outcome.with_context(|| format!("--- {}\n{}\n--- {}\n{}", a.name, a.said(), b.name, b.said()))
}

/// Signed in on `watcher`, open the run's page and see it go from running to success without
/// a reload, while its owner runs it.
async fn watch(
    client: &Client,
    watcher: &Cell,
    owner: &str,
    run_id: &str,
    password: &str,
    gate: &Path,
) -> Result<()> {
    let base = watcher.base();
    client.goto(&format!("{base}/login")).await?;
    wait_hydrated(client).await?;
    client
        .find(Locator::Id("username"))
        .await?
        .send_keys("admin")
        .await?;
    client
        .find(Locator::Id("password"))
        .await?
        .send_keys(password)
        .await?;
    click(client, "#sign-in").await?;
    wait_until(
        client,
        "the DAG list after signing in",
        "return location.pathname === '/';",
    )
    .await?;
    let path = format!(
        "/dags/{DAG_ID}/runs/{}",
        run_id.replace(':', "%3A").replace('+', "%2B")
    );
    client.goto(&format!("{base}{path}")).await?;
    wait_hydrated(client).await?;
    wait_until(
        client,
        "the run page to name the cell that owns the run",
        &format!(
            "const cell = document.querySelector('#run-cell'); return cell && cell.dataset.cell === {};",
            js(owner)
        ),
    )
    .await?;
    wait_until(
        client,
        "the run to be running on the other cell",
        "const state = document.querySelector('#run-state'); return state && state.dataset.state === 'running';",
    )
    .await?;
    client
        .execute("window.__weftNoReload = 1; return true;", vec![])
        .await?;
    screenshot(client, "cells-run-running").await?;
    std::fs::write(gate, b"open")?;
    wait_until(
        client,
        "the run to end in success, shown live",
        "const state = document.querySelector('#run-state'); return state && state.dataset.state === 'success';",
    )
    .await?;
    assert_not_reloaded(client, "watching a run of another cell").await?;
    screenshot(client, "cells-run-success").await?;
    // The Cells page lists both cells, this one marked.
    client.goto(&format!("{base}/cells")).await?;
    wait_hydrated(client).await?;
    wait_until(
        client,
        "the Cells page to list both cells",
        "return document.querySelectorAll('#cells tbody tr').length === 2;",
    )
    .await?;
    screenshot(client, "cells-page").await?;
    Ok(())
}
