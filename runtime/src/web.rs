//! The web side of a node: the session-signing secret kept in the data directory, the first
//! admin created on standalone's first start, and the HTTP server started next to the engine.

use crate::config::Config;
use anyhow::Context;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use weft_actors::Engine;
use weft_api_types::Role;

/// File in the data directory holding the key that signs sessions.
const SESSION_SECRET_FILE: &str = "web_session_secret";
/// File in the data directory holding the first admin's generated password, as Airflow's
/// standalone does.
pub const ADMIN_PASSWORD_FILE: &str = "standalone_admin_password.txt";
const SESSION_SECRET_BYTES: usize = 32;
/// Length of generated passwords.
const GENERATED_PASSWORD_CHARS: usize = 20;

/// Writes `contents` to a new file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

fn random_bytes(count: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; count];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A password of letters and digits.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    random_bytes(GENERATED_PASSWORD_CHARS)
        .iter()
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect()
}

/// The session secret of this data directory, created on first use, so that sessions
/// survive a restart.
fn session_secret(home: &Path) -> anyhow::Result<Vec<u8>> {
    let path = home.join(SESSION_SECRET_FILE);
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= SESSION_SECRET_BYTES => Ok(secret),
        Ok(_) | Err(_) => {
            let secret = random_bytes(SESSION_SECRET_BYTES);
            write_private(&path, &secret)?;
            Ok(secret)
        }
    }
}

/// On the first start (no user at all), creates `admin` with a generated password, prints it
/// and keeps it in `standalone_admin_password.txt`.
pub async fn bootstrap_admin(config: &Config, engine: &Engine) -> anyhow::Result<()> {
    let store = engine.store();
    if !store.users().await?.is_empty() {
        return Ok(());
    }
    let password = generate_password();
    weft_web::auth::create_user(store.as_ref(), "admin", &password, Role::Admin)
        .await
        .map_err(|error| anyhow::anyhow!("cannot create the first admin: {error}"))?;
    let path = config.core.home.join(ADMIN_PASSWORD_FILE);
    write_private(&path, format!("{password}\n").as_bytes())?;
    eprintln!(
        "weft standalone: created user `admin` with password `{password}` (also in {})",
        path.display()
    );
    Ok(())
}

pub fn web_config(config: &Config) -> anyhow::Result<weft_web::WebConfig> {
    let mut web = weft_web::WebConfig::new(session_secret(&config.core.home)?);
    web.session_ttl_s = config.web.session_ttl_s;
    web.refresh_ttl_s = config.web.refresh_ttl_s;
    web.login_attempts_per_minute = config.web.login_attempts_per_minute;
    web.login_failures_per_user_per_minute = config.web.login_failures_per_user_per_minute;
    web.api_requests_per_minute = config.web.api_requests_per_minute;
    web.pkg_dir = PathBuf::from(&config.web.pkg_dir);
    Ok(web)
}

/// Why the web side does not start.
#[derive(Debug, thiserror::Error)]
pub enum WebStartError {
    #[error(
        "refusing to serve the UI and API over plain HTTP on {bind} ({address}), which is not a \
         loopback address: passwords and sessions would cross the network in clear. Set \
         `web.tls_cert` and `web.tls_key` to PEM files to serve HTTPS (docs/security.md), or, \
         if a proxy in front terminates TLS, pass --insecure-http (or set web.insecure_http = true)"
    )]
    PlainHttpExposed {
        bind: String,
        address: std::net::IpAddr,
    },
    #[error("web.tls_cert and web.tls_key go together: set {missing} too, or neither")]
    HalfTls { missing: &'static str },
}

/// The TLS files, if TLS is configured.
fn tls_files(config: &Config) -> Result<Option<(PathBuf, PathBuf)>, WebStartError> {
    match (&config.web.tls_cert, &config.web.tls_key) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(WebStartError::HalfTls {
            missing: "web.tls_key",
        }),
        (None, Some(_)) => Err(WebStartError::HalfTls {
            missing: "web.tls_cert",
        }),
    }
}

/// Refuses plain HTTP on any address `bind` resolves to that is not loopback, unless
/// `insecure_http`.
pub fn check_plain_http(
    bind: &str,
    addresses: &[std::net::SocketAddr],
    insecure_http: bool,
) -> Result<(), WebStartError> {
    if insecure_http {
        return Ok(());
    }
    match addresses.iter().find(|address| !address.ip().is_loopback()) {
        Some(exposed) => Err(WebStartError::PlainHttpExposed {
            bind: bind.to_string(),
            address: exposed.ip(),
        }),
        None => Ok(()),
    }
}

/// Binds `bind` and serves the UI and API until `shutdown` is notified: over HTTPS when
/// `web.tls_cert` and `web.tls_key` are set, else over plain HTTP, which only a loopback
/// address gets without `web.insecure_http`.
pub async fn start(
    config: &Config,
    engine: &Engine,
    bind: &str,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: std::sync::Arc<tokio::sync::Notify>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tls = tls_files(config)?;
    let tls_config = match &tls {
        Some((cert, key)) => Some(weft_web::tls::server_config(cert, key)?),
        None => {
            // Checked before binding, so that a refused node never listens.
            let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(bind)
                .await
                .with_context(|| format!("cannot resolve --bind {bind}: use ADDR:PORT"))?
                .collect();
            check_plain_http(bind, &addresses, config.web.insecure_http)?;
            None
        }
    };
    let mut web = web_config(config)?;
    web.tls = tls_config.is_some();
    let state = weft_web::AppState::new(engine.clone(), web, Some(metrics))?;
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| {
        format!("cannot listen on {bind}: is another process using it? pass --bind ADDR:PORT")
    })?;
    let address = listener.local_addr()?;
    let scheme = if tls_config.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!("weft standalone: UI and API on {scheme}://{address}");
    let router = weft_web::router(state);
    Ok(tokio::spawn(async move {
        let stopped = async move { shutdown.notified().await };
        let served = match tls_config {
            Some(tls_config) => {
                weft_web::tls::serve_tls(listener, tls_config, router, stopped).await
            }
            None => weft_web::serve(listener, router, stopped).await,
        };
        if let Err(error) = served {
            tracing::error!(%error, "the web server stopped");
        }
    }))
}

/// `weft users create`: creates (or replaces) a user in the store.
pub async fn create_user(
    store: &dyn weft_storage::Store,
    username: &str,
    role: &str,
    password: &str,
) -> anyhow::Result<()> {
    let role = Role::parse(role).ok_or_else(|| {
        anyhow::anyhow!("role `{role}` is unknown: use admin, op, user or viewer")
    })?;
    weft_web::auth::create_user(store, username, password, role)
        .await
        .map_err(|error| anyhow::anyhow!("{}", error.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_beyond_loopback_unless_insecure() {
        let loopback: Vec<std::net::SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
        ];
        assert!(check_plain_http("localhost:8080", &loopback, false).is_ok());
        for exposed in ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080"] {
            let addresses = vec![exposed.parse().unwrap()];
            let error = check_plain_http(exposed, &addresses, false)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("web.tls_cert") && error.contains("--insecure-http"),
                "{error}"
            );
            assert!(check_plain_http(exposed, &addresses, true).is_ok());
        }
    }
}
