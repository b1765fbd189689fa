//! The control socket of a running node (`$WEFT_HOME/weft.sock`): the CLI sends mutating
//! commands (trigger, pause, clear, backfill) to the node that owns the store instead of
//! writing behind its back. One JSON request per connection, one JSON response.
//!
//! Who may use it: the socket is 0600 in the node's 0700 home, and each connection's peer
//! (`SO_PEERCRED`) must be the node's own user or root, the operators; anyone else is refused.
//! Every command is audited as `cli:uid=<uid>`, like an API call.

use crate::secrets::KeySource;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use weft_actors::Engine;
use weft_core::ids::RunKey;

/// Size limit of one control request.
const REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Pause after a failed `accept` (out of descriptors, say) before the next one.
const ACCEPT_RETRY_MS: u64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Trigger {
        dag_id: String,
        conf: serde_json::Value,
        logical_date: Option<weft_core::Timestamp>,
    },
    SetPaused {
        dag_id: String,
        paused: bool,
    },
    Clear {
        run: RunKey,
        task_ids: Vec<String>,
        downstream: bool,
        upstream: bool,
    },
    Backfill {
        dag_id: String,
        from: weft_core::Timestamp,
        to: weft_core::Timestamp,
    },
    /// A change to variables or connections, or a key rotation.
    Secrets {
        change: crate::secrets::Change,
    },
    /// The remote workers (read only: not audited).
    Workers,
    /// The cells, as this cell sees them (read only: not audited).
    Cells,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub error: Option<String>,
}

impl Response {
    pub fn into_result(self) -> anyhow::Result<serde_json::Value> {
        match self.error {
            None => Ok(self.result),
            Some(error) => anyhow::bail!("{error}"),
        }
    }
}

pub fn socket_path(home: &Path) -> PathBuf {
    home.join("weft.sock")
}

/// Send a request to the running node, if there is one (`None` when no node listens).
pub async fn send(home: &Path, request: &Request) -> anyhow::Result<Option<Response>> {
    let Ok(stream) = UnixStream::connect(socket_path(home)).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    Ok(Some(serde_json::from_str(&answer)?))
}

/// Serve the control socket until the task is dropped.
pub async fn serve(home: PathBuf, engine: Engine, keys: KeySource) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(&home);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let node_uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path)?.uid()
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or memory: the next accept may work; the socket stays.
                tracing::warn!(%error, "control socket: cannot accept a connection");
                metrics::counter!("weft_control_accept_errors_total").increment(1);
                tokio::time::sleep(std::time::Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let engine = engine.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_one(stream, engine, &keys, node_uid).await {
                tracing::warn!(%error, "control request failed");
            }
        });
    }
}

async fn serve_one(
    stream: UnixStream,
    engine: Engine,
    keys: &KeySource,
    node_uid: u32,
) -> anyhow::Result<()> {
    let peer_uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(REQUEST_BYTES_MAX as u64);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = if peer_uid != node_uid && peer_uid != 0 {
        tracing::warn!(
            peer_uid,
            "control socket: refused a user who is not the node's"
        );
        refusal(format!(
            "uid {peer_uid} may not control this node: only its own user (uid {node_uid}) and \
             root may; use the API with a token instead"
        ))
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let audit = audit_entry(peer_uid, &request);
                let response = execute(&engine, keys, request).await;
                if let (true, Some(audit)) = (response.ok, audit) {
                    if let Err(error) = engine
                        .store()
                        .write(vec![weft_storage::Write::Audit(audit)])
                        .await
                    {
                        tracing::warn!(%error, "control socket: cannot write the audit entry");
                    }
                }
                response
            }
            Err(error) => refusal(format!("bad request: {error}")),
        }
    };
    let mut answer = serde_json::to_vec(&response)?;
    answer.push(b'\n');
    write.write_all(&answer).await?;
    Ok(())
}

fn refusal(error: String) -> Response {
    Response {
        ok: false,
        result: serde_json::Value::Null,
        error: Some(error),
    }
}

