//! The 401/403 matrix: every endpoint × every role (and no token, and a viewer without a grant
//! for the DAG) against the status it must answer; every answer is checked against the OpenAPI
//! document, and every route of the document must be in the table.

mod common;

use common::{role_user, Server, PASSWORD};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use weft_api_types::Role;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    /// No token needed.
    Public,
    /// A valid token with at least this role.
    AtLeast(Role),
}

struct Endpoint {
    method: &'static str,
    /// The route as the OpenAPI document names it.
    route: &'static str,
    /// The concrete path called.
    path: String,
    body: Option<Value>,
    access: Access,
    /// The DAG the endpoint is about: a viewer without a grant for it gets 403.
    dag: Option<&'static str>,
    /// Status of an allowed call, when it is not the usual 2xx.
    allowed_status: Option<u16>,
    /// Another status an allowed call may answer: a role called after another finds the
    /// fixture taken (409) or gone (404).
    also_status: Option<u16>,
}

fn endpoint(
    method: &'static str,
    route: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    access: Access,
) -> Endpoint {
    Endpoint {
        method,
        route,
        path: path.into(),
        body,
        access,
        dag: None,
        allowed_status: None,
        also_status: None,
    }
}

impl Endpoint {
    fn dag(mut self, dag: &'static str) -> Endpoint {
        self.dag = Some(dag);
        self
    }

    fn answers(mut self, status: u16) -> Endpoint {
        self.allowed_status = Some(status);
        self
    }

    fn or(mut self, status: u16) -> Endpoint {
        self.also_status = Some(status);
        self
    }
}

