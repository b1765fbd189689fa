//! What the API does beyond access control: bad input is refused with a clear JSON error and
//! changes nothing; sessions expire and refresh, and a session ended stays ended after a
//! restart; sign-in is rate limited; API tokens work until revoked; every mutating call is
//! audited; /metrics names the engine's metrics; the grid pages through runs.

mod common;

use common::{Server, PASSWORD, SECRET};
use serde_json::{json, Value};
use weft_web::auth::{Claims, Keys, TokenKind};

/// Everything a refused request could have changed.
async fn snapshot(server: &Server) -> Value {
    let store = server.store();
    let mut runs = Vec::new();
    for dag in store.dags().await.unwrap() {
        for run in store.runs(&dag.dag_id, 1000).await.unwrap() {
            runs.push(json!([run.key.to_string(), run.state.as_str()]));
        }
    }
    let dags: Vec<Value> = store
        .dags()
        .await
        .unwrap()
        .into_iter()
        .map(|dag| json!([dag.dag_id, dag.is_paused]))
        .collect();
    let users: Vec<Value> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|user| json!([user.username, user.role, user.dag_grants, user.disabled]))
        .collect();
    let pools: Vec<Value> = store
        .pools()
        .await
        .unwrap()
        .into_iter()
        .map(|pool| json!([pool.name, pool.slots]))
        .collect();
    json!({
        "runs": runs, "dags": dags, "users": users, "pools": pools,
        "tokens": store.api_tokens().await.unwrap().len(),
        "audit": store.audit(1).await.unwrap().first().map(|entry| entry.id),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_bodies_get_a_clear_4xx_and_change_nothing() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    let run = server.finished_run("etl").await;
    let run_path = format!("/api/v1/dags/etl/runs/{}", run.run_id);
    let cases: Vec<(&str, String, Value, u16, &str, &str)> = vec![
        (
            "PATCH",
            "/api/v1/dags/toggle".into(),
            json!({"paused": "yes"}),
            422,
            "invalid_body",
            "paused",
        ),
        (
            "PATCH",
            "/api/v1/dags/toggle".into(),
            json!({"pasued": true}),
            422,
            "invalid_body",
            "pasued",
        ),
        (
            "POST",
            "/api/v1/dags/etl/runs".into(),
            json!({"conf": {"count": 0}}),
            422,
            "invalid_conf",
            "count",
        ),
        (
            "POST",
            "/api/v1/dags/etl/runs".into(),
            json!({"conf": [1, 2]}),
            422,
            "invalid_conf",
            "object",
        ),
        (
            "POST",
            "/api/v1/dags/etl/runs".into(),
            json!({"logical_date": "yesterday"}),
            422,
            "invalid_date",
            "logical_date",
        ),
        (
            "POST",
            "/api/v1/dags/nope/runs".into(),
            json!({}),
            404,
            "not_found",
            "nope",
        ),
        (
            "POST",
            format!("{run_path}/clear"),
            json!({"task_ids": ["ghost"]}),
            422,
            "unknown_task",
            "ghost",
        ),
        (
            "POST",
            format!("{run_path}/tasks/load/state"),
            json!({"state": "running"}),
            422,
            "invalid_body",
            "state",
        ),
        (
            "POST",
            "/api/v1/dags/daily/backfills".into(),
            json!({"from": "2024-02-01", "to": "2024-01-01"}),
            422,
            "invalid_range",
            "after",
        ),
        (
            "POST",
            "/api/v1/dags/etl/backfills".into(),
            json!({"from": "2024-01-01", "to": "2024-01-02"}),
            422,
            "no_schedule",
            "schedule",
        ),
        (
            "POST",
            "/api/v1/pools".into(),
            json!({"name": "bad name!", "slots": 1}),
            422,
            "invalid_pool_name",
            "pool",
        ),
        (
            "POST",
            "/api/v1/pools".into(),
            json!({"name": "p", "slots": -1}),
            422,
            "invalid_body",
            "slots",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "x", "password": "short", "role": "viewer"}),
            422,
            "invalid_password",
            "8",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "x y", "password": PASSWORD, "role": "viewer"}),
            422,
            "invalid_username",
            "x y",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "x", "password": PASSWORD, "role": "king"}),
            422,
            "invalid_body",
            "role",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "viewer", "password": PASSWORD, "role": "viewer"}),
            409,
            "conflict",
            "exists",
        ),
        (
            "PATCH",
            "/api/v1/users/admin".into(),
            json!({"disabled": true}),
            422,
            "self_lockout",
            "yourself",
        ),
        (
            "PATCH",
            "/api/v1/users/ghost".into(),
            json!({"role": "op"}),
            404,
            "not_found",
            "ghost",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!({"name": ""}),
            422,
            "invalid_token_name",
            "name",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!({"name": "t", "expires_in_days": 0}),
            422,
            "invalid_expiry",
            "expires_in_days",
        ),
        (
            "POST",
            "/api/v1/pools".into(),
            json!({"name": "wordy", "slots": 1, "description": "x".repeat(4 * 1024 + 1)}),
            422,
            "invalid_pool_description",
            "description",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "many", "password": PASSWORD, "role": "viewer",
                   "dag_grants": (0..1001).map(|i| format!("dag_{i}")).collect::<Vec<_>>()}),
            422,
            "too_many_grants",
            "1001",
        ),
        (
            "PATCH",
            "/api/v1/users/viewer".into(),
            json!({"dag_grants": (0..1001).map(|i| format!("dag_{i}")).collect::<Vec<_>>()}),
            422,
            "too_many_grants",
            "1001",
        ),
        (
            "PATCH",
            "/api/v1/users/viewer".into(),
            json!({"dag_grants": ["not a dag id!"]}),
            422,
            "invalid_grant",
            "not a dag id!",
        ),
        (
            "POST",
            "/api/v1/dags/etl/runs".into(),
            json!({"logical_date": "0001-01-01T00:00:00Z"}),
            422,
            "invalid_date",
            "1900",
        ),
        (
            "POST",
            "/api/v1/dags/etl/runs".into(),
            json!({"logical_date": "9999-12-31"}),
            422,
            "invalid_date",
            "2999",
        ),
        (
            "POST",
            "/api/v1/dags/daily/backfills".into(),
            json!({"from": "1800-01-01", "to": "2024-01-02"}),
            422,
            "invalid_date",
            "from",
        ),
        (
            "POST",
            "/api/v1/dags/daily/backfills".into(),
            json!({"from": "2024-01-01", "to": "3000-01-01", "dry_run": true}),
            422,
            "invalid_date",
            "to",
        ),
    ];
    let before = snapshot(&server).await;
    for (method, path, body, status, code, mentions) in cases {
        let (got, answer) = server
            .call(method, &path, Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert_eq!(answer["code"], code, "{method} {path} {body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{method} {path}: `{message}` should mention `{mentions}`"
        );
    }
    // Malformed JSON and a wrong content type.
    let response = server
        .client
        .post(server.url("/api/v1/dags/etl/runs"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "invalid_json");
    let response = server
        .client
        .post(server.url("/api/v1/dags/etl/runs"))
        .bearer_auth(&admin)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    // An oversize body.
    let (status, _, answer) = oversize_post(&server, "/api/v1/dags/etl/runs", &admin).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("too_large"), "{answer}");
    assert_eq!(
        snapshot(&server).await,
        before,
        "refused requests changed the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_expire_refresh_and_cookies_work() {
    let server = Server::start().await;
    let keys = Keys::new(&SECRET).unwrap();
    let now = weft_web::auth::now_s();
    let expired = keys.sign(&Claims {
        sub: "admin".into(),
        kind: TokenKind::Access,
        iat: now - 120,
        exp: now - 60,
        epoch: 0,
        stamp: String::new(),
    });
    let (status, body) = server.call("GET", "/api/v1/me", Some(&expired), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated");
    assert!(body["message"].as_str().unwrap().contains("expired"));
    // A token signed with another key is refused too.
    let forged = Keys::new(&[9u8; 32]).unwrap().sign(&Claims {
        sub: "admin".into(),
        kind: TokenKind::Access,
        iat: now,
        exp: now + 600,
        epoch: 0,
        stamp: String::new(),
    });
    assert_eq!(
        server
            .call("GET", "/api/v1/me", Some(&forged), None)
            .await
            .0,
        401
    );

    // Sign in: cookies are set, and the session cookie alone authenticates.
    let response = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "user", "password": PASSWORD}))
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
    let session = cookies
        .iter()
        .find(|c| c.starts_with("weft_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(cookies.iter().any(|c| c.starts_with("weft_refresh=")));
    let login: Value = response.json().await.unwrap();
    assert_eq!(login["user"]["role"], "user");
    assert_eq!(login["expires_in"], 900);
    let cookie_value = session.split(';').next().unwrap().to_string();
    let me: Value = server
        .client
        .get(server.url("/api/v1/me"))
        .header("cookie", &cookie_value)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "user");

    // Refresh with the body; a refresh token is no access token.
    let refresh = login["refresh_token"].as_str().unwrap();
    assert_eq!(
        server
            .call("GET", "/api/v1/me", Some(refresh), None)
            .await
            .0,
        401
    );
    let (status, renewed) = server
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    let access = renewed["access_token"].as_str().unwrap();
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(access), None).await.0,
        200
    );
    // And with the cookie.
    let response = server
        .client
        .post(server.url("/api/v1/auth/refresh"))
        .header("cookie", format!("weft_refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A disabled user's tokens stop working at once.
    let admin = server.login("admin").await;
    let (status, _) = server
        .call(
            "PATCH",
            "/api/v1/users/user",
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(access), None).await.0,
        401
    );
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "user", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalid_credentials");
}

