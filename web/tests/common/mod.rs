//! A real node for the web tests: a SQLite store in a temporary directory, a running engine
//! with fixture DAGs, users of every role, and the router served over HTTP on 127.0.0.1:0.

#![allow(dead_code)]

use chrono::TimeZone;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weft_actors::{Engine, EngineConfig, RustDag};
use weft_api_types::Role;
use weft_core::ids::RunKey;
use weft_core::spec::{ParamSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_storage::Store;
use weft_web::{AppState, WebConfig};

pub const PASSWORD: &str = "correct horse battery";
/// The key that signs sessions in tests, so that a test can forge an expired one.
pub const SECRET: [u8; 32] = [42; 32];

pub struct Server {
    pub base: String,
    pub engine: Engine,
    pub state: AppState,
    pub client: reqwest::Client,
    /// Serves the router; aborted by a restart, which frees the old store.
    serving: tokio::task::AbortHandle,
    _dir: tempfile::TempDir,
}

/// Users created for every role, plus `granted`, a viewer limited to the `shell` DAG.
pub fn role_user(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::User => "user",
        Role::Op => "op",
        Role::Admin => "admin",
    }
}

fn fixtures() -> Vec<RustDag> {
    let etl = RustDag::new("etl")
        .task("extract", &[], |_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Some(json!(3)))
        })
        .task("transform", &["extract"], |_| async { Ok(None) })
        .task("load", &["transform"], |_| async { Ok(None) })
        .settings(|spec| {
            spec.owner = Some("data".to_string());
            spec.tags = vec!["nightly".to_string()];
            spec.description = Some("extract, transform, load".to_string());
            spec.params = BTreeMap::from([(
                "count".to_string(),
                ParamSpec {
                    default: json!(1),
                    description: Some("rows to load".to_string()),
                    schema: serde_json::from_value(json!({"type": "integer", "minimum": 1}))
                        .unwrap(),
                },
            )]);
        });
    let daily = RustDag::new("daily")
        .task("only", &[], |_| async { Ok(None) })
        .settings(|spec| {
            spec.schedule = ScheduleSpec::Cron {
                expression: "@daily".to_string(),
                data_intervals: false,
            };
            spec.start_date = Some(chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
            spec.catchup = false;
            spec.is_paused_upon_creation = Some(true);
        });
    let toggle = RustDag::new("toggle").task("only", &[], |_| async { Ok(None) });
    vec![etl, daily, toggle]
}

/// A DAG whose task prints lines to its log.
fn shell_dag() -> weft_core::spec::DagSpec {
    let mut task = TaskSpec::new(
        "say",
        TaskKind::Shell {
            command: "echo hello; echo world".to_string(),
            env: BTreeMap::new(),
            append_env: true,
            cwd: None,
            skip_exit_code: Some(99),
            templated: false,
        },
    );
    task.operator = "BashOperator".to_string();
    weft_core::spec::DagSpec::new("shell", vec![task])
}

/// The store's file name in the server's directory.
pub const DB_FILE: &str = "weft.db";

fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let options = weft_storage::sqlite::SqliteOptions {
        synchronous: weft_storage::sqlite::Synchronous::Off,
        ..Default::default()
    };
    Arc::new(weft_storage::sqlite::SqliteStore::open(dir.path().join(DB_FILE), options).unwrap())
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    pub async fn start_with(change: impl FnOnce(&mut WebConfig)) -> Server {
        Server::start_inner(change, false).await
    }

    /// A server that speaks HTTPS only, with a self-signed certificate for `localhost` made
    /// for the test; its client trusts that certificate alone.
    pub async fn start_tls() -> Server {
        Server::start_inner(|config| config.tls = true, true).await
    }

    async fn start_inner(change: impl FnOnce(&mut WebConfig), tls: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let mut engine_config = EngineConfig::new(dir.path());
        engine_config.worker_slots = 8;
        let engine = Engine::start(store.clone(), engine_config).await.unwrap();
        for dag in fixtures() {
            engine.register(dag).await.unwrap();
        }
        engine.upsert_dag(shell_dag()).await.unwrap();
        for role in Role::ALL {
            weft_web::auth::create_user(store.as_ref(), role_user(role), PASSWORD, role)
                .await
                .unwrap();
        }
        weft_web::auth::create_user(store.as_ref(), "granted", PASSWORD, Role::Viewer)
            .await
            .unwrap();
        let mut granted = store.user("granted").await.unwrap().unwrap();
        granted.dag_grants = vec!["shell".to_string()];
        store
            .write(vec![weft_storage::Write::PutUser(granted)])
            .await
            .unwrap();

        let mut config = WebConfig::new(SECRET.to_vec());
        change(&mut config);
        Server::serve(dir, engine, config, tls).await
    }

    /// The node stopped and started again on the same store file, with the same secret keys
    /// and session-signing key: what a restart keeps, and nothing this process remembered.
    pub async fn restart(self) -> Server {
        let Server {
            engine,
            state,
            serving,
            _dir,
            ..
        } = self;
        serving.abort();
        let config = state.config().clone();
        let keyring = (*engine.vault().keyring()).clone();
        drop(state);
        engine.shutdown().await;
        let store = open_store(&_dir);
        let mut engine_config = EngineConfig::new(_dir.path());
        engine_config.worker_slots = 8;
        engine_config.secret_keys = keyring;
        let engine = Engine::start(store, engine_config).await.unwrap();
        Server::serve(_dir, engine, config, false).await
    }

    /// The SQLite file of the store.
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join(DB_FILE)
    }

    async fn serve(dir: tempfile::TempDir, engine: Engine, config: WebConfig, tls: bool) -> Server {
        let metrics = weft_web::metrics::install_recorder();
        let state = AppState::new(engine.clone(), config, Some(metrics)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = weft_web::router(state.clone());
        // A call that hangs fails the test with its URL instead of stalling the suite.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let (base, client, serving) = if tls {
            let certified =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            let config = weft_web::tls::server_config(&cert, &key).unwrap();
            let serving = tokio::spawn(weft_web::tls::serve_tls(
                listener,
                config,
                router,
                std::future::pending(),
            ))
            .abort_handle();
            let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
            let client = client
                .tls_built_in_root_certs(false)
                .add_root_certificate(root)
                .resolve("localhost", ([127, 0, 0, 1], port).into());
            (format!("https://localhost:{port}"), client, serving)
        } else {
            let serving = tokio::spawn(weft_web::serve(listener, router, std::future::pending()))
                .abort_handle();
            (format!("http://127.0.0.1:{port}"), client, serving)
        };
        Server {
            base,
            engine,
            state,
            client: client.build().unwrap(),
            serving,
            _dir: dir,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs in through the API and returns the access token.
    pub async fn login(&self, username: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login of {username}");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Sends a request; `token` as a bearer token when given. Returns (status, JSON body or
    /// the text as a JSON string).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        let text = response.text().await.unwrap();
        let value = if is_json {
            serde_json::from_str(&text).unwrap()
        } else if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        };
        (status, value)
    }

    /// Triggers a run of `dag_id` and waits until it finishes.
    pub async fn finished_run(&self, dag_id: &str) -> RunKey {
        let run = self.engine.trigger(dag_id, json!({})).await.unwrap();
        self.wait(&run).await;
        run
    }

    /// Waits until `run` finishes (a run that does not fails the test rather than hangs it).
    pub async fn wait(&self, run: &RunKey) {
        tokio::time::timeout(Duration::from_secs(30), self.engine.wait_for_run(run))
            .await
            .expect("the run finishes")
            .unwrap();
    }
}
