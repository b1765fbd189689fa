//! Variables and Connections, Airflow-shaped (`/api/v1/variables`, `/api/v1/connections`), Op
//! and above. Values are sealed in the store by the engine's [`weft_storage::vault::Vault`];
//! the API answers them masked where Airflow does: the value of a variable whose key names a
//! secret, a connection's password (write-only: never answered) and the sensitive keys of a
//! connection's extra. Audit entries name the key or id and the fields changed, never a value.

use super::{audit_by, page_limit, Body, Params};
use crate::auth::{ClientAddr, Principal};
use crate::error::{Error, Result};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use weft_api_types::{
    Connection, ConnectionCreate, ConnectionList, ConnectionPatch, Role, Variable, VariableCreate,
    VariableList, VariablePatch, MASKED_VALUE,
};
use weft_storage::vault::{self, VaultError};
use weft_storage::SecretKind;

/// Variables or connections per page unless `limit` says otherwise (Airflow's default).
pub const SECRETS_PAGE_DEFAULT: usize = 100;
/// Longest variable key or connection id, in characters (the store's limit).
pub const SECRET_ID_CHARS_MAX: usize = weft_storage::SECRET_ID_CHARS_MAX;
/// Longest `update_mask` query, in bytes: it names a handful of fields.
pub const UPDATE_MASK_BYTES_MAX: usize = 1024;

/// Fields of a variable an `update_mask` may name.
const VARIABLE_FIELDS: &[&str] = &["value", "description"];
/// Fields of a connection an `update_mask` may name.
const CONNECTION_FIELDS: &[&str] = &[
    "conn_type",
    "description",
    "host",
    "schema",
    "login",
    "password",
    "port",
    "extra",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Entries per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// Entries to skip.
    pub offset: Option<usize>,
}

/// The error of a vault call: a broken rule is a 422 with `code`, a store outage a 503, a
/// value the node's keys do not open a 500 that says so.
fn vault_error(code: &'static str) -> impl Fn(VaultError) -> Error {
    move |error| match error {
        VaultError::Store(error) => error.into(),
        VaultError::Invalid(message) => Error::unprocessable(code, message),
        VaultError::Unopenable { .. } => Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "secret_unopenable",
            format!(
                "{error}: start the node with the secret key this value was sealed under, or \
                 set the value again"
            ),
        ),
        VaultError::BadKey(_) => Error::internal(error.to_string()),
    }
}

/// Refuses a key or id that is empty, longer than [`SECRET_ID_CHARS_MAX`] characters or holds
/// a control character.
fn check_id(what: &str, code: &'static str, id: &str) -> Result<()> {
    let chars = id.chars().count();
    if chars == 0 || chars > SECRET_ID_CHARS_MAX {
        return Err(Error::unprocessable(
            code,
            format!("a {what} is 1 to {SECRET_ID_CHARS_MAX} characters, not {chars}"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::unprocessable(
            code,
            format!("{what} {id:?} holds a control character: remove it"),
        ));
    }
    Ok(())
}

/// The fields an `update_mask` names (`?update_mask=a,b` or `?update_mask=a&update_mask=b`),
/// `None` without one; a field that is not one of `allowed` is refused.
fn update_mask(query: Option<&str>, allowed: &[&str]) -> Result<Option<Vec<String>>> {
    let Some(query) = query else {
        return Ok(None);
    };
    if query.len() > UPDATE_MASK_BYTES_MAX {
        return Err(Error::bad_request(
            "invalid_query",
            format!("the query string is over {UPDATE_MASK_BYTES_MAX} bytes"),
        ));
    }
    let mut fields: Option<Vec<String>> = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "update_mask" {
            return Err(Error::bad_request(
                "invalid_query",
                format!("unknown query parameter `{name}`: only `update_mask` is read"),
            ));
        }
        let value = value.replace("%2C", ",").replace("%2c", ",");
        let named = fields.get_or_insert_with(Vec::new);
        for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            if !allowed.contains(&field) {
                return Err(Error::bad_request(
                    "invalid_update_mask",
                    format!(
                        "`update_mask` names `{field}`, which cannot be changed: name some of {}",
                        allowed.join(", ")
                    ),
                ));
            }
            named.push(field.to_string());
        }
    }
    Ok(fields)
}

