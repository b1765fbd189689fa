//! Store addresses: `sqlite:///path/to/weft.db` or
//! `cql://host:port[,host:port...]/keyspace?dc=dc1&replication=dc1:3,dc2:3&serial=global&migrate=true`,
//! with `via=ANNOUNCED>REACHED,...` where nodes are reached at another address than they announce.

use std::collections::BTreeMap;
use std::path::PathBuf;
use weft_storage::cql::{CqlOptions, SerialScope};

#[derive(Debug, Clone, PartialEq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Cql(CqlOptions),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store address `{url}`: {reason}; use sqlite:///path/weft.db or cql://host:9042/keyspace")]
pub struct StoreUrlError {
    url: String,
    reason: String,
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let fail = |reason: &str| StoreUrlError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(fail("the sqlite path is empty"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        let Some(rest) = url.strip_prefix("cql://") else {
            return Err(fail("unknown scheme"));
        };
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, keyspace) = address
            .split_once('/')
            .ok_or_else(|| fail("the keyspace is missing"))?;
        if hosts.is_empty() {
            return Err(fail("no host given"));
        }
        if keyspace.is_empty()
            || !keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(fail("the keyspace must be letters, digits and underscores"));
        }
        let mut options = CqlOptions {
            contact_points: hosts
                .split(',')
                .map(|host| with_default_port(host.trim()))
                .collect(),
            keyspace: keyspace.to_string(),
            ..CqlOptions::default()
        };
        let mut replication_given = false;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| fail("a query parameter has no value"))?;
            match key {
                "dc" => options.local_datacenter = value.to_string(),
                "replication" => {
                    replication_given = true;
                    options.replication = parse_replication(value)
                        .ok_or_else(|| fail("replication must look like dc1:3,dc2:3"))?;
                }
                "serial" => {
                    options.serial_scope = match value {
                        "global" => SerialScope::Global,
                        "local" => SerialScope::Local,
                        _ => return Err(fail("serial must be `global` or `local`")),
                    }
                }
                "migrate" => {
                    options.apply_migrations = value
                        .parse()
                        .map_err(|_| fail("migrate must be `true` or `false`"))?
                }
                "via" => {
                    for rule in value.split(',') {
                        let (announced, reached) = rule
                            .split_once('>')
                            .filter(|(a, r)| {
                                (a.parse::<std::net::SocketAddr>().is_ok()
                                    || a.parse::<std::net::IpAddr>().is_ok())
                                    && r.parse::<std::net::SocketAddr>().is_ok()
                            })
                            .ok_or_else(|| {
                                fail("via must look like 10.0.0.1:9042>127.0.0.1:19042 or 10.0.0.2>127.0.0.1:19043, comma-separated")
                            })?;
                        options
                            .address_map
                            .insert(announced.to_string(), reached.to_string());
                    }
                }
                _ => {
                    return Err(fail(&format!(
                        "unknown parameter `{key}` (known: dc, replication, serial, migrate, via)"
                    )))
                }
            }
        }
        if !replication_given {
            options.replication = BTreeMap::from([(options.local_datacenter.clone(), 1)]);
        }
        Ok(StoreUrl::Cql(options))
    }
}

fn with_default_port(host: &str) -> String {
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:9042")
    }
}

fn parse_replication(text: &str) -> Option<BTreeMap<String, u32>> {
    text.split(',')
        .map(|pair| {
            let (dc, factor) = pair.split_once(':')?;
            Some((
                dc.to_string(),
                factor.parse().ok().filter(|factor| *factor > 0)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_and_cql_addresses() {
        assert_eq!(
            "sqlite:///var/weft.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("/var/weft.db".into())
        );
        let StoreUrl::Cql(options) =
            "cql://10.0.0.1,10.0.0.2:9043/weft_prod?dc=eu&replication=eu:3,us:3&serial=local&migrate=false"
                .parse::<StoreUrl>()
                .unwrap()
        else {
            panic!("not cql")
        };
        assert_eq!(
            options.contact_points,
            vec!["10.0.0.1:9042", "10.0.0.2:9043"]
        );
        assert_eq!(options.keyspace, "weft_prod");
        assert_eq!(options.local_datacenter, "eu");
        assert_eq!(
            options.replication,
            BTreeMap::from([("eu".to_string(), 3), ("us".to_string(), 3)])
        );
        assert_eq!(options.serial_scope, SerialScope::Local);
        assert!(!options.apply_migrations);
        let StoreUrl::Cql(defaults) = "cql://127.0.0.1/weft".parse::<StoreUrl>().unwrap() else {
            panic!()
        };
        assert_eq!(
            defaults.replication,
            BTreeMap::from([("dc1".to_string(), 1)])
        );
        assert!(defaults.address_map.is_empty());
        let StoreUrl::Cql(relayed) =
            "cql://127.0.0.1:19042/k?via=127.0.0.1:9042>127.0.0.1:19042,127.0.0.2>127.0.0.1:19043"
                .parse::<StoreUrl>()
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            relayed.address_map,
            BTreeMap::from([
                ("127.0.0.1:9042".to_string(), "127.0.0.1:19042".to_string()),
                ("127.0.0.2".to_string(), "127.0.0.1:19043".to_string()),
            ])
        );
    }

    #[test]
    fn bad_addresses_say_what_to_write() {
        for (url, reason) in [
            ("postgres://x/y", "unknown scheme"),
            ("cql://127.0.0.1", "the keyspace is missing"),
            ("cql:///weft", "no host given"),
            ("cql://h/bad-name", "letters, digits and underscores"),
            ("cql://h/k?replication=dc1", "replication must look like"),
            ("cql://h/k?speed=1", "unknown parameter `speed`"),
            ("cql://h/k?via=127.0.0.1:9042", "via must look like"),
            ("cql://h/k?via=host:1>127.0.0.1:2", "via must look like"),
        ] {
            let error = url.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(error.contains(reason), "{url}: {error}");
            assert!(error.contains("cql://host:9042/keyspace"), "{error}");
        }
    }
}
