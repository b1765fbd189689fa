//! The web UI end to end, in a real headless Chromium driven through ChromeDriver: a real
//! `weft standalone` (the binary this workspace builds) on a fresh WEFT_HOME with the example
//! DAGs plus one DAG whose middle task waits for a gate the test opens. The steps follow what a
//! person does: sign in, see the example DAGs, trigger a run, watch its tasks change state
//! without a reload, read a task's log as lines arrive, clear a task and see it run again,
//! pause a DAG. Each step saves a screenshot in `target/browser-screenshots/`; the DAG page's
//! is also copied to `docs/images/dag-page.png` for the README.
//!
//! Needs `chromium` and `chromedriver` on PATH (scripts/install-deps.sh installs them) and the
//! `weft` binary next to this test's own directory (`cargo test --workspace` builds it; alone,
//! run `cargo build -p weft` first). It builds the UI's WASM bundle itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, Locator};
use weft_browser_tests::{
    assert_not_reloaded, build_bundle, capture, click, free_port, http_get, js, profile_dir,
    repo_root, screenshot, start_browser, start_chromedriver, wait_hydrated, wait_until, Guard,
    STEP_LIMIT,
};

const GATED_DAG: &str = "ui_gated";
const EXAMPLE_DAGS: [&str; 4] = [
    "etl_with_retries",
    "fan_out_fan_in",
    "branching",
    "paris_weekday_report",
];

/// The first `username`/`password` pair in what `weft standalone` printed on its first start.
fn generated_credentials(lines: &[String]) -> Option<(String, String)> {
    fn value_after(line: &str, key: &str) -> Option<String> {
        let at = line.to_lowercase().find(key)? + key.len();
        let rest =
            line[at..].trim_start_matches(|c: char| c == ':' || c == '=' || c.is_whitespace());
        let value = rest
            .split_whitespace()
            .next()?
            .trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | ',' | ';'));
        (!value.is_empty()).then(|| value.to_string())
    }
    lines.iter().find_map(|line| {
        let password = value_after(line, "password")?;
        let username = value_after(line, "username")
            .or_else(|| value_after(line, "user"))
            .unwrap_or_else(|| "admin".into());
        Some((username, password))
    })
}

struct Weft {
    _process: Guard,
    port: u16,
    output: Arc<Mutex<Vec<String>>>,
}