/// Whether a patch changes `field`: the mask names it, or (without a mask) the body has it.
fn changes(mask: &Option<Vec<String>>, field: &str, in_body: bool) -> bool {
    match mask {
        Some(fields) => fields.iter().any(|named| named == field),
        None => in_body,
    }
}

fn page<T>(items: Vec<T>, query: &PageQuery) -> Result<(Vec<T>, usize)> {
    let limit = page_limit(query.limit, SECRETS_PAGE_DEFAULT)?;
    let total = items.len();
    let offset = query.offset.unwrap_or(0);
    Ok((items.into_iter().skip(offset).take(limit).collect(), total))
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

// ------------------------------------------------------------------------- variables

const INVALID_VARIABLE: &str = "invalid_variable";
const INVALID_KEY: &str = "invalid_variable_key";

/// A variable as the API shows it: the value masked when the key names a secret.
fn variable_view(variable: vault::Variable) -> Variable {
    let value = if vault::is_sensitive(&variable.key) {
        MASKED_VALUE.to_string()
    } else {
        variable.value
    };
    Variable {
        key: variable.key,
        value,
        description: non_empty(variable.description),
    }
}

/// Variables by key, a page at a time (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/variables",
    tag = "secrets",
    params(PageQuery),
    responses(
        (status = 200, description = "variables; values of secret-named keys masked", body = VariableList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 422, description = "invalid limit", body = weft_api_types::ApiError),
    )
)]
pub async fn list_variables(
    State(state): State<AppState>,
    principal: Principal,
    Params(query): Params<PageQuery>,
) -> Result<Json<VariableList>> {
    principal.require(Role::Op)?;
    let all = state
        .engine()
        .vault()
        .variables()
        .await
        .map_err(vault_error(INVALID_VARIABLE))?;
    let (variables, total_entries) = page(all, &query)?;
    Ok(Json(VariableList {
        variables: variables.into_iter().map(variable_view).collect(),
        total_entries,
    }))
}

async fn read_variable(state: &AppState, key: &str) -> Result<vault::Variable> {
    check_id("variable key", INVALID_KEY, key)?;
    state
        .engine()
        .vault()
        .variable(key)
        .await
        .map_err(vault_error(INVALID_VARIABLE))?
        .ok_or_else(|| Error::not_found(format!("variable `{key}`")))
}

/// One variable (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/variables/{variable_key}",
    tag = "secrets",
    params(("variable_key" = String, Path, description = "the variable's key")),
    responses(
        (status = 200, description = "the variable; its value masked if its key names a secret", body = Variable),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such variable", body = weft_api_types::ApiError),
        (status = 422, description = "invalid key", body = weft_api_types::ApiError),
    )
)]
pub async fn get_variable(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<Variable>> {
    principal.require(Role::Op)?;
    Ok(Json(variable_view(read_variable(&state, &key).await?)))
}

/// Creates a variable (Op and above); 409 if the key is taken.
#[utoipa::path(
    post,
    path = "/api/v1/variables",
    tag = "secrets",
    request_body = VariableCreate,
    responses(
        (status = 201, description = "the variable", body = Variable),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 409, description = "the key is taken", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body, key or value", body = weft_api_types::ApiError),
    )
)]
pub async fn create_variable(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Body(request): Body<VariableCreate>,
) -> Result<(StatusCode, Json<Variable>)> {
    principal.require(Role::Op)?;
    check_id("variable key", INVALID_KEY, &request.key)?;
    if state
        .store()
        .secret(SecretKind::Variable, &request.key)
        .await?
        .is_some()
    {
        return Err(Error::conflict(format!(
            "variable `{}` exists: change it with PATCH /api/v1/variables/{}",
            request.key, request.key
        )));
    }
    let variable = vault::Variable {
        key: request.key,
        value: request.value,
        description: request.description.unwrap_or_default(),
    };
    // Created only if absent: of two concurrent creates, one is refused.
    state
        .engine()
        .vault()
        .create_variable(&variable, chrono::Utc::now())
        .await
        .map_err(vault_error(INVALID_VARIABLE))?;
    let mut fields = vec!["value"];
    if !variable.description.is_empty() {
        fields.push("description");
    }
    audit_by(
        &state,
        &principal,
        &from,
        "variable.create",
        &variable.key,
        serde_json::json!({ "fields": fields }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(variable_view(variable))))
}