/// The audit entry of a control command, as the API writes one for the same change.
fn audit_entry(peer_uid: u32, request: &Request) -> Option<weft_storage::AuditRow> {
    let (action, target) = match request {
        Request::Workers | Request::Cells => return None,
        Request::Trigger { dag_id, .. } => ("trigger", dag_id.clone()),
        Request::SetPaused { dag_id, paused } => {
            (if *paused { "pause" } else { "unpause" }, dag_id.clone())
        }
        Request::Clear { run, .. } => ("clear", run.to_string()),
        Request::Backfill { dag_id, .. } => ("backfill", dag_id.clone()),
        Request::Secrets { change } => {
            // Never the value: only what changed.
            let (action, target) = change.audit();
            let detail = serde_json::json!({ "from": "control socket" }).to_string();
            return Some(weft_storage::AuditRow {
                id: 0,
                at: chrono::Utc::now(),
                actor: format!("cli:uid={peer_uid}"),
                action: action.to_string(),
                target,
                detail,
            });
        }
    };
    let mut detail = serde_json::json!({ "from": "control socket", "detail": request }).to_string();
    if detail.len() > weft_storage::AUDIT_DETAIL_BYTES_MAX {
        detail = serde_json::json!({ "from": "control socket", "detail": "request too large to record" })
            .to_string();
    }
    Some(weft_storage::AuditRow {
        id: 0,
        at: chrono::Utc::now(),
        actor: format!("cli:uid={peer_uid}"),
        action: action.to_string(),
        target,
        detail,
    })
}

use tokio::io::AsyncReadExt;

/// The cells as this node sees them; refused on a node that is not a cell.
async fn cells(engine: &Engine) -> Response {
    if engine.ownership().is_none() {
        return refusal("this node is not a cell".to_string());
    }
    match weft_web::api::cells::seen_by(engine).await {
        Ok(list) => Response {
            ok: true,
            result: serde_json::to_value(list).unwrap_or(serde_json::Value::Null),
            error: None,
        },
        Err(error) => refusal(error.to_string()),
    }
}

pub async fn execute(engine: &Engine, keys: &KeySource, request: Request) -> Response {
    if let Request::Secrets { change } = request {
        return match crate::secrets::apply(engine.vault(), keys, change).await {
            Ok(result) => Response {
                ok: true,
                result,
                error: None,
            },
            Err(error) => refusal(format!("{error:#}")),
        };
    }
    if let Request::Cells = request {
        return cells(engine).await;
    }
    let result: Result<serde_json::Value, weft_actors::EngineError> = match request {
        Request::Cells => unreachable!("answered above"),
        Request::Workers => engine
            .workers()
            .await
            .map(|view| serde_json::to_value(view.remote).unwrap_or(serde_json::Value::Null)),
        Request::Trigger {
            dag_id,
            conf,
            logical_date,
        } => engine
            .trigger_at(&dag_id, logical_date, conf)
            .await
            .map(|run| serde_json::json!({ "dag_id": run.dag_id, "run_id": run.run_id })),
        Request::SetPaused { dag_id, paused } => engine
            .set_paused(&dag_id, paused)
            .await
            .map(|()| serde_json::Value::Null),
        Request::Clear {
            run,
            task_ids,
            downstream,
            upstream,
        } => {
            let ids: Vec<&str> = task_ids.iter().map(String::as_str).collect();
            engine
                .clear(&run, &ids, downstream, upstream)
                .await
                .map(|()| serde_json::Value::Null)
        }
        Request::Backfill { dag_id, from, to } => {
            engine.backfill(&dag_id, from, to).await.map(|runs| {
                serde_json::Value::Array(
                    runs.into_iter()
                        .map(|run| serde_json::Value::String(run.run_id.to_string()))
                        .collect(),
                )
            })
        }
        Request::Secrets { .. } => unreachable!("answered above"),
    };
    match result {
        Ok(result) => Response {
            ok: true,
            result,
            error: None,
        },
        Err(error) => Response {
            ok: false,
            result: serde_json::Value::Null,
            error: Some(error.to_string()),
        },
    }
}