/// Signs `username` in with `password`; returns (access, refresh).
async fn sign_in(server: &Server, username: &str, password: &str) -> (String, String) {
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn refresh_status(server: &Server, refresh: &str) -> u16 {
    server
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_out_password_change_and_disabling_end_every_session() {
    let server = Server::start().await;
    let admin = server.login("admin").await;

    // Signing out ends the access and refresh tokens of every session of the user.
    let (access, refresh) = sign_in(&server, "user", PASSWORD).await;
    let (other_access, other_refresh) = sign_in(&server, "user", PASSWORD).await;
    let (status, _) = server
        .call("POST", "/api/v1/auth/logout", Some(&access), None)
        .await;
    assert_eq!(status, 204);
    for token in [&access, &other_access] {
        let (status, body) = server.call("GET", "/api/v1/me", Some(token), None).await;
        assert_eq!(status, 401, "an access token outlived the sign-out: {body}");
        assert!(body["message"].as_str().unwrap().contains("sign in"));
    }
    for token in [&refresh, &other_refresh] {
        assert_eq!(refresh_status(&server, token).await, 401);
    }
    // Other users keep their sessions; a new sign-in works.
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&admin), None).await.0,
        200
    );
    let (access, refresh) = sign_in(&server, "user", PASSWORD).await;
    assert_eq!(
        server
            .call("GET", "/api/v1/me", Some(&access), None)
            .await
            .0,
        200
    );

    // A new password ends the sessions made with the old one.
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/users/user",
            Some(&admin),
            Some(json!({"password": "a brand new password"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .call("GET", "/api/v1/me", Some(&access), None)
            .await
            .0,
        401
    );
    assert_eq!(refresh_status(&server, &refresh).await, 401);

    // Disabling ends them too, and enabling again does not bring them back.
    let (access, refresh) = sign_in(&server, "user", "a brand new password").await;
    for disabled in [true, false] {
        let (status, _) = server
            .call(
                "PATCH",
                "/api/v1/users/user",
                Some(&admin),
                Some(json!({ "disabled": disabled })),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        server
            .call("GET", "/api/v1/me", Some(&access), None)
            .await
            .0,
        401
    );
    assert_eq!(refresh_status(&server, &refresh).await, 401);
    let (access, _) = sign_in(&server, "user", "a brand new password").await;
    assert_eq!(
        server
            .call("GET", "/api/v1/me", Some(&access), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_outs_survive_a_restart() {
    let server = Server::start().await;
    // `user` signs in twice and signs out once: both sessions end. `viewer` does not sign out.
    let (ended, ended_refresh) = sign_in(&server, "user", PASSWORD).await;
    let (other, _) = sign_in(&server, "user", PASSWORD).await;
    let (kept, _) = sign_in(&server, "viewer", PASSWORD).await;
    let (status, _) = server
        .call("POST", "/api/v1/auth/logout", Some(&other), None)
        .await;
    assert_eq!(status, 204);
    let stored = server.store().user("user").await.unwrap().unwrap();
    assert!(stored.session_epoch >= 1, "the sign-out is in the store");

    let server = server.restart().await;
    for token in [&ended, &other] {
        let (status, body) = server.call("GET", "/api/v1/me", Some(token), None).await;
        assert_eq!(status, 401, "a signed-out session came back: {body}");
    }
    assert_eq!(refresh_status(&server, &ended_refresh).await, 401);
    // A session that was not ended still works, and a new sign-in does.
    let (status, _) = server.call("GET", "/api/v1/me", Some(&kept), None).await;
    assert_eq!(status, 200);
    let (fresh, _) = sign_in(&server, "user", PASSWORD).await;
    let (status, body) = server.call("GET", "/api/v1/me", Some(&fresh), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_changes_and_disabling_survive_a_restart() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    let (user_token, _) = sign_in(&server, "user", PASSWORD).await;
    let (viewer_token, viewer_refresh) = sign_in(&server, "viewer", PASSWORD).await;
    // A new password for `user`; `viewer` disabled and enabled again, which does not bring
    // its sessions back.
    for (username, patch) in [
        ("user", json!({"password": "another good password"})),
        ("viewer", json!({"disabled": true})),
        ("viewer", json!({"disabled": false})),
    ] {
        let (status, body) = server
            .call(
                "PATCH",
                &format!("/api/v1/users/{username}"),
                Some(&admin),
                Some(patch),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let server = server.restart().await;
    for token in [&user_token, &viewer_token] {
        let (status, _) = server.call("GET", "/api/v1/me", Some(token), None).await;
        assert_eq!(status, 401);
    }
    assert_eq!(refresh_status(&server, &viewer_refresh).await, 401);
    let (fresh, _) = sign_in(&server, "user", "another good password").await;
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&fresh), None).await.0,
        200
    );
    let (fresh, _) = sign_in(&server, "viewer", PASSWORD).await;
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&fresh), None).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_is_rate_limited() {
    let server = Server::start_with(|config| config.login_attempts_per_minute = 3).await;
    let wrong = json!({"username": "admin", "password": "wrong password"});
    for _ in 0..3 {
        let (status, body) = server
            .call("POST", "/api/v1/auth/login", None, Some(wrong.clone()))
            .await;
        assert_eq!(status, 401, "{body}");
    }
    let right = json!({"username": "admin", "password": PASSWORD});
    let (status, body) = server
        .call("POST", "/api/v1/auth/login", None, Some(right))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("wait a minute"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_sign_ins_are_limited_per_user_too() {
    let server = Server::start_with(|config| {
        config.login_attempts_per_minute = 100;
        config.login_failures_per_user_per_minute = 3;
    })
    .await;
    let wrong = json!({"username": "admin", "password": "wrong password"});
    for _ in 0..3 {
        let (status, body) = server
            .call("POST", "/api/v1/auth/login", None, Some(wrong.clone()))
            .await;
        assert_eq!(status, 401, "{body}");
    }
    let right = json!({"username": "admin", "password": PASSWORD});
    let (status, body) = server
        .call("POST", "/api/v1/auth/login", None, Some(right))
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(body["message"].as_str().unwrap().contains("`admin`"));
    // Other users, from the same address, are not held up; successes are not counted.
    for _ in 0..5 {
        sign_in(&server, "viewer", PASSWORD).await;
    }
}

/// The time one sign-in takes (the fastest of three, to keep noise out).
async fn sign_in_time(server: &Server, username: &str) -> std::time::Duration {
    let mut fastest = std::time::Duration::MAX;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (status, _) = server
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"username": username, "password": "wrong password"})),
            )
            .await;
        assert_eq!(status, 401);
        fastest = fastest.min(started.elapsed());
    }
    fastest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_user_costs_as_much_as_a_wrong_password() {
    let server = Server::start_with(|config| {
        config.login_attempts_per_minute = 100;
        config.login_failures_per_user_per_minute = 100;
    })
    .await;
    // Warm the dummy hash up, which is made on first use.
    sign_in_time(&server, "nobody").await;
    let wrong_password = sign_in_time(&server, "admin").await;
    let unknown_user = sign_in_time(&server, "nobody").await;
    // An argon2 verification dominates both; without one the unknown user answers in a small
    // fraction of the time.
    assert!(
        unknown_user * 2 >= wrong_password,
        "unknown user {unknown_user:?}, wrong password {wrong_password:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_is_rate_limited_per_user() {
    let server = Server::start_with(|config| config.api_requests_per_minute = 5).await;
    let token = server.login("viewer").await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(server.call("GET", "/api/v1/me", Some(&token), None).await.0);
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_tokens_act_as_their_owner_until_revoked() {
    let server = Server::start().await;
    let op = server.login("op").await;
    let (status, created) = server
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&op),
            Some(json!({"name": "nightly script"})),
        )
        .await;
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("weft_"));
    // Only a hash is stored.
    let stored = server.store().api_tokens().await.unwrap();
    assert!(stored.iter().all(|row| !token.contains(&row.secret_hash)));
    let (status, me) = server.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!((status, me["username"].as_str()), (200, Some("op")));
    assert_eq!(
        server
            .call("GET", "/api/v1/pools", Some(&token), None)
            .await
            .0,
        200
    );
    // A wrong secret with a real id is refused.
    let id = created["id"].as_str().unwrap();
    let wrong = format!("weft_{id}_{}", "0".repeat(64));
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&wrong), None).await.0,
        401
    );
    let (status, _) = server
        .call("DELETE", &format!("/api/v1/tokens/{id}"), Some(&op), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = server.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mutating_call_writes_an_audit_entry() {
    let server = Server::start().await;
    let mut admin = server.login("admin").await;
    let run = server.finished_run("etl").await;
    let run_path = format!("/api/v1/dags/etl/runs/{}", run.run_id);
    let calls: Vec<(&str, String, Value, &str)> = vec![
        (
            "PATCH",
            "/api/v1/dags/toggle".into(),
            json!({"paused": true}),
            "dag.pause",
        ),
        (
            "PATCH",
            "/api/v1/dags/toggle".into(),
            json!({"paused": false}),
            "dag.unpause",
        ),
        (
            "POST",
            "/api/v1/dags/etl/runs".into(),
            json!({"conf": {"count": 4}}),
            "run.trigger",
        ),
        (
            "POST",
            format!("{run_path}/clear"),
            json!({"task_ids": ["load"]}),
            "run.clear",
        ),
        (
            "POST",
            format!("{run_path}/tasks/extract/state"),
            json!({"state": "failed"}),
            "task.mark",
        ),
        (
            "POST",
            "/api/v1/dags/daily/backfills".into(),
            json!({"from": "2024-01-01", "to": "2024-01-02"}),
            "dag.backfill",
        ),
        (
            "POST",
            "/api/v1/pools".into(),
            json!({"name": "reports", "slots": 2}),
            "pool.put",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "ann", "password": PASSWORD, "role": "op"}),
            "user.create",
        ),
        (
            "PATCH",
            "/api/v1/users/ann".into(),
            json!({"role": "user"}),
            "user.update",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!({"name": "ci"}),
            "token.create",
        ),
        (
            "POST",
            "/api/v1/auth/logout".into(),
            Value::Null,
            "auth.logout",
        ),
    ];
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    for (method, path, body, action) in &calls {
        let body = (!body.is_null()).then(|| body.clone());
        let (status, answer) = server.call(method, path, Some(&admin), body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        // Signing out ends the session: read the log in a new one, past its own sign-in.
        let newest = if *action == "auth.logout" {
            admin = server.login("admin").await;
            1
        } else {
            0
        };
        let (_, audit) = server
            .call("GET", "/api/v1/audit?limit=2", Some(&admin), None)
            .await;
        let entry = &audit["entries"][newest];
        assert_eq!(entry["action"], *action, "{method} {path}: {audit}");
        assert_eq!(entry["actor"], "admin");
        assert_eq!(entry["from"], "127.0.0.1");
        let at = chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap()).unwrap();
        assert!(at >= started, "{entry}");
    }
    // Revoking the token is audited too, and so is a failed sign-in.
    let (_, tokens) = server
        .call("GET", "/api/v1/tokens", Some(&admin), None)
        .await;
    let id = tokens["tokens"][0]["id"].as_str().unwrap();
    server
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=1", Some(&admin), None)
        .await;
    assert_eq!(audit["entries"][0]["action"], "token.delete");
    server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "nope nope"})),
        )
        .await;
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=1", Some(&admin), None)
        .await;
    assert_eq!(audit["entries"][0]["action"], "auth.login_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_prometheus_text_naming_the_engine_metrics() {
    let server = Server::start().await;
    server.finished_run("etl").await;
    let viewer = server.login("viewer").await;
    let (status, body) = server.call("GET", "/metrics", Some(&viewer), None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" TYPE ") || comment.starts_with(" HELP "),
                "bad comment line: {line}"
            );
            continue;
        }
        // `name{labels} value` or `name value`.
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        assert!(value.parse::<f64>().is_ok(), "bad value in: {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        names.insert(name.to_string());
    }
    for wanted in [
        "weft_store_writes_total",
        "weft_task_attempts_total",
        "weft_dispatched_total",
        "weft_store_commit_seconds",
    ] {
        assert!(
            names.iter().any(|name| name.starts_with(wanted)),
            "{wanted} missing from /metrics: {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grid_pages_through_runs_newest_first() {
    let server = Server::start().await;
    let viewer = server.login("viewer").await;
    let mut runs = Vec::new();
    for day in 1..=5 {
        let date = format!("2024-03-0{day}T00:00:00Z");
        let at = chrono::DateTime::parse_from_rfc3339(&date)
            .unwrap()
            .to_utc();
        let run = server
            .engine
            .trigger_at("etl", Some(at), json!({}))
            .await
            .unwrap();
        server.wait(&run).await;
        runs.push(run.run_id);
    }
    let (status, first) = server
        .call("GET", "/api/v1/dags/etl/grid?limit=2", Some(&viewer), None)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["tasks"], json!(["extract", "transform", "load"]));
    let ids = |page: &Value| -> Vec<String> {
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), vec![runs[4].clone(), runs[3].clone()]);
    assert_eq!(first["cells"][0], json!(["success", "success", "success"]));
    let cursor = first["next_before"].as_str().unwrap();
    let (_, second) = server
        .call(
            "GET",
            &format!("/api/v1/dags/etl/grid?limit=2&before={cursor}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(ids(&second), vec![runs[2].clone(), runs[1].clone()]);
    let cursor = second["next_before"].as_str().unwrap();
    let (_, last) = server
        .call(
            "GET",
            &format!("/api/v1/dags/etl/grid?limit=2&before={cursor}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(ids(&last), vec![runs[0].clone()]);
    assert!(last["next_before"].is_null());
    // The DAG list shows the same runs, newest first, with durations for the sparkline.
    let (_, list) = server
        .call("GET", "/api/v1/dags?tag=nightly", Some(&viewer), None)
        .await;
    assert_eq!(list["total"], 1);
    let etl = &list["dags"][0];
    assert_eq!(etl["recent_runs"][0]["run_id"], json!(runs[4]));
    assert_eq!(etl["recent_durations_ms"].as_array().unwrap().len(), 5);
    assert_eq!(etl["owner"], "data");
    let (_, none) = server
        .call("GET", "/api/v1/dags?search=ZZZ", Some(&viewer), None)
        .await;
    assert_eq!(none["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_log_reads_in_chunks_until_complete() {
    let server = Server::start().await;
    let viewer = server.login("viewer").await;
    let run = server.finished_run("shell").await;
    let path = format!("/api/v1/dags/shell/runs/{}/tasks/say/logs/1", run.run_id);
    let (status, chunk) = server.call("GET", &path, Some(&viewer), None).await;
    assert_eq!(status, 200, "{chunk}");
    let content = chunk["content"].as_str().unwrap();
    assert!(content.contains("hello\nworld"), "{content:?}");
    assert_eq!(chunk["complete"], true);
    let next = chunk["next_offset"].as_u64().unwrap();
    let (_, rest) = server
        .call("GET", &format!("{path}?offset={next}"), Some(&viewer), None)
        .await;
    assert_eq!(rest["content"], "");
    assert_eq!(rest["next_offset"], next);
    let (status, _) = server
        .call(
            "GET",
            &path.replace("/logs/1", "/logs/2"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// Asserts that a response is a JSON error with `status` and `code`.
async fn assert_json_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status, "{}", response.url());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    let url = response.url().to_string();
    let text = response.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{url}: {content_type} {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], code, "{url}: {body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_that_are_not_objects_are_refused() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    let before = snapshot(&server).await;
    // serde reads a struct from an array field by field: this one would sign in.
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!(["admin", PASSWORD])),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_body")));
    for (method, path, value) in [
        ("POST", "/api/v1/pools", json!(["p", 3, ""])),
        ("PATCH", "/api/v1/dags/toggle", json!([true])),
        ("PATCH", "/api/v1/dags/toggle", json!("paused")),
        ("PATCH", "/api/v1/dags/toggle", json!(1)),
        ("PATCH", "/api/v1/dags/toggle", Value::Null),
        ("POST", "/api/v1/users", json!(["x", PASSWORD, "admin"])),
        ("POST", "/api/v1/auth/refresh", json!(["token"])),
    ] {
        let (status, body) = server.call(method, path, Some(&admin), Some(value)).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert_eq!(body["code"], "invalid_body", "{method} {path}: {body}");
    }
    assert_eq!(snapshot(&server).await, before);
}

/// Sends the head of a POST that declares a 2 MiB JSON body, and reads the answer:
/// (status, head, body).
async fn oversize_post(server: &Server, path: &str, token: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
        2 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Read until the answer is complete (the connection stays open: the server may still
    // expect the body it did not read).
    let mut answer = Vec::new();
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        match length {
            Some(length) => body.len() >= length,
            None => body.ends_with("0\r\n\r\n"),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut chunk = [0u8; 4096];
        while !complete(&answer) {
            let read = stream.read(&mut chunk).await.unwrap();
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .expect("the server answers without the body");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    // The body may come chunked: keep the JSON object only.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => body[start..=end].to_string(),
        _ => body.to_string(),
    };
    (status, head.to_string(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_is_json_with_its_status() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    let client = &server.client;
    // Over the body limit: 413, for the typed bodies and the raw one of refresh alike. The
    // server answers from the declared length without reading the body, so the request is
    // sent by hand: a client still writing the body could see the connection close first.
    for path in [
        "/api/v1/pools",
        "/api/v1/auth/refresh",
        "/api/v1/variables",
        "/api/v1/connections",
    ] {
        let (status, head, body) = oversize_post(&server, path, &admin).await;
        assert_eq!(status, 413, "{path}: {head}{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "too_large", "{path}: {body}");
    }
    for path in [
        "/api/v1/nothing-here",
        "/nothing-here",
        "/api/v1/dags/etl/nope",
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_json_error(response, 404, "not_found").await;
    }
    let response = client
        .delete(server.url("/api/v1/me"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    assert_json_error(response, 405, "method_not_allowed").await;
    // An extractor's own rejection (a query that does not parse) is JSON too.
    let response = client
        .get(server.url("/api/v1/stream?since=soon"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_json_error(response, 400, "bad_request").await;
    let long = format!("/api/v1/dags?tag={}", "a".repeat(9 * 1024));
    let response = client
        .get(server.url(&long))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_json_error(response, 414, "uri_too_long").await;
    let response = client
        .get(server.url("/api/v1/me"))
        .bearer_auth(&admin)
        .header("x-padding", "a".repeat(70 * 1024))
        .send()
        .await
        .unwrap();
    assert_json_error(response, 431, "headers_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_carry_the_security_headers() {
    let server = Server::start().await;
    for path in ["/health", "/api/v1/me", "/", "/nothing-here"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("{path} has no {name}"))
        };
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "same-origin");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert!(!policy.contains(" 'unsafe-eval'"), "{path}: {policy}");
        assert!(
            !policy.contains("script-src 'unsafe-inline'"),
            "{path}: {policy}"
        );
        if path == "/" {
            assert!(policy.contains("script-src 'self'"), "{policy}");
        } else {
            assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
        }
        assert!(!headers.contains_key("strict-transport-security"));
    }
    let response = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "viewer", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    for cookie in response.headers().get_all("set-cookie") {
        assert!(!cookie.to_str().unwrap().contains("Secure"));
    }

    // Served over TLS: HSTS, and cookies that never travel over plain HTTP.
    let server = Server::start_with(|config| config.tls = true).await;
    let response = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "viewer", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let hsts = response.headers()["strict-transport-security"]
        .to_str()
        .unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2);
    for cookie in cookies {
        assert!(cookie.to_str().unwrap().ends_with("; Secure"), "{cookie:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_try_says_why() {
    use std::collections::BTreeMap;
    use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
    let server = Server::start().await;
    let shell = |id: &str, command: &str| {
        TaskSpec::new(
            id,
            TaskKind::Shell {
                command: command.to_string(),
                env: BTreeMap::new(),
                append_env: true,
                cwd: None,
                skip_exit_code: Some(99),
                templated: false,
            },
        )
    };
    let dag = DagSpec::new(
        "failing",
        vec![shell("exits", "exit 3"), shell("killed", "kill -9 $$")],
    );
    server.engine.upsert_dag(dag).await.unwrap();
    let run = server.finished_run("failing").await;
    let token = server.login("viewer").await;
    for (task, expected) in [("exits", "exited with code 3"), ("killed", "SIGKILL")] {
        let path = format!("/api/v1/dags/failing/runs/{}/tasks/{task}", run.run_id);
        let (status, body) = server.call("GET", &path, Some(&token), None).await;
        assert_eq!(status, 200, "{body}");
        let reason = body["tries"][0]["failure_reason"].as_str().unwrap_or("");
        assert!(reason.contains(expected), "{task}: {body}");
    }
}

/// The workers page's API says which queues each worker serves and how many tries wait for a
/// queue none serves, and the count falls to zero once a worker serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_show_their_queues_and_tries_no_worker_serves() {
    use std::collections::BTreeMap;
    use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
    let server = Server::start().await;
    server
        .engine
        .set_worker_queues(vec!["default".to_string(), "etl".to_string()])
        .unwrap();
    let mut gpu = TaskSpec::new(
        "train",
        TaskKind::Shell {
            command: "true".to_string(),
            env: BTreeMap::new(),
            append_env: true,
            cwd: None,
            skip_exit_code: None,
            templated: false,
        },
    );
    gpu.queue = Some("gpu".to_string());
    server
        .engine
        .upsert_dag(DagSpec::new("gpu_only", vec![gpu]))
        .await
        .unwrap();
    let run = server.engine.trigger("gpu_only", json!({})).await.unwrap();
    let op = server.login("op").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let (status, body) = server.call("GET", "/api/v1/workers", Some(&op), None).await;
        assert_eq!(status, 200, "{body}");
        if body["waiting_unserved_queue"] == 1 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gpu try waits visibly: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(body["workers"][0]["name"], "local");
    assert_eq!(body["workers"][0]["queues"], json!(["default", "etl"]));
    server.engine.set_worker_queues(Vec::new()).unwrap();
    server.wait(&run).await;
    let (_, body) = server.call("GET", "/api/v1/workers", Some(&op), None).await;
    assert_eq!(body["waiting_unserved_queue"], 0, "{body}");
    assert_eq!(body["workers"][0]["queues"], json!([]));
    let viewer = server.login("viewer").await;
    let (status, _) = server
        .call("GET", "/api/v1/workers", Some(&viewer), None)
        .await;
    assert_eq!(status, 403);
}