/// Changes a variable's value or description (Op and above).
#[utoipa::path(
    patch,
    path = "/api/v1/variables/{variable_key}",
    tag = "secrets",
    params(
        ("variable_key" = String, Path, description = "the variable's key"),
        ("update_mask" = Option<String>, Query, description = "the fields to change, comma-separated (`value`, `description`); without it, the fields in the body"),
    ),
    request_body = VariablePatch,
    responses(
        (status = 200, description = "the variable", body = Variable),
        (status = 400, description = "invalid update_mask", body = weft_api_types::ApiError),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such variable", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body or value", body = weft_api_types::ApiError),
    )
)]
pub async fn patch_variable(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    Body(patch): Body<VariablePatch>,
) -> Result<Json<Variable>> {
    principal.require(Role::Op)?;
    let mask = update_mask(query.as_deref(), VARIABLE_FIELDS)?;
    if patch.key.as_ref().is_some_and(|named| *named != key) {
        return Err(Error::unprocessable(
            INVALID_KEY,
            format!("the body names another key than `{key}`: a variable's key cannot change"),
        ));
    }
    check_id("variable key", INVALID_KEY, &key)?;
    let value = changes(&mask, "value", patch.value.is_some()).then_some(patch.value);
    if value.as_ref().is_some_and(Option::is_none) {
        return Err(Error::unprocessable(
            INVALID_VARIABLE,
            "`update_mask` names `value` but the body has none: send the new value",
        ));
    }
    let description = changes(&mask, "description", patch.description.is_some())
        .then(|| patch.description.flatten().unwrap_or_default());
    let mut fields = Vec::new();
    if value.is_some() {
        fields.push("value");
    }
    if description.is_some() {
        fields.push("description");
    }
    // Applied to what is stored at the write: a change made meanwhile is kept, not lost.
    let variable = state
        .engine()
        .vault()
        .update_variable(&key, chrono::Utc::now(), |variable| {
            if let Some(Some(value)) = &value {
                variable.value = value.clone();
            }
            if let Some(description) = &description {
                variable.description = description.clone();
            }
            Ok(())
        })
        .await
        .map_err(vault_error(INVALID_VARIABLE))?
        .ok_or_else(|| Error::not_found(format!("variable `{key}`")))?;
    audit_by(
        &state,
        &principal,
        &from,
        "variable.update",
        &key,
        serde_json::json!({ "fields": fields }),
    )
    .await?;
    Ok(Json(variable_view(variable)))
}

/// Deletes a variable (Op and above).
#[utoipa::path(
    delete,
    path = "/api/v1/variables/{variable_key}",
    tag = "secrets",
    params(("variable_key" = String, Path, description = "the variable's key")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such variable", body = weft_api_types::ApiError),
        (status = 422, description = "invalid key", body = weft_api_types::ApiError),
    )
)]
pub async fn delete_variable(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(key): Path<String>,
) -> Result<StatusCode> {
    delete_secret(&state, &principal, &from, SecretKind::Variable, &key).await
}

// ------------------------------------------------------------------------- connections

const INVALID_CONNECTION: &str = "invalid_connection";
const INVALID_CONNECTION_ID: &str = "invalid_connection_id";

