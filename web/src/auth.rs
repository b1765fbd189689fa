//! Sign-in and roles: argon2 password hashes, HS256 JWT sessions (short-lived access tokens,
//! longer refresh tokens), API tokens for scripts (only a hash of the secret is stored), and the
//! [`Principal`] every protected handler takes, with the role and per-DAG grant checks.

use crate::error::{Error, Result};
use crate::AppState;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use weft_api_types::{Role, REFRESH_COOKIE, SESSION_COOKIE};
use weft_storage::{ApiTokenRow, UserRow};

/// Shortest session-signing key accepted.
pub const SESSION_SECRET_BYTES_MIN: usize = 32;
/// Password length limits, in bytes.
pub const PASSWORD_BYTES_MIN: usize = 8;
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Username length limit, in bytes.
pub const USERNAME_BYTES_MAX: usize = 64;
/// Every API token starts with this, so that a leaked one is easy to find.
pub const API_TOKEN_PREFIX: &str = "weft_";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the session secret is {0} bytes, under the {SESSION_SECRET_BYTES_MIN} required")]
    SecretTooShort(usize),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// What a JWT says. `kind` keeps a refresh token from being used as an access token; `epoch`
/// and `stamp` tie the token to the user's session epoch and password (see [`Sessions`]), so
/// that signing out, a new password or disabling the user ends it before its expiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub kind: TokenKind,
    pub iat: u64,
    pub exp: u64,
    /// The user's session epoch when the token was issued (0 in tokens signed before epochs
    /// were carried, which matches a user whose sessions were never revoked).
    #[serde(default)]
    pub epoch: u64,
    /// A token without a stamp (signed before stamps existed) matches no session.
    #[serde(default)]
    pub stamp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

