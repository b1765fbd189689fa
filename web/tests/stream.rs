//! The live stream over a real WebSocket: a triggered run's task events arrive; a client that
//! drops and reconnects with `since` receives every event it missed, in order; a client too far
//! behind is told to resync.

mod common;

use common::Server;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use weft_api_types::{StreamEvent, StreamMessage, TaskState};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, token: &str, since: Option<u64>) -> Socket {
    let mut url = format!("{}/api/v1/stream", server.base.replace("http://", "ws://"));
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

async fn next_message(socket: &mut Socket) -> StreamMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message arrives")
            .expect("the stream is open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Reads until the run `run_id` is reported finished; returns everything read.
async fn until_run_finished(socket: &mut Socket, run_id: &str) -> Vec<StreamMessage> {
    let mut messages = Vec::new();
    loop {
        let message = next_message(socket).await;
        let done = matches!(&message.event,
            StreamEvent::Run { run_id: id, state, .. }
                if id == run_id && matches!(state, weft_api_types::RunState::Success | weft_api_types::RunState::Failed));
        messages.push(message);
        if done {
            return messages;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_triggered_run_streams_its_task_events() {
    let server = Server::start().await;
    let token = server.login("user").await;
    let mut socket = connect(&server, &token, None).await;
    let (status, run) = server
        .call(
            "POST",
            "/api/v1/dags/etl/runs",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let messages = until_run_finished(&mut socket, run_id).await;
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{seqs:?}"
    );
    for task in ["extract", "transform", "load"] {
        let states: Vec<TaskState> = messages
            .iter()
            .filter_map(|message| match &message.event {
                StreamEvent::Task {
                    task_id,
                    state,
                    run_id: id,
                    ..
                } if task_id == task && id == run_id => Some(*state),
                _ => None,
            })
            .collect();
        assert!(states.contains(&TaskState::Running), "{task}: {states:?}");
        assert_eq!(
            states.last(),
            Some(&TaskState::Success),
            "{task}: {states:?}"
        );
    }
    socket.close(None).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reconnecting_client_receives_every_missed_event_in_order() {
    let server = Server::start().await;
    let token = server.login("user").await;
    // A watcher that stays connected sees the whole truth.
    let mut watcher = connect(&server, &token, None).await;
    let mut client = connect(&server, &token, None).await;

    let first = server.engine.trigger("etl", json!({})).await.unwrap();
    let seen = until_run_finished(&mut client, &first.run_id).await;
    let last_seen = seen.last().unwrap().seq;
    client.close(None).await.ok();
    drop(client);

    // Changes while the client is away.
    let second = server.engine.trigger("etl", json!({})).await.unwrap();
    server.wait(&second).await;
    let mut truth = until_run_finished(&mut watcher, &first.run_id).await;
    truth.extend(until_run_finished(&mut watcher, &second.run_id).await);
    let missed: Vec<u64> = truth
        .iter()
        .map(|m| m.seq)
        .filter(|seq| *seq > last_seen)
        .collect();
    assert!(!missed.is_empty());

    let mut client = connect(&server, &token, Some(last_seen)).await;
    let mut replayed = Vec::new();
    while replayed.len() < missed.len() {
        replayed.push(next_message(&mut client).await);
    }
    let replayed_seqs: Vec<u64> = replayed.iter().map(|m| m.seq).collect();
    assert_eq!(replayed_seqs, missed, "every missed event, in order");
    let expected: Vec<&StreamMessage> = truth.iter().filter(|m| m.seq > last_seen).collect();
    assert_eq!(replayed.iter().collect::<Vec<_>>(), expected);

    // New events keep flowing after the replay.
    let third = server.engine.trigger("etl", json!({})).await.unwrap();
    let after = until_run_finished(&mut client, &third.run_id).await;
    assert_eq!(after.first().unwrap().seq, missed.last().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_too_far_behind_is_told_to_resync() {
    let server = Server::start_with(|config| config.stream_replay_events_max = 3).await;
    let token = server.login("viewer").await;
    let run = server.engine.trigger("etl", json!({})).await.unwrap();
    server.wait(&run).await;
    let mut client = connect(&server, &token, Some(1)).await;
    let message = next_message(&mut client).await;
    assert_eq!(message.event, StreamEvent::Resync);
    // A `since` from before a restart (ahead of this process's numbering) resyncs too.
    let mut client = connect(&server, &token, Some(1_000_000)).await;
    assert_eq!(next_message(&mut client).await.event, StreamEvent::Resync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stream_needs_a_token_and_honours_grants() {
    let server = Server::start().await;
    let url = format!("{}/api/v1/stream", server.base.replace("http://", "ws://"));
    let error = tokio_tungstenite::connect_async(url).await.unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {other}"),
    }
    // `granted` may see only `shell`: events of `etl` never reach it.
    let token = server.login("granted").await;
    let mut socket = connect(&server, &token, None).await;
    let hidden = server.engine.trigger("etl", json!({})).await.unwrap();
    server.wait(&hidden).await;
    let shown = server.engine.trigger("shell", json!({})).await.unwrap();
    let messages = until_run_finished(&mut socket, &shown.run_id).await;
    assert!(messages.iter().all(|message| match &message.event {
        StreamEvent::Run { dag_id, .. } | StreamEvent::Task { dag_id, .. } => dag_id == "shell",
        _ => true,
    }));
    let _ = socket.send(Message::Close(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_lines_of_a_running_try_arrive_on_the_stream() {
    let server = Server::start().await;
    let token = server.login("viewer").await;
    let mut socket = connect(&server, &token, None).await;
    let run = server.engine.trigger("shell", json!({})).await.unwrap();
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let message = next_message(&mut socket).await;
        if let StreamEvent::Log {
            run_id,
            task_id,
            try_number,
            line,
            ..
        } = message.event
        {
            assert_eq!(
                (run_id.as_str(), task_id.as_str(), try_number),
                (run.run_id.as_str(), "say", 1)
            );
            lines.push(line);
        }
    }
    assert_eq!(lines, vec!["hello", "world"]);
}

/// The first frame that is not a stream message: a close frame, or the end of the stream.
async fn closing_frame(socket: &mut Socket) -> Option<Message> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the stream closes within 20 s");
        match frame {
            None | Some(Err(_)) => return None,
            Some(Ok(Message::Close(frame))) => return Some(Message::Close(frame)),
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_users_stream_closes() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    let token = server.login("viewer").await;
    let mut socket = connect(&server, &token, None).await;
    let (status, _) = server
        .call(
            "PATCH",
            "/api/v1/users/viewer",
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    match closing_frame(&mut socket).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.contains("disabled"), "{}", frame.reason);
        }
        other => panic!("expected a policy close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_out_session_s_stream_closes() {
    let server = Server::start().await;
    let token = server.login("viewer").await;
    let mut socket = connect(&server, &token, None).await;
    let (status, _) = server
        .call("POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, 204);
    assert!(matches!(
        closing_frame(&mut socket).await,
        Some(Message::Close(Some(_)))
    ));
}

async fn grant(server: &Server, admin: &str, grants: &[&str]) {
    let (status, body) = server
        .call(
            "PATCH",
            "/api/v1/users/granted",
            Some(admin),
            Some(json!({ "dag_grants": grants })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_grant_stops_that_dags_events() {
    let server = Server::start().await;
    let admin = server.login("admin").await;
    grant(&server, &admin, &["shell", "etl"]).await;
    let token = server.login("granted").await;
    let mut socket = connect(&server, &token, None).await;
    let seen = server.engine.trigger("etl", json!({})).await.unwrap();
    let messages = until_run_finished(&mut socket, &seen.run_id).await;
    assert!(messages.iter().any(|m| matches!(&m.event,
        StreamEvent::Task { dag_id, .. } if dag_id == "etl")));

    grant(&server, &admin, &["shell"]).await;
    let hidden = server.engine.trigger("etl", json!({})).await.unwrap();
    server.wait(&hidden).await;
    let shown = server.engine.trigger("shell", json!({})).await.unwrap();
    let messages = until_run_finished(&mut socket, &shown.run_id).await;
    let leaked: Vec<&StreamMessage> = messages
        .iter()
        .filter(|m| match &m.event {
            StreamEvent::Run { run_id, .. } | StreamEvent::Task { run_id, .. } => {
                *run_id == hidden.run_id
            }
            _ => false,
        })
        .collect();
    assert!(leaked.is_empty(), "events of a revoked DAG: {leaked:?}");
    let _ = socket.send(Message::Close(None)).await;
}
