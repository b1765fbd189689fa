//! The deployment's certificate authority and the certificates it issues.
//!
//! One CA per deployment (`ca.pem`, `ca.key`) signs a leaf certificate for each node and each
//! worker (`node-NAME.pem` / `.key`, `worker-NAME.pem` / `.key`). A leaf names its holder in a
//! URI subject alternative name, `weft://node/NAME` or `weft://worker/NAME`: that name, read
//! back by [`identity_of`] from the certificate a peer presented in the TLS handshake, is the
//! only thing that says who the peer is. A node's certificate also carries the DNS names and IP
//! addresses its listener is reached at, which clients check as with any TLS server. Every leaf
//! may act as client and as server (both extended key usages). Private keys are written with
//! mode 0600.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The longest node or worker name.
pub const NAME_CHARS_MAX: usize = 64;
/// How long the CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a leaf certificate is valid; issuing again for the same name renews it.
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// A certificate is valid from this long before it was issued, for clocks a little behind.
const BACKDATE_HOURS: i64 = 1;
/// The scheme and authority of identity URIs: `weft://worker/NAME`, `weft://node/NAME`.
const URI_PREFIX: &str = "weft://";

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";

/// What a certificate holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Worker,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a certificate: a worker or a node, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Worker(String),
    Node(String),
}

impl Identity {
    /// A worker identity, its name checked.
    pub fn worker(name: &str) -> Result<Identity, CertError> {
        check_name(Role::Worker, name)?;
        Ok(Identity::Worker(name.to_string()))
    }

    /// A node identity, its name checked.
    pub fn node(name: &str) -> Result<Identity, CertError> {
        check_name(Role::Node, name)?;
        Ok(Identity::Node(name.to_string()))
    }

    pub fn role(&self) -> Role {
        match self {
            Identity::Worker(_) => Role::Worker,
            Identity::Node(_) => Role::Node,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Identity::Worker(name) | Identity::Node(name) => name,
        }
    }

    /// The URI the certificate carries: `weft://worker/NAME` or `weft://node/NAME`.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role(), self.name())
    }

    /// Reads an identity URI back; anything but `weft://worker/NAME` or `weft://node/NAME`
    /// with a valid name is refused.
    pub fn from_uri(uri: &str) -> Result<Identity, CertError> {
        let bad = |reason: &str| CertError::BadIdentityUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or_else(|| bad("it does not start with weft://"))?;
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected weft://worker/NAME or weft://node/NAME"))?;
        match kind {
            "worker" => Identity::worker(name),
            "node" => Identity::node(name),
            _ => Err(bad("the kind is neither `worker` nor `node`")),
        }
    }

    /// The stem of the certificate and key files: `worker-NAME`, `node-NAME`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.role(), self.name())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{role} name `{name}` is invalid: {reason}")]
    BadName {
        role: Role,
        name: String,
        reason: String,
    },
    #[error(
        "a CA already exists in {}: kept (replacing it makes every certificate it issued \
         untrusted; `weft certs init --force` does so)",
        dir.display()
    )]
    CaExists { dir: PathBuf },
    #[error("no CA in {} (ca.pem and ca.key): run `weft certs init` first", dir.display())]
    NoCa { dir: PathBuf },
    #[error("the CA in {} cannot be used: {reason}", dir.display())]
    BadCa { dir: PathBuf, reason: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is neither an IP address nor a DNS name")]
    BadSan(String),
    #[error(
        "a node certificate needs at least one DNS name or IP address (--san) that workers \
         connect to"
    )]
    NodeWithoutSan,
    #[error("DNS names and IP addresses (--san) are for node certificates, not workers")]
    WorkerWithSan,
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("the certificate carries no weft identity (a URI SAN weft://worker/NAME or weft://node/NAME)")]
    NoIdentity,
    #[error("the certificate carries {0} weft identities; exactly one is allowed")]
    ManyIdentities(usize),
    #[error("`{uri}` is not a weft identity: {reason}")]
    BadIdentityUri { uri: String, reason: String },
}

fn check_name(role: Role, name: &str) -> Result<(), CertError> {
    let bad = |reason: String| CertError::BadName {
        role,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty".to_string()));
    }
    if name.len() > NAME_CHARS_MAX {
        return Err(bad(format!(
            "it has {} characters, more than {NAME_CHARS_MAX}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "`{c}` is not allowed (letters, digits, `.`, `_` and `-` are)"
        )));
    }
    if name == "." || name == ".." {
        return Err(bad("it is not a file name".to_string()));
    }
    Ok(())
}

/// Where `init` wrote the CA.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where `issue` wrote a leaf certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub identity: Identity,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A certificate for this identity was there before and was replaced.
    pub replaced: bool,
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join(CA_CERT_FILE)
}

pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join(CA_KEY_FILE)
}

pub fn cert_path(dir: &Path, identity: &Identity) -> PathBuf {
    dir.join(format!("{}.pem", identity.file_stem()))
}

pub fn key_path(dir: &Path, identity: &Identity) -> PathBuf {
    dir.join(format!("{}.key", identity.file_stem()))
}

/// Makes the deployment's CA in `dir` (created, mode 0700, if missing): `ca.pem` and `ca.key`
/// (0600). An existing CA is kept, and is an error, unless `replace`.
pub fn init(dir: &Path, replace: bool) -> Result<CaFiles, CertError> {
    let files = CaFiles {
        cert: ca_cert_path(dir),
        key: ca_key_path(dir),
    };
    if !replace && (files.cert.exists() || files.key.exists()) {
        return Err(CertError::CaExists {
            dir: dir.to_path_buf(),
        });
    }
    create_dir(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // A name of its own (from its key), so that a certificate from another deployment's CA
    // is refused as from an unknown issuer rather than as a bad signature.
    let tag: String = key.public_key_raw()[1..9]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    params.distinguished_name = distinguished_name(&format!("weft deployment CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(BACKDATE_HOURS);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key)?;
    // The key first: a certificate without its key is a CA nobody can issue from.
    write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// Issues a leaf certificate for `identity`, signed by the CA in `dir`, valid as TLS client and
/// server. `sans` (DNS names or IP addresses, at least one) go into a node's certificate; a
/// worker's takes none. An earlier certificate for the same identity is replaced.
pub fn issue(dir: &Path, identity: &Identity, sans: &[String]) -> Result<Issued, CertError> {
    check_name(identity.role(), identity.name())?;
    let mut names = vec![SanType::URI(identity.uri().try_into()?)];
    match identity {
        Identity::Node(_) if sans.is_empty() => return Err(CertError::NodeWithoutSan),
        Identity::Worker(_) if !sans.is_empty() => return Err(CertError::WorkerWithSan),
        _ => {}
    }
    for san in sans {
        names.push(parse_san(san)?);
    }
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("weft {identity}"));
    params.subject_alt_names = names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(BACKDATE_HOURS);
    params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    let cert = params.signed_by(&key, &issuer)?;
    let issued = Issued {
        identity: identity.clone(),
        cert: cert_path(dir, identity),
        key: key_path(dir, identity),
        replaced: false,
    };
    let replaced = issued.cert.exists() || issued.key.exists();
    write_file(&issued.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&issued.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(Issued { replaced, ..issued })
}

/// The identity a certificate (DER) names in its `weft://` URI SAN. The caller has verified
/// the certificate (the TLS handshake did); this only reads it.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|error| CertError::Parse(error.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|error| CertError::Parse(error.to_string()))?
        .ok_or(CertError::NoIdentity)?;
    let uris: Vec<&str> = names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => {
                Some(*uri)
            }
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertError::NoIdentity),
        [uri] => Identity::from_uri(uri),
        _ => Err(CertError::ManyIdentities(uris.len())),
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn parse_san(san: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !san.is_empty()
        && san.len() <= 253
        && san.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(CertError::BadSan(san.to_string()));
    }
    Ok(SanType::DnsName(
        san.try_into()
            .map_err(|_| CertError::BadSan(san.to_string()))?,
    ))
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let (cert_path, key_path) = (ca_cert_path(dir), ca_key_path(dir));
    if !cert_path.exists() || !key_path.exists() {
        return Err(CertError::NoCa {
            dir: dir.to_path_buf(),
        });
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CertError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })
    };
    let bad = |what: &str, error: rcgen::Error| CertError::BadCa {
        dir: dir.to_path_buf(),
        reason: format!("{what}: {error}"),
    };
    let key = KeyPair::from_pem(&read(&key_path)?).map_err(|error| bad("ca.key", error))?;
    Issuer::from_ca_cert_pem(&read(&cert_path)?, key).map_err(|error| bad("ca.pem", error))
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CertError::Io {
            action: "create the directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` through a temporary file made with `mode` from the start (a key is
/// never readable by others, not even for a moment), then renamed over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io {
            action,
            path,
            source,
        }
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io("create", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("write", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn der(path: &Path) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(path)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn init_then_issue_for_a_worker_and_a_node() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let ca = init(&certs, false).unwrap();
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&certs), 0o700);

        let worker = Identity::worker("w-1.a_b").unwrap();
        let issued = issue(&certs, &worker, &[]).unwrap();
        assert_eq!(issued.cert, certs.join("worker-w-1.a_b.pem"));
        assert_eq!(issued.key, certs.join("worker-w-1.a_b.key"));
        assert!(!issued.replaced);
        assert_eq!(mode(&issued.key), 0o600);
        assert_eq!(identity_of(&der(&issued.cert)).unwrap(), worker);

        let node = Identity::node("n1").unwrap();
        let sans = ["node1.example".to_string(), "10.0.0.7".to_string()];
        let issued = issue(&certs, &node, &sans).unwrap();
        assert_eq!(mode(&issued.key), 0o600);
        let cert_der = der(&issued.cert);
        assert_eq!(identity_of(&cert_der).unwrap(), node);
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let names = format!(
            "{:?}",
            parsed.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(names.contains("node1.example"), "{names}");
        assert!(names.contains("weft://node/n1"), "{names}");
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!parsed.is_ca());

        // Issuing again renews: the files are replaced, and the new certificate differs.
        let again = issue(&certs, &node, &sans).unwrap();
        assert!(again.replaced);
        assert_ne!(der(&again.cert), cert_der);
        assert_eq!(mode(&again.key), 0o600);
    }

    #[test]
    fn a_second_init_refuses_unless_asked_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(dir.path(), false).unwrap();
        let before = std::fs::read(&ca.cert).unwrap();
        let error = init(dir.path(), false).unwrap_err();
        assert!(matches!(error, CertError::CaExists { .. }), "{error}");
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(std::fs::read(&ca.cert).unwrap(), before, "the CA is kept");

        init(dir.path(), true).unwrap();
        assert_ne!(std::fs::read(&ca.cert).unwrap(), before);
        assert_eq!(mode(&ca.key), 0o600);
    }

    #[test]
    fn issue_without_a_ca_says_to_run_init() {
        let dir = tempfile::tempdir().unwrap();
        let error = issue(dir.path(), &Identity::worker("w").unwrap(), &[]).unwrap_err();
        assert!(matches!(error, CertError::NoCa { .. }), "{error}");
        assert!(error.to_string().contains("weft certs init"), "{error}");
    }

    #[test]
    fn bad_names_are_refused() {
        let long = "a".repeat(NAME_CHARS_MAX + 1);
        for (name, reason) in [
            ("", "empty"),
            (long.as_str(), "more than 64"),
            ("a/b", "`/` is not allowed"),
            ("a b", "` ` is not allowed"),
            ("é", "`é` is not allowed"),
            ("..", "not a file name"),
        ] {
            let error = Identity::worker(name).unwrap_err().to_string();
            assert!(error.contains(reason), "{name:?}: {error}");
            let error = Identity::node(name).unwrap_err().to_string();
            assert!(error.starts_with("node name"), "{name:?}: {error}");
        }
        assert!(Identity::worker(&"a".repeat(NAME_CHARS_MAX)).is_ok());

        // The enum's variants can be built without the check; `issue` checks again.
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let error = issue(dir.path(), &Identity::Worker("../x".to_string()), &[]).unwrap_err();
        assert!(matches!(error, CertError::BadName { .. }), "{error}");
    }

    #[test]
    fn sans_belong_to_nodes_and_must_be_names_or_addresses() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let node = Identity::node("n").unwrap();
        let error = issue(dir.path(), &node, &[]).unwrap_err();
        assert!(matches!(error, CertError::NodeWithoutSan), "{error}");
        let error = issue(dir.path(), &node, &["bad name".to_string()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`bad name` is neither an IP address nor a DNS name"
        );
        let worker = Identity::worker("w").unwrap();
        let error = issue(dir.path(), &worker, &["localhost".to_string()]).unwrap_err();
        assert!(matches!(error, CertError::WorkerWithSan), "{error}");
        issue(
            dir.path(),
            &node,
            &["::1".to_string(), "localhost".to_string()],
        )
        .unwrap();
    }

    #[test]
    fn identity_uris_round_trip_and_foreign_ones_are_refused() {
        for identity in [
            Identity::worker("w1").unwrap(),
            Identity::node("node.a").unwrap(),
        ] {
            assert_eq!(Identity::from_uri(&identity.uri()).unwrap(), identity);
        }
        assert_eq!(
            Identity::worker("w1").unwrap().to_string(),
            "weft://worker/w1"
        );
        for uri in [
            "https://node/n",
            "weft://node",
            "weft://admin/n",
            "weft://node/a/b",
            "weft://worker/",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn a_certificate_without_a_weft_uri_has_no_identity() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let error = identity_of(cert.der()).unwrap_err();
        assert!(matches!(error, CertError::NoIdentity), "{error}");
        assert!(matches!(
            identity_of(b"not a certificate"),
            Err(CertError::Parse(_))
        ));
    }
}
