//! Sign-in: `POST /api/v1/auth/login`, `/refresh`, `/logout`, and `GET /api/v1/me`.

use super::{audit, Body};
use crate::auth::{self, ClientAddr, Principal, TokenKind};
use crate::error::{Error, Result};
use crate::AppState;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use weft_api_types::{LoginRequest, LoginResponse, Me, RefreshRequest, Role, UserInfo};
use weft_storage::UserRow;

/// Signs in with a username and password; sets the session cookies.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "signed in", body = LoginResponse),
        (status = 401, description = "wrong username or password", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body", body = weft_api_types::ApiError),
        (status = 429, description = "too many attempts", body = weft_api_types::ApiError),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    from: ClientAddr,
    Body(request): Body<LoginRequest>,
) -> Result<Response> {
    if !state.inner.login_limiter.allow(&from.0) {
        return Err(Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} sign-in attempts from {} in a minute: wait a minute and retry",
                state.config().login_attempts_per_minute,
                from.0
            ),
        ));
    }
    // Counted per username too, failures only, so that guesses spread over many addresses
    // are limited as well.
    // Keyed by a digest: a username of any length costs the limiter a fixed size.
    let user_key = auth::sha256_hex(&request.username);
    if state.inner.login_user_limiter.is_over(&user_key) {
        return Err(Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} failed sign-ins as `{}` in a minute: wait a minute and retry",
                state.config().login_failures_per_user_per_minute,
                request.username
            ),
        ));
    }
    let user = state.store().user(&request.username).await?;
    let password = request.password.clone();
    let verified = tokio::task::spawn_blocking(move || auth::check_credentials(user, &password))
        .await
        .unwrap_or(None);
    let Some(user) = verified else {
        state.inner.login_user_limiter.allow(&user_key);
        audit(
            &state,
            &request.username,
            &from,
            "auth.login_failed",
            &request.username,
            serde_json::Value::Null,
        )
        .await?;
        return Err(Error::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the username or password is wrong: check both and try again",
        ));
    };
    audit(
        &state,
        &user.username,
        &from,
        "auth.login",
        &user.username,
        serde_json::Value::Null,
    )
    .await?;
    Ok(session_response(&state, &user))
}

fn session_response(state: &AppState, user: &UserRow) -> Response {
    let role = Role::parse(&user.role).unwrap_or(Role::Viewer);
    let username = &user.username;
    let (access, refresh) = auth::issue_tokens(state, user);
    let config = state.config();
    let cookies = auth::session_cookies(
        &access,
        &refresh,
        config.session_ttl_s,
        config.refresh_ttl_s,
        config.tls,
    );
    let body = LoginResponse {
        access_token: access,
        expires_in: config.session_ttl_s,
        refresh_token: refresh,
        user: UserInfo {
            username: username.to_string(),
            role,
        },
    };
    let mut response = Json(body).into_response();
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// Trades a refresh token (body or `weft_refresh` cookie) for a new session.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    request_body(content = RefreshRequest, description = "may be empty when the weft_refresh cookie is sent"),
    security(()),
    responses(
        (status = 200, description = "a new session", body = LoginResponse),
        (status = 401, description = "no valid refresh token", body = weft_api_types::ApiError),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        super::require_object(&body)?;
        let request: RefreshRequest = serde_json::from_slice(&body).map_err(|error| {
            Error::unprocessable(
                "invalid_body",
                format!("the body must be {{\"refresh_token\": \"...\"}}: {error}"),
            )
        })?;
        request.refresh_token
    };
    let token = from_body
        .as_deref()
        .or_else(|| auth::cookie(&headers, weft_api_types::REFRESH_COOKIE))
        .ok_or_else(|| {
            Error::unauthenticated("send a refresh token in the body or the weft_refresh cookie")
        })?;
    let claims = state
        .keys()
        .verify(token, TokenKind::Refresh)
        .ok_or_else(|| {
            Error::unauthenticated("the refresh token is invalid or expired: sign in")
        })?;
    let user = state
        .store()
        .user(&claims.sub)
        .await?
        .filter(|user| !user.disabled)
        .ok_or_else(|| Error::unauthenticated("the user no longer exists or is disabled"))?;
    if !state.sessions().is_current(&user, &claims) {
        return Err(Error::unauthenticated(
            "the session was ended (signed out, password changed or user disabled): sign in",
        ));
    }
    Ok(session_response(&state, &user))
}

/// Signs out: ends every session of the caller (their access and refresh tokens stop working
/// at once, on every device) and clears the session cookies. API tokens are not affected.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "signed out"),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
) -> Result<Response> {
    state
        .sessions()
        .revoke(state.store().as_ref(), &principal.username)
        .await?;
    audit(
        &state,
        &principal.username,
        &from,
        "auth.logout",
        &principal.username,
        serde_json::Value::Null,
    )
    .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in auth::session_cookies("", "", 0, 0, state.config().tls) {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Who the caller is.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    responses(
        (status = 200, description = "the caller", body = Me),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
    )
)]
pub async fn me(principal: Principal) -> Json<Me> {
    Json(Me {
        username: principal.username,
        role: principal.role,
        dag_grants: principal.dag_grants,
    })
}