/// Signing and checking keys for session JWTs.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Keys {
    pub fn new(secret: &[u8]) -> Result<Keys, AuthError> {
        if secret.len() < SESSION_SECRET_BYTES_MIN {
            return Err(AuthError::SecretTooShort(secret.len()));
        }
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The claims of a validly signed, unexpired token of `kind` (whether its session was
    /// revoked is [`Sessions::is_current`]).
    pub fn verify(&self, token: &str, kind: TokenKind) -> Option<Claims> {
        self.decode(token, kind, true)
    }

    /// The claims of a validly signed token of `kind`, expired or not: for a live stream,
    /// which re-checks the user behind a connection that outlives its access token.
    pub fn verify_signature(&self, token: &str, kind: TokenKind) -> Option<Claims> {
        self.decode(token, kind, false)
    }

    fn decode(&self, token: &str, kind: TokenKind, check_expiry: bool) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: a token is dead the second its `exp` passes.
        validation.leeway = 0;
        validation.validate_exp = check_expiry;
        if !check_expiry {
            validation.required_spec_claims.remove("exp");
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        (data.claims.kind == kind).then_some(data.claims)
    }

    /// Whether a `weft_session` cookie holds a valid session (for the UI's server rendering).
    pub fn check_session(&self, token: &str) -> bool {
        self.verify(token, TokenKind::Access).is_some()
    }
}

pub fn now_s() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

/// A fresh pair of (access, refresh) tokens for `user`, stamped with its current session
/// epoch.
pub fn issue_tokens(state: &AppState, user: &UserRow) -> (String, String) {
    let now = now_s();
    let config = state.config();
    let epoch = state.sessions().epoch(user);
    let stamp = Sessions::stamp(user, epoch);
    let access = Claims {
        sub: user.username.clone(),
        kind: TokenKind::Access,
        iat: now,
        exp: now + config.session_ttl_s,
        epoch,
        stamp: stamp.clone(),
    };
    let refresh = Claims {
        sub: user.username.clone(),
        kind: TokenKind::Refresh,
        iat: now,
        exp: now + config.refresh_ttl_s,
        epoch,
        stamp,
    };
    (state.keys().sign(&access), state.keys().sign(&refresh))
}

// ------------------------------------------------------------------------- session revocation

/// How often a sign-out writes the user's new session epoch before giving up, when a change
/// written meanwhile (by an admin, say) keeps overwriting it.
pub const REVOKE_TRIES_MAX: usize = 8;

/// Session revocation. A token carries the user's session epoch (`UserRow::session_epoch`,
/// in the store) when it was issued, and a `stamp`: a digest of the username, that epoch and
/// the user's password hash. Signing out, a new password and disabling the user move the
/// stored epoch on; a token whose epoch is below the stored one, or whose stamp does not match
/// the user's password hash, is refused. Since the epoch is stored, a revocation holds after a
/// restart and on every node sharing the store.
///
/// This node also remembers the highest epoch it wrote for each user, and never accepts a
/// token below it, nor writes a user row below it: a user row written by a change that read
/// the row before a sign-out (an admin's role change, say) cannot bring that session back here.
#[derive(Debug)]
pub struct Sessions {
    /// The highest session epoch this node wrote, per user.
    floors: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Moves on at every revocation, so that live streams re-check their caller at once.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            floors: std::sync::Mutex::new(std::collections::HashMap::new()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Sessions {
    fn floor(&self, username: &str) -> u64 {
        self.floors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(username)
            .copied()
            .unwrap_or(0)
    }

    fn raise_floor(&self, username: &str, epoch: u64) {
        let mut floors = self
            .floors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let floor = floors.entry(username.to_string()).or_insert(0);
        *floor = (*floor).max(epoch);
    }

    /// The session epoch of `user` now: the stored one, or this node's floor if higher.
    pub fn epoch(&self, user: &UserRow) -> u64 {
        user.session_epoch.max(self.floor(&user.username))
    }

    /// The stamp a token issued to `user` in `epoch` carries.
    pub fn stamp(user: &UserRow, epoch: u64) -> String {
        let digest = sha256_hex(&format!(
            "{}\n{epoch}\n{}",
            user.username, user.password_hash
        ));
        digest[..SESSION_STAMP_CHARS].to_string()
    }

    /// Whether `claims` were issued to `user` in its current session epoch, with its current
    /// password.
    pub fn is_current(&self, user: &UserRow, claims: &Claims) -> bool {
        claims.epoch >= self.epoch(user)
            && same_bytes(
                claims.stamp.as_bytes(),
                Sessions::stamp(user, claims.epoch).as_bytes(),
            )
    }

    /// Moves `row`'s session epoch past every token issued so far: call before writing a row
    /// that ends the user's sessions (a new password, disabling), then [`Sessions::changed`].
    pub fn end_sessions_in(&self, row: &mut UserRow) {
        row.session_epoch = self.epoch(row) + 1;
        self.raise_floor(&row.username, row.session_epoch);
    }

    /// Keeps `row`'s session epoch at least at what this node wrote: call before writing a
    /// user row read earlier, so that the write does not undo a sign-out made meanwhile.
    pub fn keep_epoch_in(&self, row: &mut UserRow) {
        row.session_epoch = self.epoch(row);
    }

    /// Ends every session (access and refresh tokens) of `username`: writes the user's next
    /// session epoch to the store, and checks it held against a concurrent write of the row.
    pub async fn revoke(&self, store: &dyn weft_storage::Store, username: &str) -> Result<()> {
        let mut target = None;
        for _ in 0..REVOKE_TRIES_MAX {
            let Some(mut row) = store.user(username).await? else {
                // No user, no session to end.
                self.changed();
                return Ok(());
            };
            let wanted = *target.get_or_insert(self.epoch(&row) + 1);
            if row.session_epoch >= wanted {
                self.changed();
                return Ok(());
            }
            row.session_epoch = wanted;
            self.raise_floor(username, wanted);
            store.write(vec![weft_storage::Write::PutUser(row)]).await?;
        }
        self.changed();
        Err(Error::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "user `{username}` kept changing while signing out: sign out again (this \
                 node refuses the ended sessions meanwhile)"
            ),
        ))
    }

    /// Tells live streams that users or grants changed.
    pub fn changed(&self) {
        self.changed.send_modify(|count| *count += 1);
    }

    /// A receiver that wakes when users or grants change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Length of a session stamp, in hex characters (128 bits of the digest).
const SESSION_STAMP_CHARS: usize = 32;

// ------------------------------------------------------------------------- passwords

/// The argon2id hash (PHC string) of `password`. Slow by design: call off the async threads.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Hash(error.to_string()))
}

/// Whether `password` matches `hash`; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The password an unknown or disabled user's sign-in is checked against: the hash of a
/// password nobody is told, with the same parameters as real hashes.
const DUMMY_PASSWORD: &str = "weft: no such user";

/// A hash to verify sign-ins of unknown users against, so that they cost as much as a wrong
/// password and the answer's timing does not tell which usernames exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(DUMMY_PASSWORD).expect("hashing a fixed password with a fresh salt works")
    })
}

/// Checks a sign-in: `Some(user)` when `user` exists, is enabled and `password` is its
/// password. Runs one argon2 verification whatever the case (against a dummy hash for an
/// unknown or disabled user). Slow by design: call off the async threads.
pub fn check_credentials(user: Option<UserRow>, password: &str) -> Option<UserRow> {
    match user {
        Some(user) if !user.disabled => {
            verify_password(&user.password_hash, password).then_some(user)
        }
        _ => {
            // The result is thrown away; the work is the point.
            let _ = verify_password(dummy_hash(), password);
            None
        }
    }
}