impl Weft {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn output(&self) -> Vec<String> {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// Starts `weft standalone` and waits for `/health` and for the generated admin password.
fn start_weft(home: &Path, dags: &Path, pkg: &Path) -> Result<(Weft, (String, String))> {
    let binary = profile_dir()?.join("weft");
    if !binary.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p weft` (cargo test --workspace does)",
            binary.display()
        );
    }
    let port = free_port()?;
    let mut child = Command::new(&binary)
        .arg("--dags-folder")
        .arg(dags)
        .arg("standalone")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .env("WEFT_HOME", home)
        .env("WEFT_WEB__PKG_DIR", pkg)
        // The gate file lives in the test's temporary directory, which a sandboxed task
        // could not see.
        .env("WEFT_SANDBOX__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let output = capture(&mut child, "weft");
    let mut weft = Weft {
        _process: Guard(child),
        port,
        output,
    };
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        if let Ok(Some(status)) = weft._process.0.try_wait() {
            bail!(
                "weft standalone exited ({status}) before it was ready:\n{}",
                weft.output().join("\n")
            );
        }
        if matches!(http_get(port, "/health"), Ok((200, _))) {
            // The first start keeps the generated password in the data directory too.
            let kept = std::fs::read_to_string(home.join("standalone_admin_password.txt"))
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .map(|p| ("admin".to_string(), p));
            if let Some(credentials) = kept.or_else(|| generated_credentials(&weft.output())) {
                return Ok((weft, credentials));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "weft standalone did not answer /health with 200 and print the generated admin password within {STEP_LIMIT:?}:\n{}",
                weft.output().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The grid cell of a task in a run.
fn cell_selector(run_id: &str, task_id: &str) -> String {
    format!(
        "#grid tr[data-run-id={}] a.cell[data-task-id={}]",
        js(run_id),
        js(task_id)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_triggers_watches_reads_logs_clears_and_pauses() -> Result<()> {
    // The bundle, built here so that the test always serves the current UI.
    let pkg = build_bundle().await?;

    let work = tempfile::tempdir()?;
    let dags = work.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    for entry in std::fs::read_dir(repo_root().join("examples/dags"))? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "py") {
            std::fs::copy(entry.path(), dags.join(entry.file_name()))?;
        }
    }
    let gate = work.path().join("gate");
    let gated =
        include_str!("../dags/ui_gated.py.in").replace("@GATE@", &gate.display().to_string());
    std::fs::write(dags.join("ui_gated.py"), gated)?;

    let (weft, (username, password)) = start_weft(&work.path().join("home"), &dags, &pkg)?;
    let (_driver, driver_port) = start_chromedriver()?;
    let client = start_browser(driver_port, &work.path().join("chromium")).await?;
    let outcome = scenario(&client, &weft, &username, &password, &gate).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "failure").await;
    }
    let _ = client.close().await;
    outcome
}

async fn scenario(
    client: &Client,
    weft: &Weft,
    username: &str,
    password: &str,
    gate: &Path,
) -> Result<()> {
    let base = weft.base();

    // --- Sign in: a visitor without a session lands on the sign-in page; a wrong password is
    // refused with a message; the right one opens the DAG list.
    client.goto(&format!("{base}/")).await?;
    let url = client.current_url().await?;
    if url.path() != "/login" {
        bail!("sign in: an anonymous visitor to / should be sent to /login, not {url}");
    }
    wait_hydrated(client).await?;
    client
        .find(Locator::Id("username"))
        .await?
        .send_keys(username)
        .await?;
    client
        .find(Locator::Id("password"))
        .await?
        .send_keys("not-the-password")
        .await?;
    click(client, "#sign-in").await?;
    let refused = wait_until(
        client,
        "the sign-in error",
        "const e = document.querySelector('#login-error'); return e && e.textContent;",
    )
    .await?;
    if client.current_url().await?.path() != "/login" {
        bail!("sign in: a wrong password must not sign in ({refused})");
    }
    let field = client.find(Locator::Id("password")).await?;
    field.clear().await?;
    field.send_keys(password).await?;
    screenshot(client, "01-sign-in").await?;
    click(client, "#sign-in").await?;
    wait_until(
        client,
        "the DAG list after signing in",
        "return location.pathname === '/' && document.querySelector('#dag-list');",
    )
    .await?;
    wait_hydrated(client).await?;

    // --- The example DAGs are listed.
    let mut ids: Vec<&str> = EXAMPLE_DAGS.to_vec();
    ids.push(GATED_DAG);
    let check = format!(
        "return {}.every(id => document.querySelector('#dag-list tr[data-dag-id=\"' + id + '\"]'));",
        serde_json::to_string(&ids)?
    );
    wait_until(client, "every example DAG in the list", &check).await?;
    let signed_in = wait_until(
        client,
        "the signed-in user",
        "return document.querySelector('#signed-in-user').textContent;",
    )
    .await?;
    if !signed_in.as_str().unwrap_or_default().contains(username) {
        bail!("the header should name the signed-in user {username}, it says {signed_in}");
    }
    screenshot(client, "02-dag-list").await?;

    // --- Trigger the gated DAG with a conf; a conf that is not JSON is refused first.
    click(
        client,
        &format!("#dag-list tr[data-dag-id=\"{GATED_DAG}\"] a.dag-link"),
    )
    .await?;
    wait_until(client, "the DAG page", "return document.querySelector('#dag-title') && document.querySelector('#open-trigger') && !document.querySelector('#open-trigger').disabled;").await?;
    client
        .execute("window.__weftNoReload = 1; return true;", vec![])
        .await?;
    click(client, "#open-trigger").await?;
    let conf = client
        .wait()
        .at_most(STEP_LIMIT)
        .for_element(Locator::Id("trigger-conf"))
        .await?;
    conf.clear().await?;
    conf.send_keys("{\"note\": ").await?;
    click(client, "#trigger-submit").await?;
    wait_until(client, "the refusal of a conf that is not JSON", "const n = document.querySelector('#trigger-form .notice.error'); return n && n.textContent.includes('not valid JSON');").await?;
    conf.clear().await?;
    conf.send_keys("{\"note\": \"from the browser\"}").await?;
    click(client, "#trigger-submit").await?;
    let run_id = wait_until(
        client,
        "the triggered run",
        "const a = document.querySelector('#triggered-run'); return a && decodeURIComponent(a.getAttribute('href').split('/').pop());",
    )
    .await?;
    let run_id = run_id.as_str().context("run id")?.to_string();
    screenshot(client, "03-triggered").await?;

    // --- Its tasks change state on the open grid, without a reload: the gated task runs.
    let gated_cell = cell_selector(&run_id, "wait_for_gate");
    wait_until(
        client,
        "the gated task to show as running on the grid",
        &format!(
            "const c = document.querySelector({}); return c && c.dataset.state === 'running';",
            js(&gated_cell)
        ),
    )
    .await?;
    assert_not_reloaded(client, "watching the grid").await?;
    screenshot(client, "04-running").await?;

    // --- Its log: open the task, see the first line, open the gate, see the next lines
    // arrive and the task succeed, still without a reload.
    click(client, &gated_cell).await?;
    wait_until(
        client,
        "the first log line",
        "const l = document.querySelector('#task-log'); return l && l.textContent.includes('waiting for the gate');",
    )
    .await?;
    let before = client
        .execute(
            "return document.querySelector('#task-log').textContent;",
            vec![],
        )
        .await?;
    if before.as_str().unwrap_or_default().contains("gate opened") {
        bail!("the log shows `gate opened` before the gate was opened");
    }
    std::fs::write(gate, b"open")?;
    wait_until(
        client,
        "the log line written after the gate opened",
        "return document.querySelector('#task-log').textContent.includes('gate opened');",
    )
    .await?;
    wait_until(
        client,
        "the task to succeed",
        "const s = document.querySelector('#task-state'); return s && s.dataset.state === 'success';",
    )
    .await?;
    assert_not_reloaded(client, "reading the log").await?;
    screenshot(client, "05-task-log").await?;

    // --- Back on the DAG page the whole run turns green.
    client.back().await?;
    let all_done = format!(
        "const cells = document.querySelectorAll({}); return cells.length === 3 && [...cells].every(c => c.dataset.state === 'success');",
        js(&format!("#grid tr[data-run-id={}] a.cell", js(&run_id)))
    );
    wait_until(
        client,
        "every task of the run to succeed on the grid",
        &all_done,
    )
    .await?;
    assert_not_reloaded(client, "the grid after the run").await?;
    let dag_page = screenshot(client, "06-dag-page").await?;
    let readme_image = repo_root().join("docs/images/dag-page.png");
    if let Some(dir) = readme_image.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(&dag_page, &readme_image)?;

    // --- Clear a task: a dry run lists it, the confirmation clears it, and it runs again
    // (try 2) and succeeds.
    click(client, &cell_selector(&run_id, "after_gate")).await?;
    wait_until(
        client,
        "the finished task's page",
        "const s = document.querySelector('#task-state'); const t = document.querySelector('#task-try'); return s && t && s.dataset.state === 'success' && t.textContent.trim() === '1' && !document.querySelector('#clear-start').disabled;",
    )
    .await?;
    click(client, "#clear-start").await?;
    let listed = wait_until(
        client,
        "the list of tasks a clear would reset",
        "const l = document.querySelector('#clear-list'); return l && l.textContent;",
    )
    .await?;
    if !listed.as_str().unwrap_or_default().contains("after_gate") {
        bail!("the clear's dry run should list after_gate, it lists {listed}");
    }
    click(client, "#clear-confirm").await?;
    wait_until(
        client,
        "the cleared task to run again and succeed",
        "const s = document.querySelector('#task-state'); const t = document.querySelector('#task-try'); return s && t && t.textContent.trim() === '2' && s.dataset.state === 'success';",
    )
    .await?;
    assert_not_reloaded(client, "clearing a task").await?;
    screenshot(client, "07-cleared").await?;

    // --- Pause a DAG from the list; a fresh load shows it paused (the server has it).
    click(client, "header nav a[href=\"/\"]").await?;
    let toggle = "#dag-list tr[data-dag-id=\"etl_with_retries\"] input.pause-toggle";
    wait_until(
        client,
        "the pause toggle",
        &format!(
            "const t = document.querySelector('{toggle}'); return t && !t.disabled && t.checked;"
        ),
    )
    .await?;
    click(client, toggle).await?;
    wait_until(
        client,
        "the DAG to show as paused",
        "return document.querySelector('#dag-list tr[data-dag-id=\"etl_with_retries\"] .paused-label');",
    )
    .await?;
    client.goto(&format!("{base}/")).await?;
    wait_hydrated(client).await?;
    wait_until(
        client,
        "the paused DAG after a reload",
        &format!("const t = document.querySelector('{toggle}'); return t && !t.checked;"),
    )
    .await?;
    screenshot(client, "08-paused").await?;
    Ok(())
}

#[test]
fn finds_the_generated_admin_credentials_in_the_output() {
    let lines = vec![
        "weft standalone: 5 DAGs".to_string(),
        "Login with username: admin  password: Xy7-pQ".to_string(),
    ];
    let weft_style =
        vec!["weft standalone: created user `admin` with password `a1B2` (also in x)".to_string()];
    assert_eq!(
        generated_credentials(&weft_style),
        Some(("admin".to_string(), "a1B2".to_string()))
    );
    assert_eq!(
        generated_credentials(&lines),
        Some(("admin".to_string(), "Xy7-pQ".to_string()))
    );
    assert_eq!(generated_credentials(&lines[..1]), None);
}