/// A connection as the API shows it: no password, the extra's sensitive keys masked.
fn connection_view(connection: vault::Connection) -> Connection {
    let has_password = connection.password.is_some();
    let shown = connection.redacted();
    Connection {
        connection_id: shown.conn_id,
        conn_type: shown.conn_type,
        description: non_empty(shown.description),
        host: shown.host,
        schema: shown.schema,
        login: shown.login,
        port: shown.port,
        extra: shown.extra,
        has_password,
    }
}

/// Connections by id, a page at a time (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "secrets",
    params(PageQuery),
    responses(
        (status = 200, description = "connections, without passwords", body = ConnectionList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 422, description = "invalid limit", body = weft_api_types::ApiError),
    )
)]
pub async fn list_connections(
    State(state): State<AppState>,
    principal: Principal,
    Params(query): Params<PageQuery>,
) -> Result<Json<ConnectionList>> {
    principal.require(Role::Op)?;
    let all = state
        .engine()
        .vault()
        .connections()
        .await
        .map_err(vault_error(INVALID_CONNECTION))?;
    let (connections, total_entries) = page(all, &query)?;
    Ok(Json(ConnectionList {
        connections: connections.into_iter().map(connection_view).collect(),
        total_entries,
    }))
}

async fn read_connection(state: &AppState, id: &str) -> Result<vault::Connection> {
    check_id("connection id", INVALID_CONNECTION_ID, id)?;
    state
        .engine()
        .vault()
        .connection(id)
        .await
        .map_err(vault_error(INVALID_CONNECTION))?
        .ok_or_else(|| Error::not_found(format!("connection `{id}`")))
}

/// One connection, without its password (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection_id}",
    tag = "secrets",
    params(("connection_id" = String, Path, description = "the connection's id")),
    responses(
        (status = 200, description = "the connection, without its password", body = Connection),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such connection", body = weft_api_types::ApiError),
        (status = 422, description = "invalid id", body = weft_api_types::ApiError),
    )
)]
pub async fn get_connection(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Connection>> {
    principal.require(Role::Op)?;
    Ok(Json(connection_view(read_connection(&state, &id).await?)))
}

/// The names of the fields of a new connection that are set, for its audit entry.
fn set_fields(connection: &vault::Connection) -> Vec<&'static str> {
    let mut fields = vec!["conn_type"];
    for (name, set) in [
        ("description", !connection.description.is_empty()),
        ("host", connection.host.is_some()),
        ("schema", connection.schema.is_some()),
        ("login", connection.login.is_some()),
        ("password", connection.password.is_some()),
        ("port", connection.port.is_some()),
        ("extra", connection.extra.is_some()),
    ] {
        if set {
            fields.push(name);
        }
    }
    fields
}

/// Creates a connection (Op and above); 409 if the id is taken.
#[utoipa::path(
    post,
    path = "/api/v1/connections",
    tag = "secrets",
    request_body = ConnectionCreate,
    responses(
        (status = 201, description = "the connection, without its password", body = Connection),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 409, description = "the id is taken", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body, id or field", body = weft_api_types::ApiError),
    )
)]
pub async fn create_connection(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Body(request): Body<ConnectionCreate>,
) -> Result<(StatusCode, Json<Connection>)> {
    principal.require(Role::Op)?;
    check_id(
        "connection id",
        INVALID_CONNECTION_ID,
        &request.connection_id,
    )?;
    if state
        .store()
        .secret(SecretKind::Connection, &request.connection_id)
        .await?
        .is_some()
    {
        return Err(Error::conflict(format!(
            "connection `{}` exists: change it with PATCH /api/v1/connections/{}",
            request.connection_id, request.connection_id
        )));
    }
    let connection = vault::Connection {
        conn_id: request.connection_id,
        conn_type: request.conn_type,
        description: request.description.unwrap_or_default(),
        host: request.host,
        schema: request.schema,
        login: request.login,
        password: request.password,
        port: request.port,
        extra: request.extra,
    };
    state
        .engine()
        .vault()
        .create_connection(&connection, chrono::Utc::now())
        .await
        .map_err(vault_error(INVALID_CONNECTION))?;
    audit_by(
        &state,
        &principal,
        &from,
        "connection.create",
        &connection.conn_id,
        serde_json::json!({ "fields": set_fields(&connection) }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(connection_view(connection))))
}