async fn table(server: &Server, admin_token_id: &str, refresh_token: &str) -> Vec<Endpoint> {
    use Access::*;
    let etl = server.finished_run("etl").await;
    let shell = server.finished_run("shell").await;
    let run = format!("/api/v1/dags/etl/runs/{}", etl.run_id);
    let shell_run = format!("/api/v1/dags/shell/runs/{}", shell.run_id);
    let now = chrono::Utc::now();
    let vault = server.engine.vault();
    let fixture = weft_storage::vault::Variable {
        key: "fixture".into(),
        value: "v".into(),
        description: String::new(),
    };
    vault.set_variable(&fixture, now).await.unwrap();
    let fixture = weft_storage::vault::Connection {
        conn_id: "fixture".into(),
        conn_type: "http".into(),
        password: Some("p".into()),
        ..Default::default()
    };
    vault.set_connection(&fixture, now).await.unwrap();
    vec![
        endpoint("GET", "/health", "/health", None, Public),
        endpoint("GET", "/openapi.json", "/openapi.json", None, Public),
        endpoint(
            "POST",
            "/api/v1/auth/login",
            "/api/v1/auth/login",
            Some(json!({"username": "viewer", "password": PASSWORD})),
            Public,
        ),
        endpoint(
            "POST",
            "/api/v1/auth/refresh",
            "/api/v1/auth/refresh",
            Some(json!({ "refresh_token": refresh_token })),
            Public,
        ),
        endpoint(
            "POST",
            "/api/v1/auth/logout",
            "/api/v1/auth/logout",
            None,
            AtLeast(Role::Viewer),
        ),
        endpoint(
            "GET",
            "/api/v1/me",
            "/api/v1/me",
            None,
            AtLeast(Role::Viewer),
        ),
        endpoint("GET", "/metrics", "/metrics", None, AtLeast(Role::Viewer)),
        endpoint(
            "GET",
            "/api/v1/dags",
            "/api/v1/dags",
            None,
            AtLeast(Role::Viewer),
        ),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}",
            "/api/v1/dags/etl",
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "PATCH",
            "/api/v1/dags/{dag_id}",
            "/api/v1/dags/toggle",
            Some(json!({"paused": true})),
            AtLeast(Role::User),
        )
        .dag("toggle"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/versions",
            "/api/v1/dags/etl/versions",
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/code",
            "/api/v1/dags/etl/code",
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/grid",
            "/api/v1/dags/etl/grid",
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/runs",
            "/api/v1/dags/etl/runs",
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "POST",
            "/api/v1/dags/{dag_id}/runs",
            "/api/v1/dags/etl/runs",
            Some(json!({"conf": {"count": 2}})),
            AtLeast(Role::User),
        )
        .dag("etl"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/runs/{run_id}",
            run.clone(),
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
            format!("{run}/tasks/extract"),
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "GET",
            "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs/{try_number}",
            format!("{run}/tasks/extract/logs/1"),
            None,
            AtLeast(Role::Viewer),
        )
        .dag("etl"),
        endpoint(
            "POST",
            "/api/v1/dags/{dag_id}/runs/{run_id}/clear",
            format!("{run}/clear"),
            Some(json!({"task_ids": ["transform"], "downstream": true, "dry_run": true})),
            AtLeast(Role::User),
        )
        .dag("etl"),
        endpoint(
            "POST",
            "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/state",
            format!("{shell_run}/tasks/say/state"),
            Some(json!({"state": "success"})),
            AtLeast(Role::User),
        ),
        endpoint(
            "POST",
            "/api/v1/dags/{dag_id}/backfills",
            "/api/v1/dags/daily/backfills",
            Some(json!({"from": "2024-01-01", "to": "2024-01-03", "dry_run": true})),
            AtLeast(Role::Op),
        ),
        endpoint(
            "GET",
            "/api/v1/import-errors",
            "/api/v1/import-errors",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "GET",
            "/api/v1/pools",
            "/api/v1/pools",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "POST",
            "/api/v1/pools",
            "/api/v1/pools",
            Some(json!({"name": "reports", "slots": 3})),
            AtLeast(Role::Op),
        ),
        endpoint(
            "GET",
            "/api/v1/workers",
            "/api/v1/workers",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "GET",
            "/api/v1/cells",
            "/api/v1/cells",
            None,
            AtLeast(Role::Viewer),
        ),
        endpoint(
            "GET",
            "/api/v1/audit",
            "/api/v1/audit?limit=5",
            None,
            AtLeast(Role::Admin),
        ),
        endpoint(
            "GET",
            "/api/v1/users",
            "/api/v1/users",
            None,
            AtLeast(Role::Admin),
        ),
        endpoint(
            "POST",
            "/api/v1/users",
            "/api/v1/users",
            Some(json!({"username": "newcomer", "password": PASSWORD, "role": "viewer"})),
            AtLeast(Role::Admin),
        ),
        endpoint(
            "PATCH",
            "/api/v1/users/{username}",
            "/api/v1/users/viewer",
            Some(json!({"dag_grants": []})),
            AtLeast(Role::Admin),
        ),
        endpoint(
            "GET",
            "/api/v1/tokens",
            "/api/v1/tokens",
            None,
            AtLeast(Role::Viewer),
        ),
        endpoint(
            "POST",
            "/api/v1/tokens",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "expires_in_days": 30})),
            AtLeast(Role::Viewer),
        ),
        // Someone else's token: only an admin may revoke it (roles are tried admin last).
        endpoint(
            "DELETE",
            "/api/v1/tokens/{id}",
            format!("/api/v1/tokens/{admin_token_id}"),
            None,
            AtLeast(Role::Admin),
        ),
        endpoint(
            "GET",
            "/api/v1/variables",
            "/api/v1/variables",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "POST",
            "/api/v1/variables",
            "/api/v1/variables",
            Some(json!({"key": "matrix", "value": "v"})),
            AtLeast(Role::Op),
        )
        .or(409),
        endpoint(
            "GET",
            "/api/v1/variables/{variable_key}",
            "/api/v1/variables/fixture",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "PATCH",
            "/api/v1/variables/{variable_key}",
            "/api/v1/variables/fixture",
            Some(json!({"value": "w"})),
            AtLeast(Role::Op),
        ),
        endpoint(
            "DELETE",
            "/api/v1/variables/{variable_key}",
            "/api/v1/variables/matrix",
            None,
            AtLeast(Role::Op),
        )
        .or(404),
        endpoint(
            "GET",
            "/api/v1/connections",
            "/api/v1/connections",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "POST",
            "/api/v1/connections",
            "/api/v1/connections",
            Some(json!({"connection_id": "matrix", "conn_type": "http", "password": "p"})),
            AtLeast(Role::Op),
        )
        .or(409),
        endpoint(
            "GET",
            "/api/v1/connections/{connection_id}",
            "/api/v1/connections/fixture",
            None,
            AtLeast(Role::Op),
        ),
        endpoint(
            "PATCH",
            "/api/v1/connections/{connection_id}",
            "/api/v1/connections/fixture",
            Some(json!({"host": "h"})),
            AtLeast(Role::Op),
        ),
        endpoint(
            "DELETE",
            "/api/v1/connections/{connection_id}",
            "/api/v1/connections/matrix",
            None,
            AtLeast(Role::Op),
        )
        .or(404),
        // Authentication comes before the WebSocket handshake check.
        endpoint(
            "GET",
            "/api/v1/stream",
            "/api/v1/stream",
            None,
            AtLeast(Role::Viewer),
        )
        .answers(400),
    ]
}

/// The schema of the documented response, with the document's components beside it so that
/// `$ref`s resolve.
fn response_schema(document: &Value, route: &str, method: &str, status: u16) -> Option<Value> {
    let responses = &document["paths"][route][method.to_lowercase()]["responses"];
    let response = responses.get(status.to_string())?;
    let schema = response["content"]["application/json"]["schema"].clone();
    Some(json!({
        "components": document["components"],
        "allOf": [if schema.is_null() { json!({}) } else { schema }],
    }))
}

