//! The UI router as the server mounts it: sign-in redirects, server-rendered pages with their
//! hydration scripts, and the bundle served compressed with cache headers.
#![cfg(feature = "ssr")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use weft_ui::{ui_router, UiOptions};

async fn get(
    router: axum::Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn options(pkg: &std::path::Path) -> UiOptions {
    UiOptions::new(pkg).with_session_check(Arc::new(|token: &str| token == "good"))
}

#[tokio::test]
async fn a_visitor_without_a_valid_session_is_sent_to_sign_in_with_the_way_back() {
    let pkg = tempfile::tempdir().unwrap();
    let (status, headers, _) =
        get(ui_router(options(pkg.path())), "/dags/etl?tab=graph", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/login?next=%2Fdags%2Fetl%3Ftab%3Dgraph"
    );

    let (status, _, _) = get(
        ui_router(options(pkg.path())),
        "/",
        &[("cookie", "weft_session=forged")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a session the server rejects is no session"
    );
}

#[tokio::test]
async fn pages_are_rendered_on_the_server_with_the_hydration_scripts() {
    let pkg = tempfile::tempdir().unwrap();
    let (status, headers, body) = get(ui_router(options(pkg.path())), "/login", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("id=\"login-form\""), "{html}");
    assert!(
        html.contains("/pkg/weft_ui.js"),
        "the page loads the JS glue: {html}"
    );
    assert!(
        html.contains("/pkg/weft_ui_bg.wasm"),
        "and wasm-bindgen's module: {html}"
    );
    assert!(html.contains("/pkg/weft.css"), "{html}");

    let (status, _, body) = get(
        ui_router(options(pkg.path())),
        "/dags/etl",
        &[("cookie", "other=1; weft_session=good")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(
        html.contains("class=\"topbar\""),
        "the layout is rendered: {html}"
    );
    assert!(
        html.contains("id=\"tab-graph\""),
        "the DAG page's tabs are rendered: {html}"
    );
}

#[tokio::test]
async fn the_variables_and_connections_pages_render_their_forms() {
    let pkg = tempfile::tempdir().unwrap();
    for (path, heading, form, fields) in [
        (
            "/variables",
            "<h1>Variables</h1>",
            "id=\"variable-create\"",
            &["name=\"key\"", "name=\"value\"", "name=\"description\""][..],
        ),
        (
            "/connections",
            "<h1>Connections</h1>",
            "id=\"connection-create\"",
            &[
                "name=\"connection_id\"",
                "name=\"conn_type\"",
                "type=\"password\"",
                "name=\"extra\"",
            ][..],
        ),
    ] {
        let (status, _, body) = get(
            ui_router(options(pkg.path())),
            path,
            &[("cookie", "weft_session=good")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let html = String::from_utf8(body).unwrap();
        assert!(html.contains(heading), "{path}: {html}");
        assert!(html.contains(form), "{path}: {html}");
        for field in fields {
            assert!(html.contains(field), "{path} has no {field}: {html}");
        }
    }
}

#[tokio::test]
async fn the_bundle_is_served_compressed_and_revalidated() {
    let pkg = tempfile::tempdir().unwrap();
    let js = "export function hydrate() {}\n".repeat(100);
    std::fs::write(pkg.path().join("weft_ui.js"), &js).unwrap();
    // The server sends the precompressed copy as it is, without reading it.
    let gz = b"\x1f\x8b precompressed by the build".to_vec();
    std::fs::write(pkg.path().join("weft_ui.js.gz"), &gz).unwrap();

    let (status, headers, body) = get(
        ui_router(options(pkg.path())),
        "/pkg/weft_ui.js",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(body, gz, "the precompressed copy is sent as it is");
    assert!(headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("must-revalidate"));
    assert!(headers.contains_key(header::LAST_MODIFIED));

    let (status, headers, body) = get(
        ui_router(options(pkg.path())),
        "/pkg/weft.css",
        &[("accept-encoding", "br")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "br");
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(body.len() < weft_ui::STYLESHEET.len());

    let (status, _, _) = get(ui_router(options(pkg.path())), "/pkg/missing.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