/// Sets `target` from a patch field when the patch changes it: `Some(None)` (or a field the
/// mask names that the body leaves out) clears it.
fn apply<T>(
    target: &mut Option<T>,
    value: Option<Option<T>>,
    mask: &Option<Vec<String>>,
    name: &'static str,
    fields: &mut Vec<&'static str>,
) {
    if changes(mask, name, value.is_some()) {
        *target = value.flatten();
        fields.push(name);
    }
}

/// Changes a connection (Op and above). Fields left out stay as they are: a patch that does
/// not name the password keeps it.
#[utoipa::path(
    patch,
    path = "/api/v1/connections/{connection_id}",
    tag = "secrets",
    params(
        ("connection_id" = String, Path, description = "the connection's id"),
        ("update_mask" = Option<String>, Query, description = "the fields to change, comma-separated; without it, the fields in the body"),
    ),
    request_body = ConnectionPatch,
    responses(
        (status = 200, description = "the connection, without its password", body = Connection),
        (status = 400, description = "invalid update_mask", body = weft_api_types::ApiError),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such connection", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body or field", body = weft_api_types::ApiError),
    )
)]
pub async fn patch_connection(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    Body(patch): Body<ConnectionPatch>,
) -> Result<Json<Connection>> {
    principal.require(Role::Op)?;
    let mask = update_mask(query.as_deref(), CONNECTION_FIELDS)?;
    if patch
        .connection_id
        .as_ref()
        .is_some_and(|named| *named != id)
    {
        return Err(Error::unprocessable(
            INVALID_CONNECTION_ID,
            format!(
                "the body names another id than `{id}`: a connection's id cannot change; \
                 create a new connection and delete this one"
            ),
        ));
    }
    check_id("connection id", INVALID_CONNECTION_ID, &id)?;
    if changes(&mask, "conn_type", patch.conn_type.is_some()) && patch.conn_type.is_none() {
        return Err(Error::unprocessable(
            INVALID_CONNECTION,
            "`update_mask` names `conn_type` but the body has none: send the new type",
        ));
    }
    let mut fields = Vec::new();
    // Applied to what is stored at the write: a change made meanwhile is kept, not lost.
    let connection = state
        .engine()
        .vault()
        .update_connection(&id, chrono::Utc::now(), |connection| {
            fields.clear();
            let patch = patch.clone();
            if changes(&mask, "conn_type", patch.conn_type.is_some()) {
                if let Some(conn_type) = patch.conn_type {
                    connection.conn_type = conn_type;
                }
                fields.push("conn_type");
            }
            if changes(&mask, "description", patch.description.is_some()) {
                connection.description = patch.description.flatten().unwrap_or_default();
                fields.push("description");
            }
            apply(&mut connection.host, patch.host, &mask, "host", &mut fields);
            apply(
                &mut connection.schema,
                patch.schema,
                &mask,
                "schema",
                &mut fields,
            );
            apply(
                &mut connection.login,
                patch.login,
                &mask,
                "login",
                &mut fields,
            );
            let password = patch.password;
            apply(
                &mut connection.password,
                password,
                &mask,
                "password",
                &mut fields,
            );
            apply(&mut connection.port, patch.port, &mask, "port", &mut fields);
            apply(
                &mut connection.extra,
                patch.extra,
                &mask,
                "extra",
                &mut fields,
            );
            Ok(())
        })
        .await
        .map_err(vault_error(INVALID_CONNECTION))?
        .ok_or_else(|| Error::not_found(format!("connection `{id}`")))?;
    audit_by(
        &state,
        &principal,
        &from,
        "connection.update",
        &id,
        serde_json::json!({ "fields": fields }),
    )
    .await?;
    Ok(Json(connection_view(connection)))
}