fn check_against_document(
    document: &Value,
    endpoint: &Endpoint,
    status: u16,
    body: &Value,
    failures: &mut Vec<String>,
) {
    let label = format!("{} {} -> {status}", endpoint.method, endpoint.path);
    let Some(schema) = response_schema(document, endpoint.route, endpoint.method, status) else {
        failures.push(format!("{label}: status not documented"));
        return;
    };
    if body.is_string() || body.is_null() {
        return; // not JSON (metrics text, 204 no content)
    }
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        failures.push(format!(
            "{label}: body does not match the document: {errors:?}"
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_each_role_as_documented() {
    // The matrix signs in again after each sign-out, more often than the default limit.
    let server = Server::start_with(|config| config.login_attempts_per_minute = 1_000).await;
    let admin = server.login("admin").await;
    let (status, created) = server
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"name": "admin script"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let admin_token_id = created["id"].as_str().unwrap().to_string();
    let (_, login) = server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "op", "password": PASSWORD})),
        )
        .await;
    let refresh_token = login["refresh_token"].as_str().unwrap().to_string();
    let endpoints = table(&server, &admin_token_id, &refresh_token).await;
    let (_, document) = server.call("GET", "/openapi.json", None, None).await;

    // Every route of the document is in the table, and nothing else.
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(route, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), route.clone()))
        })
        .collect();
    let tabled: BTreeSet<(String, String)> = endpoints
        .iter()
        .map(|e| (e.method.to_string(), e.route.to_string()))
        .collect();
    assert_eq!(
        documented, tabled,
        "the table must list every documented route"
    );

    let mut tokens = Vec::new();
    for role in Role::ALL {
        tokens.push((
            Some(role),
            role_user(role),
            server.login(role_user(role)).await,
        ));
    }
    let granted = server.login("granted").await;
    let mut failures = Vec::new();
    for endpoint in &endpoints {
        // No token.
        let (status, body) = server
            .call(endpoint.method, &endpoint.path, None, endpoint.body.clone())
            .await;
        let expected = match endpoint.access {
            Access::Public => 200,
            Access::AtLeast(_) => 401,
        };
        if status != expected {
            failures.push(format!(
                "{} {} without a token: {status}, expected {expected}: {body}",
                endpoint.method, endpoint.path
            ));
        }
        if expected == 401 && body["code"] != "unauthenticated" {
            failures.push(format!(
                "{} {}: 401 without a JSON code: {body}",
                endpoint.method, endpoint.path
            ));
        }
        check_against_document(&document, endpoint, status, &body, &mut failures);
        let Access::AtLeast(minimum) = endpoint.access else {
            continue;
        };
        // Every role, lowest first, so that the admin's call (which may consume the fixture,
        // as revoking a token does) comes last.
        for (role, username, token) in tokens.iter_mut() {
            let role = role.unwrap();
            let (status, body) = server
                .call(
                    endpoint.method,
                    &endpoint.path,
                    Some(token),
                    endpoint.body.clone(),
                )
                .await;
            // Signing out ends the session: the next endpoints need a new one.
            if endpoint.path == "/api/v1/auth/logout" {
                *token = server.login(username).await;
            }
            let allowed = role >= minimum;
            let ok = if !allowed {
                status == 403 && body["code"] == "forbidden"
            } else if let Some(wanted) = endpoint.allowed_status {
                status == wanted
            } else {
                (200..300).contains(&status) || endpoint.also_status == Some(status)
            };
            if !ok {
                failures.push(format!(
                    "{} {} as {username} ({role}): {status}, expected {}: {body}",
                    endpoint.method,
                    endpoint.path,
                    if allowed { "2xx" } else { "403" }
                ));
            }
            check_against_document(&document, endpoint, status, &body, &mut failures);
        }
        // A viewer whose grants do not include the DAG.
        if let Some(dag) = endpoint.dag {
            if minimum == Role::Viewer {
                let (status, body) = server
                    .call(
                        endpoint.method,
                        &endpoint.path,
                        Some(&granted),
                        endpoint.body.clone(),
                    )
                    .await;
                if status != 403 {
                    failures.push(format!(
                        "{} {} as a viewer without a grant for `{dag}`: {status}: {body}",
                        endpoint.method, endpoint.path
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_granted_viewer_lists_only_its_dags() {
    let server = Server::start().await;
    let token = server.login("granted").await;
    let (status, body) = server.call("GET", "/api/v1/dags", Some(&token), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["dags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dag| dag["dag_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["shell"]);
    assert_eq!(body["total"], 1);
}