/// Refuses passwords that are too short or too long, saying which.
pub fn check_password_rules(password: &str) -> Result<()> {
    if password.len() < PASSWORD_BYTES_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(Error::unprocessable(
            "invalid_password",
            format!("the password must be {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes long"),
        ));
    }
    Ok(())
}

/// Usernames are 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_username(username: &str) -> Result<()> {
    let valid = !username.is_empty()
        && username.len() <= USERNAME_BYTES_MAX
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !valid {
        return Err(Error::unprocessable(
            "invalid_username",
            format!(
                "username `{username}` is not allowed: use 1 to {USERNAME_BYTES_MAX} letters, \
                 digits, `.`, `_`, `-` or `@`"
            ),
        ));
    }
    Ok(())
}

/// Creates a user (or replaces one with the same name): used by `weft users create` and by
/// standalone's first start.
pub async fn create_user(
    store: &dyn weft_storage::Store,
    username: &str,
    password: &str,
    role: Role,
) -> Result<()> {
    check_username(username)?;
    check_password_rules(password)?;
    let password = password.to_string();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|error| Error::internal(format!("password hashing failed: {error}")))?
        .map_err(|error| Error::internal(error.to_string()))?;
    // A replaced user's sessions end: its epoch moves past theirs.
    let session_epoch = store
        .user(username)
        .await?
        .map_or(0, |old| old.session_epoch + 1);
    let user = UserRow {
        username: username.to_string(),
        password_hash,
        role: role.as_str().to_string(),
        dag_grants: Vec::new(),
        disabled: false,
        created_at: chrono::Utc::now(),
        session_epoch,
    };
    store
        .write(vec![weft_storage::Write::PutUser(user)])
        .await?;
    Ok(())
}

// ------------------------------------------------------------------------- API tokens

/// A new API token: (the row to store, the full token to show once).
pub fn new_api_token(
    name: &str,
    username: &str,
    expires_at: Option<weft_core::Timestamp>,
) -> (ApiTokenRow, String) {
    let id = random_hex(8);
    let secret = random_hex(32);
    let row = ApiTokenRow {
        id: id.clone(),
        name: name.to_string(),
        username: username.to_string(),
        secret_hash: sha256_hex(&secret),
        created_at: chrono::Utc::now(),
        expires_at,
    };
    (row, format!("{API_TOKEN_PREFIX}{id}_{secret}"))
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Compares without stopping at the first difference, so timing says nothing of the secret.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ------------------------------------------------------------------------- principal

/// The signed-in caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
    pub role: Role,
    /// DAGs a User or Viewer may see; empty means all.
    pub dag_grants: Vec<String>,
}

impl Principal {
    /// Refuses callers below `role`.
    pub fn require(&self, role: Role) -> Result<()> {
        if self.role >= role {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "this needs the {role} role; you are `{}` with the {} role: ask an admin",
            self.username, self.role
        )))
    }

    /// Whether the caller may see `dag_id` (per-DAG grants restrict Users and Viewers).
    pub fn can_see(&self, dag_id: &str) -> bool {
        self.role >= Role::Op
            || self.dag_grants.is_empty()
            || self.dag_grants.iter().any(|grant| grant == dag_id)
    }

    pub fn require_dag(&self, dag_id: &str) -> Result<()> {
        if self.can_see(dag_id) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "`{}` has no grant for dag `{dag_id}`: ask an admin to add it",
            self.username
        )))
    }
}

fn principal_of(user: UserRow) -> Result<Principal> {
    if user.disabled {
        return Err(Error::unauthenticated(format!(
            "user `{}` is disabled: ask an admin",
            user.username
        )));
    }
    let role = Role::parse(&user.role).ok_or_else(|| {
        Error::internal(format!(
            "user `{}` has an unknown role `{}`",
            user.username, user.role
        ))
    })?;
    Ok(Principal {
        username: user.username,
        role,
        dag_grants: user.dag_grants,
    })
}

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// The caller behind a bearer token (JWT or API token) or session cookie.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal> {
    let store = state.store();
    let user = if let Some(rest) = token.strip_prefix(API_TOKEN_PREFIX) {
        let (id, secret) = rest
            .split_once('_')
            .ok_or_else(|| Error::unauthenticated("the API token is malformed: copy it whole"))?;
        let row = store
            .api_token(id)
            .await?
            .filter(|row| same_bytes(row.secret_hash.as_bytes(), sha256_hex(secret).as_bytes()))
            .ok_or_else(|| {
                Error::unauthenticated("the API token is unknown or was revoked: create a new one")
            })?;
        if row.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return Err(Error::unauthenticated(
                "the API token has expired: create a new one",
            ));
        }
        store.user(&row.username).await?
    } else {
        let claims = state
            .keys()
            .verify(token, TokenKind::Access)
            .ok_or_else(|| {
                Error::unauthenticated(
                    "the session is invalid or has expired: sign in again or refresh it at \
                 /api/v1/auth/refresh",
                )
            })?;
        return session_principal(state, &claims).await;
    };
    let user = user.ok_or_else(|| Error::unauthenticated("the user no longer exists"))?;
    principal_of(user)
}