/// Deletes a connection (Op and above).
#[utoipa::path(
    delete,
    path = "/api/v1/connections/{connection_id}",
    tag = "secrets",
    params(("connection_id" = String, Path, description = "the connection's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such connection", body = weft_api_types::ApiError),
        (status = 422, description = "invalid id", body = weft_api_types::ApiError),
    )
)]
pub async fn delete_connection(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    delete_secret(&state, &principal, &from, SecretKind::Connection, &id).await
}

/// Deletes a variable or connection (Op and above), audited; 404 when there is none.
async fn delete_secret(
    state: &AppState,
    principal: &Principal,
    from: &ClientAddr,
    kind: SecretKind,
    id: &str,
) -> Result<StatusCode> {
    principal.require(Role::Op)?;
    let (what, invalid_id, invalid) = match kind {
        SecretKind::Variable => ("variable key", INVALID_KEY, INVALID_VARIABLE),
        SecretKind::Connection => ("connection id", INVALID_CONNECTION_ID, INVALID_CONNECTION),
    };
    check_id(what, invalid_id, id)?;
    let vault = state.engine().vault();
    let deleted = match kind {
        SecretKind::Variable => vault.delete_variable(id).await,
        SecretKind::Connection => vault.delete_connection(id).await,
    }
    .map_err(vault_error(invalid))?;
    if !deleted {
        return Err(Error::not_found(format!("{} `{id}`", kind.as_str())));
    }
    let action = format!("{}.delete", kind.as_str());
    audit_by(state, principal, from, &action, id, serde_json::Value::Null).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_masks_read_both_forms_and_refuse_unknown_fields() {
        let mask = update_mask(Some("update_mask=value%2Cdescription"), VARIABLE_FIELDS);
        assert_eq!(
            mask.expect("valid"),
            Some(vec!["value".to_string(), "description".to_string()])
        );
        let mask = update_mask(Some("update_mask=host&update_mask=port"), CONNECTION_FIELDS);
        assert_eq!(
            mask.expect("valid"),
            Some(vec!["host".to_string(), "port".to_string()])
        );
        assert_eq!(update_mask(None, VARIABLE_FIELDS).expect("valid"), None);
        let error = update_mask(Some("update_mask=key"), VARIABLE_FIELDS).expect_err("key");
        assert_eq!(error.code, "invalid_update_mask");
        let error = update_mask(Some("limit=3"), VARIABLE_FIELDS).expect_err("unknown");
        assert_eq!(error.code, "invalid_query");
    }

    #[test]
    fn ids_are_checked_for_length_and_control_characters() {
        assert!(check_id("variable key", INVALID_KEY, "k").is_ok());
        assert!(check_id(
            "variable key",
            INVALID_KEY,
            &"k".repeat(SECRET_ID_CHARS_MAX)
        )
        .is_ok());
        for bad in [
            String::new(),
            "k".repeat(SECRET_ID_CHARS_MAX + 1),
            "a\nb".to_string(),
        ] {
            let error = check_id("variable key", INVALID_KEY, &bad).expect_err("refused");
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
    }

    #[test]
    fn secret_named_variables_and_passwords_are_never_shown() {
        let shown = variable_view(vault::Variable {
            key: "db_password".into(),
            value: "hunter2".into(),
            description: String::new(),
        });
        assert_eq!(shown.value, MASKED_VALUE);
        assert_eq!(MASKED_VALUE, vault::MASK, "the UI's mask is the vault's");
        assert_eq!(shown.description, None);
        let shown = variable_view(vault::Variable {
            key: "bucket".into(),
            value: "logs".into(),
            description: "where logs go".into(),
        });
        assert_eq!(shown.value, "logs");
        let shown = connection_view(vault::Connection {
            conn_id: "pg".into(),
            conn_type: "postgres".into(),
            password: Some("pw".into()),
            extra: Some(r#"{"token":"t","region":"eu"}"#.into()),
            ..vault::Connection::default()
        });
        assert!(shown.has_password);
        let text = serde_json::to_string(&shown).expect("serializes");
        assert!(
            !text.contains("\"pw\"") && !text.contains("\"t\""),
            "{text}"
        );
        assert!(text.contains("eu"));
    }
}
