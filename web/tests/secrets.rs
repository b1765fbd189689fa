//! Variables and Connections through the API, on a real node with a SQLite store: create,
//! read, change and delete; masked values and the write-only password; who may call them;
//! audit entries without values; 404, 409, 413 and 422; the value limit; values never in clear
//! in the store's files; and values that still open after a restart.

mod common;

use common::Server;
use serde_json::{json, Value};
use weft_storage::vault::SECRET_VALUE_BYTES_MAX;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn variables_round_trip_and_secret_named_values_are_masked() {
    let server = Server::start().await;
    let op = server.login("op").await;
    for (key, value) in [
        ("bucket", "s3://logs"),
        ("db_password", "hunter2-not-shown"),
    ] {
        let (status, body) = server
            .call(
                "POST",
                "/api/v1/variables",
                Some(&op),
                Some(json!({"key": key, "value": value, "description": "for the ETL"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["key"], key);
    }
    let (status, body) = server
        .call("GET", "/api/v1/variables/bucket", Some(&op), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"key": "bucket", "value": "s3://logs", "description": "for the ETL"})
    );
    // A key that names a secret is answered masked, alone and in the list.
    let (_, body) = server
        .call("GET", "/api/v1/variables/db_password", Some(&op), None)
        .await;
    assert_eq!(body["value"], "***");
    let (status, list) = server
        .call("GET", "/api/v1/variables", Some(&op), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["total_entries"], 2);
    assert_eq!(list["variables"][0]["key"], "bucket");
    assert_eq!(list["variables"][1]["value"], "***");
    assert!(!list.to_string().contains("hunter2"), "{list}");
    // ... while the engine's tasks still read it in clear.
    let stored = server
        .engine
        .vault()
        .variable("db_password")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value, "hunter2-not-shown");

    // Paging: limit and offset, total_entries counts every variable.
    let (_, page) = server
        .call("GET", "/api/v1/variables?limit=1&offset=1", Some(&op), None)
        .await;
    assert_eq!(page["total_entries"], 2);
    assert_eq!(page["variables"].as_array().unwrap().len(), 1);
    assert_eq!(page["variables"][0]["key"], "db_password");

    // PATCH the value alone: the description stays; then the description alone, by mask.
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/variables/bucket",
            Some(&op),
            Some(json!({"value": "s3://other"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "s3://other");
    assert_eq!(body["description"], "for the ETL");
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/variables/bucket?update_mask=description",
            Some(&op),
            Some(json!({"key": "bucket", "value": "ignored", "description": "moved"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "s3://other", "the mask leaves the value");
    assert_eq!(body["description"], "moved");
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/variables/bucket",
            Some(&op),
            Some(json!({"description": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["description"], Value::Null);

    // DELETE: 204, then 404.
    for expected in [204, 404] {
        let (status, body) = server
            .call("DELETE", "/api/v1/variables/bucket", Some(&op), None)
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, _) = server
        .call("GET", "/api/v1/variables/bucket", Some(&op), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_round_trip_and_the_password_is_write_only() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/connections",
            Some(&admin),
            Some(json!({
                "connection_id": "warehouse",
                "conn_type": "postgres",
                "host": "db.example.com",
                "schema": "dw",
                "login": "etl",
                "password": "pg-pass-never-shown",
                "port": 5432,
                "extra": r#"{"sslmode":"require","api_key":"extra-key-never-shown"}"#,
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("password").is_none(), "{body}");
    assert_eq!(body["has_password"], true);
    for (status, body) in [
        server
            .call("GET", "/api/v1/connections/warehouse", Some(&admin), None)
            .await,
        server
            .call("GET", "/api/v1/connections", Some(&admin), None)
            .await,
    ] {
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        assert!(!text.contains("pg-pass-never-shown"), "{text}");
        assert!(!text.contains("extra-key-never-shown"), "{text}");
        assert!(
            text.contains("db.example.com") && text.contains("require"),
            "{text}"
        );
    }
    let (_, body) = server
        .call("GET", "/api/v1/connections/warehouse", Some(&admin), None)
        .await;
    assert_eq!(body["conn_type"], "postgres");
    assert_eq!(body["port"], 5432);
    assert_eq!(body["login"], "etl");
    let extra: Value = serde_json::from_str(body["extra"].as_str().unwrap()).unwrap();
    assert_eq!(extra, json!({"sslmode": "require", "api_key": "***"}));

    // A PATCH that does not name the password keeps it; `null` clears a field.
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/connections/warehouse",
            Some(&admin),
            Some(json!({"host": "db2.example.com", "schema": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["host"], "db2.example.com");
    assert_eq!(body["schema"], Value::Null);
    assert_eq!(body["has_password"], true);
    let stored = server
        .engine
        .vault()
        .connection("warehouse")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.password.as_deref(), Some("pg-pass-never-shown"));
    assert_eq!(stored.port, Some(5432));
    // A mask that names the password with none in the body removes it.
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/connections/warehouse?update_mask=password",
            Some(&admin),
            Some(json!({"host": "ignored"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["has_password"], false);
    assert_eq!(body["host"], "db2.example.com");
    // The id cannot change.
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/connections/warehouse",
            Some(&admin),
            Some(json!({"connection_id": "other"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_connection_id");

    for expected in [204, 404] {
        let (status, body) = server
            .call(
                "DELETE",
                "/api/v1/connections/warehouse",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let (_, list) = server
        .call("GET", "/api/v1/connections", Some(&admin), None)
        .await;
    assert_eq!(list, json!({"connections": [], "total_entries": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_and_users_are_refused_and_ops_allowed() {
    let server = Server::start().await;
    let calls: [(&str, &str, Option<Value>); 10] = [
        ("GET", "/api/v1/variables", None),
        ("GET", "/api/v1/variables/k", None),
        (
            "POST",
            "/api/v1/variables",
            Some(json!({"key": "k", "value": "v"})),
        ),
        ("PATCH", "/api/v1/variables/k", Some(json!({"value": "w"}))),
        ("DELETE", "/api/v1/variables/k", None),
        ("GET", "/api/v1/connections", None),
        ("GET", "/api/v1/connections/c", None),
        (
            "POST",
            "/api/v1/connections",
            Some(json!({"connection_id": "c", "conn_type": "http"})),
        ),
        ("PATCH", "/api/v1/connections/c", Some(json!({"host": "h"}))),
        ("DELETE", "/api/v1/connections/c", None),
    ];
    for username in ["viewer", "user"] {
        let token = server.login(username).await;
        for (method, path, body) in &calls {
            let (status, answer) = server.call(method, path, Some(&token), body.clone()).await;
            assert_eq!(status, 403, "{method} {path} as {username}: {answer}");
            assert_eq!(answer["code"], "forbidden");
        }
    }
    // Nothing was written by the refused calls.
    assert!(server.engine.vault().variables().await.unwrap().is_empty());
    // Op may do all of it, in order: the reads of the missing rows come after the creates.
    let op = server.login("op").await;
    let order = [2, 0, 1, 3, 7, 5, 6, 8, 4, 9];
    for index in order {
        let (method, path, body) = &calls[index];
        let (status, answer) = server.call(method, path, Some(&op), body.clone()).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} as op: {status} {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_is_audited_by_key_and_never_with_its_value() {
    let server = Server::start().await;
    let op = server.login("op").await;
    let admin = server.login("admin").await;
    let value = "audit-must-not-see-this";
    let calls: Vec<(&str, &str, Option<Value>, &str, &str)> = vec![
        (
            "POST",
            "/api/v1/variables",
            Some(json!({"key": "api_token", "value": value})),
            "variable.create",
            "api_token",
        ),
        (
            "PATCH",
            "/api/v1/variables/api_token",
            Some(json!({"value": format!("{value}-2")})),
            "variable.update",
            "api_token",
        ),
        (
            "DELETE",
            "/api/v1/variables/api_token",
            None,
            "variable.delete",
            "api_token",
        ),
        (
            "POST",
            "/api/v1/connections",
            Some(json!({"connection_id": "smtp", "conn_type": "smtp", "password": value})),
            "connection.create",
            "smtp",
        ),
        (
            "PATCH",
            "/api/v1/connections/smtp",
            Some(json!({"password": format!("{value}-3")})),
            "connection.update",
            "smtp",
        ),
        (
            "DELETE",
            "/api/v1/connections/smtp",
            None,
            "connection.delete",
            "smtp",
        ),
    ];
    for (method, path, body, action, target) in calls {
        let (status, answer) = server.call(method, path, Some(&op), body).await;
        assert!((200..300).contains(&status), "{method} {path}: {answer}");
        let (_, audit) = server
            .call("GET", "/api/v1/audit?limit=1", Some(&admin), None)
            .await;
        let entry = &audit["entries"][0];
        assert_eq!(entry["action"], action, "{audit}");
        assert_eq!(entry["target"], target);
        assert_eq!(entry["actor"], "op");
        assert!(!entry.to_string().contains(value), "{entry}");
    }
    // The PATCH entries say which fields changed.
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=20", Some(&admin), None)
        .await;
    let update = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["action"] == "connection.update")
        .unwrap();
    assert!(update["detail"].as_str().unwrap().contains("password"));
    // A refused call writes nothing.
    let before = audit["entries"].as_array().unwrap().len();
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/variables",
            Some(&op),
            Some(json!({"key": "", "value": "v"})),
        )
        .await;
    assert_eq!(status, 422);
    let (_, after) = server
        .call("GET", "/api/v1/audit?limit=20", Some(&admin), None)
        .await;
    assert_eq!(after["entries"].as_array().unwrap().len(), before);
    assert_eq!(after["entries"][0], audit["entries"][0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_taken_and_invalid_secrets_are_refused_with_their_status() {
    let server = Server::start().await;
    let op = server.login("op").await;
    let created = json!({"key": "region", "value": "eu"});
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/variables",
            Some(&op),
            Some(created.clone()),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .call("POST", "/api/v1/variables", Some(&op), Some(created))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "conflict");
    assert!(body["message"].as_str().unwrap().contains("PATCH"));
    let connection = json!({"connection_id": "http_api", "conn_type": "http"});
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/connections",
            Some(&op),
            Some(connection.clone()),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .call("POST", "/api/v1/connections", Some(&op), Some(connection))
        .await;
    assert_eq!(status, 409);

    for (method, path) in [
        ("GET", "/api/v1/variables/missing"),
        ("DELETE", "/api/v1/variables/missing"),
        ("GET", "/api/v1/connections/missing"),
        ("DELETE", "/api/v1/connections/missing"),
    ] {
        let (status, body) = server.call(method, path, Some(&op), None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    let (status, _) = server
        .call(
            "PATCH",
            "/api/v1/variables/missing",
            Some(&op),
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(status, 404);

    let long = "k".repeat(251);
    let invalid: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            "/api/v1/variables".into(),
            Some(json!({"key": "", "value": "v"})),
            "invalid_variable_key",
        ),
        (
            "POST",
            "/api/v1/variables".into(),
            Some(json!({"key": long, "value": "v"})),
            "invalid_variable_key",
        ),
        (
            "POST",
            "/api/v1/variables".into(),
            Some(json!({"key": "a\u{1}b", "value": "v"})),
            "invalid_variable_key",
        ),
        (
            "GET",
            format!("/api/v1/variables/{long}"),
            None,
            "invalid_variable_key",
        ),
        (
            "POST",
            "/api/v1/variables".into(),
            Some(json!({"key": "k", "value": "v", "description": "d".repeat(5000)})),
            "invalid_variable",
        ),
        (
            "POST",
            "/api/v1/variables".into(),
            Some(json!({"key": "k"})),
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/connections".into(),
            Some(json!({"connection_id": "c", "conn_type": ""})),
            "invalid_connection",
        ),
        (
            "POST",
            "/api/v1/connections".into(),
            Some(json!({"connection_id": "c", "conn_type": "http", "extra": "{not json"})),
            "invalid_connection",
        ),
        (
            "POST",
            "/api/v1/connections".into(),
            Some(json!({"connection_id": "c", "conn_type": "http", "port": 70000})),
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/connections".into(),
            Some(json!({"connection_id": "c\n", "conn_type": "http"})),
            "invalid_connection_id",
        ),
        (
            "PATCH",
            "/api/v1/variables/region?update_mask=value".into(),
            Some(json!({"description": "no value"})),
            "invalid_variable",
        ),
    ];
    for (method, path, body, code) in invalid {
        let (status, answer) = server.call(method, &path, Some(&op), body).await;
        assert_eq!(status, 422, "{method} {path}: {answer}");
        assert_eq!(answer["code"], code, "{method} {path}: {answer}");
    }
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/connections/http_api?update_mask=connection_id",
            Some(&op),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_update_mask");
    // Nothing of the refused calls was written.
    let variables = server.engine.vault().variables().await.unwrap();
    assert_eq!(variables.len(), 1);
    assert_eq!(variables[0].value, "eu");
    assert_eq!(server.engine.vault().connections().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_at_the_limit_is_kept_and_one_byte_over_is_refused() {
    let server = Server::start().await;
    let op = server.login("op").await;
    let at_limit = "v".repeat(SECRET_VALUE_BYTES_MAX);
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/variables",
            Some(&op),
            Some(json!({"key": "big", "value": at_limit})),
        )
        .await;
    assert_eq!(status, 201, "{}", body["message"]);
    let (status, body) = server
        .call("GET", "/api/v1/variables/big", Some(&op), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["value"].as_str().unwrap().len(),
        SECRET_VALUE_BYTES_MAX
    );

    let over = format!("{at_limit}v");
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/variables",
            json!({"key": "bigger", "value": over}),
        ),
        ("PATCH", "/api/v1/variables/big", json!({"value": over})),
    ] {
        let (status, answer) = server.call(method, path, Some(&op), Some(body)).await;
        assert_eq!(status, 422, "{method} {path}: {}", answer["message"]);
        assert_eq!(answer["code"], "invalid_variable");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains(&SECRET_VALUE_BYTES_MAX.to_string()),
            "{}",
            answer["message"]
        );
    }
    let (_, body) = server
        .call("GET", "/api/v1/variables/big", Some(&op), None)
        .await;
    assert_eq!(
        body["value"].as_str().unwrap(),
        at_limit,
        "the refused PATCH left the value"
    );
    let (status, _) = server
        .call("GET", "/api/v1/variables/bigger", Some(&op), None)
        .await;
    assert_eq!(status, 404);
}

/// Every byte of the store's files (the database and its write-ahead log).
fn store_bytes(server: &Server) -> Vec<u8> {
    let db = server.db_path();
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(content) = std::fs::read(&path) {
            bytes.extend(content);
        }
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_files_never_hold_a_value_in_clear() {
    let server = Server::start().await;
    let op = server.login("op").await;
    let variable_value = "zebra-quartz-9f41-variable";
    let password = "zebra-quartz-77aa-password";
    let host = "zebra-quartz-host.example";
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/variables",
            Some(&op),
            Some(json!({"key": "plain_key", "value": variable_value, "description": "described"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/connections",
            Some(&op),
            Some(json!({"connection_id": "ftp", "conn_type": "ftp", "host": host, "password": password})),
        )
        .await;
    assert_eq!(status, 201);
    // Read back through the API, so that the writes are surely on disk.
    let (_, body) = server
        .call("GET", "/api/v1/variables/plain_key", Some(&op), None)
        .await;
    assert_eq!(body["value"], variable_value);
    let bytes = store_bytes(&server);
    // The files are the store's: its clear-text parts (keys, descriptions) are there.
    assert!(holds(&bytes, "plain_key") && holds(&bytes, "described"));
    for secret in [variable_value, password, host] {
        assert!(
            !holds(&bytes, secret),
            "`{secret}` is in the store's files in clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_open_after_a_restart_with_the_same_keys() {
    let server = Server::start().await;
    let op = server.login("op").await;
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/variables",
            Some(&op),
            Some(json!({"key": "kept", "value": "across restarts"})),
        )
        .await;
    assert_eq!(status, 201);
    let server = server.restart().await;
    let op = server.login("op").await;
    let (status, body) = server
        .call("GET", "/api/v1/variables/kept", Some(&op), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "across restarts");
}
