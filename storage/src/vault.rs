//! Variables and Connections, sealed at rest.
//!
//! A [`Keyring`] holds AES-256-GCM keys: the first (the primary) seals, every one opens, so a
//! key can be rotated while the node runs: the new key becomes primary, every row is sealed
//! again under it ([`Vault::rotate`]), and only then is the old key dropped. A sealed value is
//! `weft1:<key id>:<base64url of a random 96-bit nonce, the ciphertext and the tag>`, and is
//! bound to its row (kind and id are the associated data), so a sealed value copied onto
//! another row does not open. The store sees only sealed values; the ids and descriptions of
//! variables and connections are in clear, as in Airflow.
//!
//! The key text (a file or an environment variable) is one base64 key of 32 bytes per line,
//! primary first; `#` starts a comment. A key's id is the start of the SHA-256 of the key.

use crate::{Error, SecretGuard, SecretKind, SecretRow, Store, Write};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// Largest value of one variable (and serialized connection), in bytes, before sealing.
pub const SECRET_VALUE_BYTES_MAX: usize = 256 * 1024;
/// Variables (and, separately, connections) one store may hold.
pub const SECRETS_MAX: usize = 10_000;
/// Keys one keyring may hold.
pub const KEYS_MAX: usize = 16;
/// Bytes of one key (AES-256).
pub const KEY_BYTES: usize = 32;
/// How often a re-seal that met a concurrent change reads the row again before giving up.
const RESEAL_TRIES_MAX: usize = 8;

const SEALED_PREFIX: &str = "weft1";
/// Hex digits of a key's id.
const KEY_ID_CHARS: usize = 8;

/// Names whose values are masked in logs, rendered templates and API answers: Airflow's
/// `DEFAULT_SENSITIVE_FIELDS` (a name is sensitive when it contains one of them, in any case).
pub const SENSITIVE_NAMES: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
];

/// Whether values under this name are masked (Airflow's rule).
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_NAMES.iter().any(|word| name.contains(word))
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] Error),
    /// The key text is not a list of base64 keys of 32 bytes.
    #[error("bad secret key: {0}")]
    BadKey(String),
    /// No key of the keyring opens the value, or it is not a sealed value at all.
    #[error("cannot open {kind} `{id}`: {reason}")]
    Unopenable {
        kind: &'static str,
        id: String,
        reason: String,
    },
    /// The value breaks a limit or a rule; nothing was written.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

struct Key {
    id: String,
    bytes: [u8; KEY_BYTES],
    key: LessSafeKey,
}

/// AES-256-GCM keys: the first seals, every one opens.
pub struct Keyring {
    keys: Vec<Key>,
}

impl Clone for Keyring {
    fn clone(&self) -> Keyring {
        Keyring {
            keys: self.keys.iter().map(|known| key(known.bytes)).collect(),
        }
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes.
        formatter
            .debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

fn key(bytes: [u8; KEY_BYTES]) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let id: String = digest.as_ref()[..KEY_ID_CHARS / 2]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let unbound = UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte key is an AES-256 key");
    Key {
        id,
        bytes,
        key: LessSafeKey::new(unbound),
    }
}

fn random_key() -> [u8; KEY_BYTES] {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes
}

fn aad(kind: SecretKind, id: &str) -> String {
    format!("weft/{}/{id}", kind.as_str())
}

impl Keyring {
    /// A keyring of one fresh random key.
    pub fn generate() -> Keyring {
        Keyring {
            keys: vec![key(random_key())],
        }
    }