/// The caller behind the (already verified) claims of a session token, if its session was
/// not ended since.
pub async fn session_principal(state: &AppState, claims: &Claims) -> Result<Principal> {
    let user = state
        .store()
        .user(&claims.sub)
        .await?
        .ok_or_else(|| Error::unauthenticated("the user no longer exists"))?;
    if !state.sessions().is_current(&user, claims) {
        return Err(Error::unauthenticated(
            "the session was ended (signed out, password changed or user disabled): sign in again",
        ));
    }
    principal_of(user)
}

/// Re-checks the caller of a long-lived connection opened with `token`: the user still exists,
/// is enabled and (for a session) was not signed out; the grants are read afresh. The access
/// token's own expiry is not held against it, since the connection was accepted while it was
/// valid and a revoked session is caught by its stamp.
pub async fn recheck(state: &AppState, token: &str) -> Result<Principal> {
    if token.starts_with(API_TOKEN_PREFIX) {
        return authenticate(state, token).await;
    }
    let claims = state
        .keys()
        .verify_signature(token, TokenKind::Access)
        .ok_or_else(|| Error::unauthenticated("the session is invalid: sign in again"))?;
    session_principal(state, &claims).await
}

/// The token a request carries: `Authorization: Bearer`, else the `weft_session` cookie.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| cookie(headers, SESSION_COOKIE))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Principal> {
        let token = request_token(&parts.headers).ok_or_else(|| {
            Error::unauthenticated(
                "sign in first: send `Authorization: Bearer <token>` or the weft_session cookie \
                 (POST /api/v1/auth/login)",
            )
        })?;
        let principal = authenticate(state, token).await?;
        if !state.inner.api_limiter.allow(&principal.username) {
            return Err(Error::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "`{}` made more than {} API requests in a minute: slow down and retry",
                    principal.username,
                    state.config().api_requests_per_minute
                ),
            ));
        }
        Ok(principal)
    }
}

/// The client's address, for audit entries and sign-in limits (`unknown` when the server was
/// not started with connect info).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<ClientAddr, std::convert::Infallible> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        Ok(ClientAddr(addr))
    }
}

/// `Set-Cookie` values for a session; `max_age_s` 0 clears them. `secure` (under TLS) keeps
/// browsers from ever sending them over plain HTTP.
pub fn session_cookies(
    access: &str,
    refresh: &str,
    access_max_age_s: u64,
    refresh_max_age_s: u64,
    secure: bool,
) -> [String; 2] {
    let secure = if secure { "; Secure" } else { "" };
    [
        format!(
            "{SESSION_COOKIE}={access}; HttpOnly; SameSite=Strict; Path=/; \
             Max-Age={access_max_age_s}{secure}"
        ),
        format!(
            "{REFRESH_COOKIE}={refresh}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; \
             Max-Age={refresh_max_age_s}{secure}"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horsf"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn refresh_tokens_are_not_access_tokens() {
        let keys = Keys::new(&[7u8; 32]).unwrap();
        let claims = Claims {
            sub: "ada".into(),
            kind: TokenKind::Refresh,
            iat: now_s(),
            exp: now_s() + 60,
            epoch: 0,
            stamp: String::new(),
        };
        let token = keys.sign(&claims);
        assert!(keys.verify(&token, TokenKind::Refresh).is_some());
        assert!(keys.verify(&token, TokenKind::Access).is_none());
        let expired = keys.sign(&Claims {
            kind: TokenKind::Access,
            exp: now_s() - 1,
            ..claims
        });
        assert!(keys.verify(&expired, TokenKind::Access).is_none());
        assert!(Keys::new(&[1u8; 8]).is_err());
    }

    #[test]
    fn grants_restrict_users_and_viewers_only() {
        let viewer = Principal {
            username: "v".into(),
            role: Role::Viewer,
            dag_grants: vec!["etl".into()],
        };
        assert!(viewer.can_see("etl"));
        assert!(!viewer.can_see("billing"));
        let op = Principal {
            role: Role::Op,
            ..viewer.clone()
        };
        assert!(op.can_see("billing"));
        assert!(viewer.require(Role::User).is_err());
        assert!(op.require(Role::User).is_ok());
    }
}