    /// Reads key text: one base64 key of 32 bytes per line, the primary first.
    pub fn parse(text: &str) -> Result<Keyring> {
        let mut keys: Vec<Key> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(line)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(line))
                .map_err(|error| {
                    VaultError::BadKey(format!("line {} is not base64: {error}", number + 1))
                })?;
            let bytes: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| {
                VaultError::BadKey(format!(
                    "line {} holds {} bytes; a key is {KEY_BYTES} bytes (make one with \
                     `head -c 32 /dev/urandom | base64`)",
                    number + 1,
                    decoded.len()
                ))
            })?;
            let next = key(bytes);
            if keys.iter().all(|known| known.id != next.id) {
                keys.push(next);
            }
        }
        if keys.is_empty() {
            return Err(VaultError::BadKey("no key in the key text".to_string()));
        }
        if keys.len() > KEYS_MAX {
            return Err(VaultError::BadKey(format!(
                "{} keys, more than {KEYS_MAX}: finish a rotation before starting another",
                keys.len()
            )));
        }
        Ok(Keyring { keys })
    }

    /// The key text of this keyring (what [`Keyring::parse`] reads).
    pub fn to_text(&self) -> String {
        let mut text = String::from(
            "# weft secret keys: the first seals, every one opens. Keep this file private.\n",
        );
        for key in &self.keys {
            text.push_str(&base64::engine::general_purpose::STANDARD.encode(key.bytes));
            text.push('\n');
        }
        text
    }

    /// This keyring with a fresh key in front: the first step of a rotation.
    pub fn with_new_primary(&self) -> Keyring {
        let mut keys = vec![key(random_key())];
        keys.extend(self.keys.iter().map(|old| key(old.bytes)));
        keys.truncate(KEYS_MAX);
        Keyring { keys }
    }

    /// The primary key alone: the last step of a rotation, once nothing is sealed under the
    /// others.
    pub fn primary_only(&self) -> Keyring {
        Keyring {
            keys: vec![key(self.keys[0].bytes)],
        }
    }

    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.id.as_str()).collect()
    }

    /// Seals `plaintext` for the row (kind, id) under the primary key.
    pub fn seal(&self, kind: SecretKind, id: &str, plaintext: &[u8]) -> String {
        let primary = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut sealed = plaintext.to_vec();
        primary
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(kind, id).as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM seals any value under 64 GiB");
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}:{}:{}",
            primary.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
        )
    }

    /// The id of the key a sealed value is sealed under.
    pub fn sealed_key_id(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, ':');
        (parts.next() == Some(SEALED_PREFIX))
            .then(|| parts.next())
            .flatten()
    }

    /// Opens a value sealed for the row (kind, id) by any key of this keyring.
    pub fn open(&self, kind: SecretKind, id: &str, sealed: &str) -> Result<Vec<u8>> {
        let unopenable = |reason: String| VaultError::Unopenable {
            kind: kind.as_str(),
            id: id.to_string(),
            reason,
        };
        let mut parts = sealed.splitn(3, ':');
        let (Some(SEALED_PREFIX), Some(key_id), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(unopenable("the stored value is not a sealed value".into()));
        };
        let Some(key) = self.keys.iter().find(|key| key.id == key_id) else {
            return Err(unopenable(format!(
                "it is sealed under key {key_id}, which is not in the keyring (keys: {})",
                self.key_ids().join(", ")
            )));
        };
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|error| unopenable(format!("the sealed value is not base64: {error}")))?;
        if body.len() < NONCE_LEN {
            return Err(unopenable("the sealed value is cut short".into()));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("the nonce has its length");
        let mut buffer = ciphertext.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad(kind, id).as_bytes()), &mut buffer)
            .map_err(|_| {
                unopenable(format!(
                    "key {key_id} does not authenticate it (altered, or sealed for another row)"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

/// An Airflow Variable, in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub description: String,
}

/// An Airflow Connection, in clear.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Connection {
    pub conn_id: String,
    pub conn_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// A JSON object as text, as in Airflow.
    #[serde(default)]
    pub extra: Option<String>,
}

/// What is sealed of a connection: everything but its id and description.
#[derive(Serialize, Deserialize)]
struct SealedConnection {
    conn_type: String,
    host: Option<String>,
    schema: Option<String>,
    login: Option<String>,
    password: Option<String>,
    port: Option<u16>,
    extra: Option<String>,
}

impl Connection {
    /// Reads an Airflow connection URI: `type://login:password@host:port/schema?k=v`, where a
    /// query of one `__extra__` parameter is the extra's JSON, and any other query becomes an
    /// extra object of its parameters.
    pub fn from_uri(conn_id: &str, uri: &str) -> Result<Connection> {
        let invalid = |why: &str| VaultError::Invalid(format!("connection URI {uri:?}: {why}"));
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| invalid("no `type://` in front"))?;
        if scheme.is_empty() {
            return Err(invalid("the connection type (the scheme) is empty"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (login, password) = match userinfo {
            Some(userinfo) => match userinfo.split_once(':') {
                Some((login, password)) => (Some(login), Some(password)),
                None => (Some(userinfo), None),
            },
            None => (None, None),
        };
        // An IPv6 host is bracketed: its colons are not the port's.
        let port_colon = match hostport.rfind(']') {
            Some(bracket) => hostport[bracket..].find(':').map(|colon| bracket + colon),
            None => hostport.rfind(':'),
        };
        let (host, port) = match port_colon {
            Some(colon) => {
                let port = hostport[colon + 1..]
                    .parse::<u16>()
                    .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
                (&hostport[..colon], Some(port))
            }
            None => (hostport, None),
        };
        let decode = |text: &str| -> Result<Option<String>> {
            if text.is_empty() {
                return Ok(None);
            }
            percent_decode(text)
                .map(Some)
                .ok_or_else(|| invalid("a %-escape is not valid UTF-8"))
        };
        let extra = match query {
            None | Some("") => None,
            Some(query) => {
                let mut pairs = serde_json::Map::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let name = percent_decode(&name.replace('+', " "))
                        .ok_or_else(|| invalid("a %-escape is not valid UTF-8"))?;
                    let value = percent_decode(&value.replace('+', " "))
                        .ok_or_else(|| invalid("a %-escape is not valid UTF-8"))?;
                    pairs.insert(name, serde_json::Value::String(value));
                }
                match pairs.get("__extra__") {
                    Some(serde_json::Value::String(json)) if pairs.len() == 1 => {
                        serde_json::from_str::<serde_json::Value>(json)
                            .map_err(|_| invalid("`__extra__` is not JSON"))?;
                        Some(json.clone())
                    }
                    _ => Some(serde_json::Value::Object(pairs).to_string()),
                }
            }
        };
        Ok(Connection {
            conn_id: conn_id.to_string(),
            conn_type: scheme.replace('-', "_"),
            description: String::new(),
            host: decode(host)?,
            schema: path.map(decode).transpose()?.flatten(),
            login: login.map(decode).transpose()?.flatten(),
            password: password.map(decode).transpose()?.flatten(),
            port,
            extra,
        })
    }

    /// The connection as an Airflow URI (what `Connection.get_uri()` gives).
    pub fn to_uri(&self) -> String {
        let mut uri = format!("{}://", self.conn_type.replace('_', "-"));
        if self.login.is_some() || self.password.is_some() {
            uri.push_str(&percent_encode(self.login.as_deref().unwrap_or("")));
            if let Some(password) = &self.password {
                uri.push(':');
                uri.push_str(&percent_encode(password));
            }
            uri.push('@');
        }
        uri.push_str(&percent_encode(self.host.as_deref().unwrap_or("")));
        if let Some(port) = self.port {
            uri.push_str(&format!(":{port}"));
        }
        if let Some(schema) = &self.schema {
            uri.push('/');
            uri.push_str(&percent_encode(schema));
        }
        if let Some(extra) = self.extra.as_deref().filter(|extra| !extra.is_empty()) {
            uri.push_str("?__extra__=");
            uri.push_str(&percent_encode(extra));
        }
        uri
    }

    /// The connection with its password and the sensitive keys of its extra masked.
    pub fn redacted(&self) -> Connection {
        let mut shown = self.clone();
        if shown.password.is_some() {
            shown.password = Some(MASK.to_string());
        }
        if let Some(extra) = &self.extra {
            if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(extra) {
                redact_json(&mut value);
                shown.extra = Some(value.to_string());
            }
        }
        shown
    }
}

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// Masks the values of sensitive keys anywhere inside a JSON value.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, inner) in map.iter_mut() {
                if is_sensitive(name) && !inner.is_object() && !inner.is_array() {
                    *inner = serde_json::Value::String(MASK.to_string());
                } else {
                    redact_json(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
            if let Some(value) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                decoded.push(value);
                index += 3;
                continue;
            }
        }
        decoded.push(byte);
        index += 1;
    }
    String::from_utf8(decoded).ok()
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rotation {
    /// Rows sealed again under the new primary key.
    pub resealed: usize,
    /// Rows that were already under it (written since the rotation began).
    pub current: usize,
}

/// Variables and connections of one store, sealed and opened with one keyring. Cheap to
/// share (`Arc`); the keyring can be swapped while the node runs.
pub struct Vault {
    store: Arc<dyn Store>,
    keyring: RwLock<Arc<Keyring>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Vault")
            .field("keyring", &self.keyring())
            .finish()
    }
}

fn check_id(kind: SecretKind, id: &str) -> Result<()> {
    let chars = id.chars().count();
    if chars == 0 || chars > crate::SECRET_ID_CHARS_MAX {
        return Err(VaultError::Invalid(format!(
            "a {} id is 1 to {} characters, not {chars}",
            kind.as_str(),
            crate::SECRET_ID_CHARS_MAX
        )));
    }
    if id.chars().any(|c| c.is_control()) {
        return Err(VaultError::Invalid(format!(
            "{} id {id:?} holds a control character",
            kind.as_str()
        )));
    }
    Ok(())
}

fn check_size(kind: SecretKind, id: &str, bytes: usize) -> Result<()> {
    if bytes > SECRET_VALUE_BYTES_MAX {
        return Err(VaultError::Invalid(format!(
            "the value of {} `{id}` is {bytes} bytes, over the limit of {SECRET_VALUE_BYTES_MAX}",
            kind.as_str()
        )));
    }
    Ok(())
}

impl Vault {
    pub fn new(store: Arc<dyn Store>, keyring: Keyring) -> Vault {
        Vault {
            store,
            keyring: RwLock::new(Arc::new(keyring)),
        }
    }

    /// The keyring in use now.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Uses `keyring` from now on (it must open what is stored: see [`Vault::rotate`]).
    pub fn set_keyring(&self, keyring: Keyring) {
        *self
            .keyring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keyring);
    }

    fn open_text(&self, row: &SecretRow) -> Result<String> {
        let plain = self.keyring().open(row.kind, &row.id, &row.sealed)?;
        String::from_utf8(plain).map_err(|_| VaultError::Unopenable {
            kind: row.kind.as_str(),
            id: row.id.clone(),
            reason: "the opened value is not UTF-8".into(),
        })
    }

    fn variable_of(&self, row: SecretRow) -> Result<Variable> {
        let value = self.open_text(&row)?;
        Ok(Variable {
            key: row.id,
            value,
            description: row.description,
        })
    }

    fn connection_of(&self, row: SecretRow) -> Result<Connection> {
        let text = self.open_text(&row)?;
        let sealed: SealedConnection =
            serde_json::from_str(&text).map_err(|error| VaultError::Unopenable {
                kind: row.kind.as_str(),
                id: row.id.clone(),
                reason: format!("the opened connection is not what this build reads: {error}"),
            })?;
        Ok(Connection {
            conn_id: row.id,
            conn_type: sealed.conn_type,
            description: row.description,
            host: sealed.host,
            schema: sealed.schema,
            login: sealed.login,
            password: sealed.password,
            port: sealed.port,
            extra: sealed.extra,
        })
    }

    pub async fn variable(&self, key: &str) -> Result<Option<Variable>> {
        match self.store.secret(SecretKind::Variable, key).await? {
            Some(row) => Ok(Some(self.variable_of(row)?)),
            None => Ok(None),
        }
    }

    /// Every variable, by key.
    pub async fn variables(&self) -> Result<Vec<Variable>> {
        let rows = self.store.secrets(SecretKind::Variable).await?;
        rows.into_iter().map(|row| self.variable_of(row)).collect()
    }

    /// Creates or replaces a variable.
    pub async fn set_variable(&self, variable: &Variable, at: weft_core::Timestamp) -> Result<()> {
        self.put_variable(variable, at, SecretGuard::Any).await
    }

    /// Creates a variable; one that exists is `VaultError::Store(Error::Conflict)`.
    pub async fn create_variable(
        &self,
        variable: &Variable,
        at: weft_core::Timestamp,
    ) -> Result<()> {
        self.put_variable(variable, at, SecretGuard::Absent).await
    }

    /// Changes a variable as `change` says, from what is stored: a change made meanwhile by
    /// someone else is read again and `change` applied to it, never overwritten. `None` when
    /// there is no such variable.
    pub async fn update_variable(
        &self,
        key: &str,
        at: weft_core::Timestamp,
        mut change: impl FnMut(&mut Variable) -> Result<()>,
    ) -> Result<Option<Variable>> {
        for _ in 0..RESEAL_TRIES_MAX {
            let Some(row) = self.store.secret(SecretKind::Variable, key).await? else {
                return Ok(None);
            };
            let guard = SecretGuard::Sealed(row.sealed.clone());
            let mut variable = self.variable_of(row)?;
            change(&mut variable)?;
            match self.put_variable(&variable, at, guard).await {
                Err(VaultError::Store(error)) if error.is_conflict() => continue,
                Err(error) => return Err(error),
                Ok(()) => return Ok(Some(variable)),
            }
        }
        Err(VaultError::Invalid(format!(
            "variable `{key}` kept changing while it was updated; try again"
        )))
    }

    async fn put_variable(
        &self,
        variable: &Variable,
        at: weft_core::Timestamp,
        guard: SecretGuard,
    ) -> Result<()> {
        let kind = SecretKind::Variable;
        check_id(kind, &variable.key)?;
        check_size(kind, &variable.key, variable.value.len())?;
        self.put(
            kind,
            &variable.key,
            &variable.description,
            variable.value.as_bytes(),
            at,
            guard,
        )
        .await
    }

    /// Removes a variable; `false` when there was none.
    pub async fn delete_variable(&self, key: &str) -> Result<bool> {
        self.delete(SecretKind::Variable, key).await
    }

    pub async fn connection(&self, conn_id: &str) -> Result<Option<Connection>> {
        match self.store.secret(SecretKind::Connection, conn_id).await? {
            Some(row) => Ok(Some(self.connection_of(row)?)),
            None => Ok(None),
        }
    }

    /// Every connection, by id.
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        let rows = self.store.secrets(SecretKind::Connection).await?;
        rows.into_iter()
            .map(|row| self.connection_of(row))
            .collect()
    }

    /// Creates or replaces a connection.
    pub async fn set_connection(
        &self,
        connection: &Connection,
        at: weft_core::Timestamp,
    ) -> Result<()> {
        self.put_connection(connection, at, SecretGuard::Any).await
    }

    /// Creates a connection; one that exists is `VaultError::Store(Error::Conflict)`.
    pub async fn create_connection(
        &self,
        connection: &Connection,
        at: weft_core::Timestamp,
    ) -> Result<()> {
        self.put_connection(connection, at, SecretGuard::Absent)
            .await
    }

    /// Changes a connection as `change` says, from what is stored (see `update_variable`).
    pub async fn update_connection(
        &self,
        conn_id: &str,
        at: weft_core::Timestamp,
        mut change: impl FnMut(&mut Connection) -> Result<()>,
    ) -> Result<Option<Connection>> {
        for _ in 0..RESEAL_TRIES_MAX {
            let Some(row) = self.store.secret(SecretKind::Connection, conn_id).await? else {
                return Ok(None);
            };
            let guard = SecretGuard::Sealed(row.sealed.clone());
            let mut connection = self.connection_of(row)?;
            change(&mut connection)?;
            match self.put_connection(&connection, at, guard).await {
                Err(VaultError::Store(error)) if error.is_conflict() => continue,
                Err(error) => return Err(error),
                Ok(()) => return Ok(Some(connection)),
            }
        }
        Err(VaultError::Invalid(format!(
            "connection `{conn_id}` kept changing while it was updated; try again"
        )))
    }

    async fn put_connection(
        &self,
        connection: &Connection,
        at: weft_core::Timestamp,
        guard: SecretGuard,
    ) -> Result<()> {
        let kind = SecretKind::Connection;
        check_id(kind, &connection.conn_id)?;
        if connection.conn_type.is_empty() {
            return Err(VaultError::Invalid(format!(
                "connection `{}` has no conn_type",
                connection.conn_id
            )));
        }
        if let Some(extra) = &connection.extra {
            if !extra.is_empty() && serde_json::from_str::<serde_json::Value>(extra).is_err() {
                return Err(VaultError::Invalid(format!(
                    "the extra of connection `{}` is not JSON",
                    connection.conn_id
                )));
            }
        }
        let sealed = SealedConnection {
            conn_type: connection.conn_type.clone(),
            host: connection.host.clone(),
            schema: connection.schema.clone(),
            login: connection.login.clone(),
            password: connection.password.clone(),
            port: connection.port,
            extra: connection.extra.clone(),
        };
        let text = serde_json::to_string(&sealed).expect("a connection serializes");
        check_size(kind, &connection.conn_id, text.len())?;
        let id = &connection.conn_id;
        self.put(
            kind,
            id,
            &connection.description,
            text.as_bytes(),
            at,
            guard,
        )
        .await
    }

    /// Removes a connection; `false` when there was none.
    pub async fn delete_connection(&self, conn_id: &str) -> Result<bool> {
        self.delete(SecretKind::Connection, conn_id).await
    }

    async fn put(
        &self,
        kind: SecretKind,
        id: &str,
        description: &str,
        plaintext: &[u8],
        at: weft_core::Timestamp,
        guard: SecretGuard,
    ) -> Result<()> {
        if description.len() > crate::SECRET_DESCRIPTION_BYTES_MAX {
            return Err(VaultError::Invalid(format!(
                "the description of {} `{id}` is {} bytes, over the limit of {}",
                kind.as_str(),
                description.len(),
                crate::SECRET_DESCRIPTION_BYTES_MAX
            )));
        }
        if !matches!(guard, SecretGuard::Sealed(_)) && self.store.secret(kind, id).await?.is_none()
        {
            let count = self.store.secrets(kind).await?.len();
            if count >= SECRETS_MAX {
                return Err(VaultError::Invalid(format!(
                    "{count} {}s are stored, the limit: delete one before adding `{id}`",
                    kind.as_str()
                )));
            }
        }
        let row = SecretRow {
            kind,
            id: id.to_string(),
            description: description.to_string(),
            sealed: self.keyring().seal(kind, id, plaintext),
            updated_at: at,
        };
        let write = Write::PutSecret { row, guard };
        self.store.write(vec![write]).await?;
        Ok(())
    }

    async fn delete(&self, kind: SecretKind, id: &str) -> Result<bool> {
        let existed = self.store.secret(kind, id).await?.is_some();
        let write = Write::DeleteSecret {
            kind,
            id: id.to_string(),
        };
        self.store.write(vec![write]).await?;
        Ok(existed)
    }

    /// Rotates to `keyring` (its primary is the new key; it must still hold the keys that
    /// sealed what is stored): from now on values are sealed under the new key, and every
    /// stored row is sealed again under it, each with a compare-and-set on its old sealed
    /// value so that a change made meanwhile is never overwritten. When this returns `Ok`,
    /// nothing stored needs a key but the primary.
    pub async fn rotate(&self, keyring: Keyring) -> Result<Rotation> {
        self.set_keyring(keyring);
        let mut rotation = Rotation::default();
        for kind in [SecretKind::Variable, SecretKind::Connection] {
            for row in self.store.secrets(kind).await? {
                if self.reseal(row).await? {
                    rotation.resealed += 1;
                } else {
                    rotation.current += 1;
                }
            }
        }
        Ok(rotation)
    }

    /// Seals one row again under the primary key; `false` if it already was (or is gone).
    async fn reseal(&self, mut row: SecretRow) -> Result<bool> {
        for _ in 0..RESEAL_TRIES_MAX {
            let keyring = self.keyring();
            if Keyring::sealed_key_id(&row.sealed) == Some(keyring.primary_id()) {
                return Ok(false);
            }
            let plain = keyring.open(row.kind, &row.id, &row.sealed)?;
            let expected = row.sealed.clone();
            row.sealed = keyring.seal(row.kind, &row.id, &plain);
            let (kind, id) = (row.kind, row.id.clone());
            let write = Write::PutSecret {
                row,
                guard: SecretGuard::Sealed(expected),
            };
            match self.store.write(vec![write]).await {
                Ok(()) => return Ok(true),
                Err(error) if error.is_conflict() => match self.store.secret(kind, &id).await? {
                    Some(current) => row = current,
                    None => return Ok(false),
                },
                Err(error) => return Err(error.into()),
            }
        }
        Err(VaultError::Invalid(
            "a row kept changing during the rotation; run it again".to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    fn at() -> weft_core::Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time")
    }

    #[test]
    fn sealed_values_open_only_for_their_row_and_key() {
        let keyring = Keyring::generate();
        let sealed = keyring.seal(SecretKind::Variable, "db_password", b"hunter2");
        assert!(!sealed.contains("hunter2"));
        let opened = keyring.open(SecretKind::Variable, "db_password", &sealed);
        assert_eq!(opened.expect("it opens"), b"hunter2");
        // Another row, another kind, another key, an altered byte: all refused.
        assert!(keyring
            .open(SecretKind::Variable, "other", &sealed)
            .is_err());
        assert!(keyring
            .open(SecretKind::Connection, "db_password", &sealed)
            .is_err());
        assert!(Keyring::generate()
            .open(SecretKind::Variable, "db_password", &sealed)
            .is_err());
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(keyring
            .open(SecretKind::Variable, "db_password", &altered)
            .is_err());
        // Two seals of one value differ (a fresh nonce each time).
        assert_ne!(
            sealed,
            keyring.seal(SecretKind::Variable, "db_password", b"hunter2")
        );
    }

    #[test]
    fn key_text_round_trips_and_bad_keys_are_named() {
        let keyring = Keyring::generate().with_new_primary();
        let parsed = Keyring::parse(&keyring.to_text()).expect("its own text parses");
        assert_eq!(parsed.key_ids(), keyring.key_ids());
        let short = Keyring::parse("c2hvcnQ=").expect_err("5 bytes is no key");
        assert!(
            short.to_string().contains("line 1 holds 5 bytes"),
            "{short}"
        );
        assert!(Keyring::parse("# only a comment\n").is_err());
        assert!(Keyring::parse("not base64 at all!").is_err());
    }

    #[test]
    fn connection_uris_read_and_write_as_airflow_does() {
        let connection = Connection::from_uri(
            "pg",
            "postgres://user%40x:p%2Fss@db.example.com:5432/warehouse?sslmode=require",
        )
        .expect("a valid URI");
        assert_eq!(connection.conn_type, "postgres");
        assert_eq!(connection.login.as_deref(), Some("user@x"));
        assert_eq!(connection.password.as_deref(), Some("p/ss"));
        assert_eq!(connection.host.as_deref(), Some("db.example.com"));
        assert_eq!(connection.port, Some(5432));
        assert_eq!(connection.schema.as_deref(), Some("warehouse"));
        assert_eq!(
            connection.extra.as_deref(),
            Some(r#"{"sslmode":"require"}"#)
        );
        let again = Connection::from_uri("pg", &connection.to_uri()).expect("its own URI");
        assert_eq!(again, connection);
        let underscored = Connection::from_uri("g", "google-cloud-platform://").expect("valid");
        assert_eq!(underscored.conn_type, "google_cloud_platform");
        assert_eq!(underscored.host, None);
        assert!(Connection::from_uri("x", "no scheme").is_err());
        assert!(Connection::from_uri("x", "http://h:99999").is_err());
    }

    #[test]
    fn redaction_masks_the_password_and_sensitive_extra_keys() {
        let connection = Connection {
            conn_id: "api".into(),
            conn_type: "http".into(),
            password: Some("pw".into()),
            extra: Some(r#"{"api_key":"k","region":"eu","nested":{"Token":"t"}}"#.into()),
            ..Connection::default()
        };
        let shown = connection.redacted();
        assert_eq!(shown.password.as_deref(), Some(MASK));
        let extra: serde_json::Value =
            serde_json::from_str(shown.extra.as_deref().expect("kept")).expect("JSON");
        assert_eq!(extra["api_key"], MASK);
        assert_eq!(extra["region"], "eu");
        assert_eq!(extra["nested"]["Token"], MASK);
        assert!(is_sensitive("DB_PASSWORD") && is_sensitive("my_api_key"));
        assert!(!is_sensitive("bucket"));
    }

    #[tokio::test]
    async fn the_store_sees_only_sealed_values_and_rotation_reseals_everything() {
        let store = Arc::new(MemoryStore::new());
        let vault = Vault::new(store.clone(), Keyring::generate());
        let variable = Variable {
            key: "api_secret".into(),
            value: "s3cr3t-value".into(),
            description: "for the API".into(),
        };
        vault.set_variable(&variable, at()).await.expect("set");
        let connection = Connection::from_uri("db", "mysql://root:pw-123@h:3306/s").expect("uri");
        vault.set_connection(&connection, at()).await.expect("set");
        let rows = store.secrets(SecretKind::Variable).await.expect("rows");
        assert!(!rows[0].sealed.contains("s3cr3t"));
        let rows = store.secrets(SecretKind::Connection).await.expect("rows");
        assert!(!rows[0].sealed.contains("pw-123") && !rows[0].sealed.contains("mysql"));

        let old = vault.keyring();
        let rotation = vault.rotate(old.with_new_primary()).await.expect("rotates");
        assert_eq!(
            rotation,
            Rotation {
                resealed: 2,
                current: 0
            }
        );
        // After the rotation the new key alone opens everything; the old one opens nothing.
        let new_only = vault.keyring().primary_only();
        assert_ne!(new_only.primary_id(), old.primary_id());
        vault.set_keyring(new_only);
        assert_eq!(
            vault.variable("api_secret").await.expect("opens"),
            Some(variable)
        );
        assert_eq!(
            vault.connection("db").await.expect("opens"),
            Some(connection)
        );
        let again = vault
            .rotate(vault.keyring().primary_only())
            .await
            .expect("no-op");
        assert_eq!(
            again,
            Rotation {
                resealed: 0,
                current: 2
            }
        );
        vault.set_keyring(old.primary_only());
        assert!(
            vault.variables().await.is_err(),
            "the old key opens nothing any more"
        );
    }

    #[tokio::test]
    async fn creates_refuse_what_exists_and_updates_start_from_what_is_stored() {
        let vault = Vault::new(Arc::new(MemoryStore::new()), Keyring::generate());
        let variable = Variable {
            key: "bucket".into(),
            value: "s3://a".into(),
            description: "first".into(),
        };
        vault
            .create_variable(&variable, at())
            .await
            .expect("created");
        let again = vault.create_variable(&variable, at()).await;
        assert!(
            matches!(&again, Err(VaultError::Store(error)) if error.is_conflict()),
            "{again:?}"
        );
        let updated = vault
            .update_variable("bucket", at(), |stored| {
                stored.value.push_str("/b");
                Ok(())
            })
            .await
            .expect("updated");
        let expected = Variable {
            value: "s3://a/b".into(),
            ..variable
        };
        assert_eq!(updated, Some(expected.clone()));
        assert_eq!(
            vault.variable("bucket").await.expect("read"),
            Some(expected)
        );
        let missing = vault.update_variable("nope", at(), |_| Ok(())).await;
        assert_eq!(missing.expect("no error"), None);
        let connection = Connection::from_uri("db", "postgres://u:p@h/s").expect("uri");
        vault
            .create_connection(&connection, at())
            .await
            .expect("created");
        assert!(vault.create_connection(&connection, at()).await.is_err());
        let changed = vault
            .update_connection("db", at(), |stored| {
                stored.port = Some(6432);
                Ok(())
            })
            .await
            .expect("updated")
            .expect("exists");
        assert_eq!(
            changed.password.as_deref(),
            Some("p"),
            "untouched fields are kept"
        );
        assert_eq!(changed.port, Some(6432));
    }

    #[tokio::test]
    async fn limits_are_reachable_and_enforced() {
        let vault = Vault::new(Arc::new(MemoryStore::new()), Keyring::generate());
        let at_limit = Variable {
            key: "k".repeat(crate::SECRET_ID_CHARS_MAX),
            value: "v".repeat(SECRET_VALUE_BYTES_MAX),
            description: "d".repeat(crate::SECRET_DESCRIPTION_BYTES_MAX),
        };
        vault
            .set_variable(&at_limit, at())
            .await
            .expect("a value at every limit is stored");
        assert_eq!(
            vault.variable(&at_limit.key).await.expect("read"),
            Some(at_limit.clone())
        );
        let mut over = at_limit.clone();
        over.value.push('v');
        assert!(matches!(
            vault.set_variable(&over, at()).await,
            Err(VaultError::Invalid(_))
        ));
        let mut over = at_limit.clone();
        over.key.push('k');
        assert!(matches!(
            vault.set_variable(&over, at()).await,
            Err(VaultError::Invalid(_))
        ));
        let mut over = at_limit;
        over.description.push('d');
        assert!(matches!(
            vault.set_variable(&over, at()).await,
            Err(VaultError::Invalid(_))
        ));
    }
}
