//! The `weft-linkemu` binary's command line links and its line-based control protocol.
//!
//! A client connects to the control address over TCP and sends one command per line; each
//! command gets one reply line starting with `ok` or `error:` (`show` adds one line per link
//! after its `ok` line, which says how many follow):
//!
//! ```text
//! set NAME delay=40ms loss=1.5 blackhole=on   -> ok NAME delay=40ms loss=1.5 blackhole=on
//! set * blackhole=off                         -> ok set 3 links
//! reset NAME                                  -> ok reset 1 links
//! show                                        -> ok 2 links
//!                                                a udp listen=127.0.0.1:7001 target=... delay=... stats...
//!                                                b tcp listen=...
//! frobnicate                                  -> error: unknown command "frobnicate" ...
//! ```
//!
//! `NAME` may be `*` for every link. `set` takes any of `delay=` (`40ms`, `1.5s`, `250us`,
//! `0`), `loss=` (a percentage, `1.5` or `1.5%`) and `blackhole=` (`on`/`off`); the keys it
//! does not name keep their value. A command that fails changes nothing.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::{Link, LinkSettings, Proto, MAX_DELAY};

/// The longest command line the control protocol reads.
const MAX_LINE: usize = 4096;
/// Control connections served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 64;

/// A link given on the command line as `NAME=PROTO:LISTEN->TARGET`, for example
/// `dc2=udp:127.0.0.1:7001->127.0.0.2:7000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The link's name in control commands.
    pub name: String,
    /// The transport relayed.
    pub proto: Proto,
    /// Where the relay listens.
    pub listen: SocketAddr,
    /// Where it relays to.
    pub target: SocketAddr,
}

impl FromStr for LinkSpec {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> anyhow::Result<Self> {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("missing \"=\" after the link's name in {spec:?}; expected NAME=PROTO:LISTEN->TARGET"))?;
        check_name(name)?;
        let (proto, addrs) = rest.split_once(':').ok_or_else(|| {
            anyhow!(
                "missing \":\" after the protocol in {spec:?}; expected NAME=PROTO:LISTEN->TARGET"
            )
        })?;
        let proto = match proto {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            other => bail!("bad protocol {other:?} in {spec:?}: expected udp or tcp"),
        };
        let (listen, target) = addrs.split_once("->").ok_or_else(|| {
            anyhow!("missing \"->\" between the listen and target addresses in {spec:?}")
        })?;
        Ok(LinkSpec {
            name: name.to_owned(),
            proto,
            listen: parse_addr("listen", listen)?,
            target: parse_addr("target", target)?,
        })
    }
}

/// A link name: letters, digits, `_`, `-` and `.`; not empty.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || !name.chars().all(ok_char) {
        bail!("bad link name {name:?}: use letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

fn parse_addr(which: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    addr.parse()
        .map_err(|e| anyhow!("bad {which} address {addr:?}: {e} (expected IP:PORT or [IPv6]:PORT)"))
}

/// Parses a duration such as `40ms`, `1.5s`, `250us`, `100ns` or `0`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let units: [(&str, f64); 5] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
    ];
    let (number, nanos_per_unit) = units
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, *scale)))
        .ok_or_else(|| {
            anyhow!("bad duration {text:?}: expected a number with ms, s, us or ns, such as 40ms")
        })?;
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| anyhow!("bad duration {text:?}: {number:?} is not a non-negative number"))?;
    let nanos = (value * nanos_per_unit).round();
    if nanos > MAX_DELAY.as_nanos() as f64 {
        bail!("bad duration {text:?}: longer than the longest allowed, {MAX_DELAY:?}");
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0ms".to_owned()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Parses a loss percentage, `1.5` or `1.5%`, from 0 to 100.
pub fn parse_loss(text: &str) -> anyhow::Result<f64> {
    let number = text.strip_suffix('%').unwrap_or(text);
    number
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=100.0).contains(v))
        .ok_or_else(|| anyhow!("bad loss {text:?}: expected a percentage from 0 to 100"))
}

/// Parses `on`/`off` (also `true`/`false`, `1`/`0`).
pub fn parse_switch(text: &str) -> anyhow::Result<bool> {
    match text {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => bail!("bad switch {text:?}: expected on or off"),
    }
}

/// The keys of a `set` command; those left `None` keep their value.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct SettingsChange {
    delay: Option<Duration>,
    loss_percent: Option<f64>,
    blackhole: Option<bool>,
}

impl SettingsChange {
    fn parse<'a>(pairs: impl Iterator<Item = &'a str>) -> anyhow::Result<Self> {
        let mut change = SettingsChange::default();
        let mut any = false;
        for pair in pairs {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("bad setting {pair:?}: expected KEY=VALUE"))?;
            match key {
                "delay" => change.delay = Some(parse_duration(value)?),
                "loss" => change.loss_percent = Some(parse_loss(value)?),
                "blackhole" => change.blackhole = Some(parse_switch(value)?),
                _ => bail!("unknown setting {key:?}: expected delay, loss or blackhole"),
            }
            any = true;
        }
        if !any {
            bail!("set needs at least one of delay=, loss=, blackhole=");
        }
        Ok(change)
    }

    fn apply(&self, mut settings: LinkSettings) -> LinkSettings {
        if let Some(delay) = self.delay {
            settings.delay = delay;
        }
        if let Some(loss) = self.loss_percent {
            settings.loss_percent = loss;
        }
        if let Some(blackhole) = self.blackhole {
            settings.blackhole = blackhole;
        }
        settings
    }
}

/// The links a command names: one by its name, or all for `*`.
fn select<'a>(links: &'a [Link], name: Option<&str>) -> anyhow::Result<Vec<&'a Link>> {
    match name {
        None => bail!("missing link name (or * for every link)"),
        Some("*") => Ok(links.iter().collect()),
        Some(name) => links
            .iter()
            .find(|link| link.name() == name)
            .map(|link| vec![link])
            .ok_or_else(|| anyhow!("unknown link {name:?}")),
    }
}

/// Carries out one command line and returns its reply, one or more lines each ending with a
/// newline.
pub fn execute(links: &[Link], line: &str) -> String {
    match run_command(links, line) {
        Ok(reply) => reply,
        Err(e) => format!("error: {e:#}\n"),
    }
}

fn run_command(links: &[Link], line: &str) -> anyhow::Result<String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("set") => {
            let chosen = select(links, words.next())?;
            let change = SettingsChange::parse(words)?;
            let updated: Vec<LinkSettings> = chosen.iter().map(|l| change.apply(l.settings())).collect();
            for (link, settings) in chosen.iter().zip(&updated) {
                settings
                    .validate()
                    .with_context(|| format!("link {}", link.name()))?;
            }
            for (link, settings) in chosen.iter().zip(updated) {
                link.set(settings)?;
            }
            Ok(match chosen.as_slice() {
                [one] => format!("ok {} {}\n", one.name(), one.settings()),
                many => format!("ok set {} links\n", many.len()),
            })
        }
        Some("reset") => {
            let chosen = select(links, words.next())?;
            no_more(words)?;
            chosen.iter().for_each(|link| link.reset_all());
            Ok(format!("ok reset {} links\n", chosen.len()))
        }
        Some("show") => {
            let name = words.next();
            no_more(words)?;
            let chosen = select(links, Some(name.unwrap_or("*")))?;
            let mut reply = format!("ok {} links\n", chosen.len());
            for link in chosen {
                let _ = writeln!(reply, "{}", describe(link));
            }
            Ok(reply)
        }
        Some("help") => Ok(
            "ok commands: set NAME|* [delay=40ms] [loss=1.5] [blackhole=on|off]; reset NAME|*; show [NAME|*]\n"
                .to_owned(),
        ),
        Some(other) => bail!("unknown command {other:?}: expected set, reset, show or help"),
        None => bail!("empty command: expected set, reset, show or help"),
    }
}

fn no_more<'a>(mut words: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
    match words.next() {
        Some(extra) => bail!("unexpected {extra:?} at the end of the command"),
        None => Ok(()),
    }
}

/// One line about a link: name, protocol, addresses, settings and counts.
pub fn describe(link: &Link) -> String {
    format!(
        "{} {} listen={} target={} {} {}",
        link.name(),
        link.proto(),
        link.local_addr(),
        link.target(),
        link.settings(),
        link.stats()
    )
}

/// Serves the control protocol on `listener` for `links`, until the future is dropped.
pub async fn serve(listener: TcpListener, links: Arc<[Link]>) -> anyhow::Result<()> {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if clients.len() < MAX_CLIENTS => {
                let (stream, peer) = accepted.context("control: accept failed")?;
                let links = links.clone();
                clients.spawn(async move {
                    if let Err(e) = serve_client(stream, &links).await {
                        tracing::debug!("control client {peer}: {e:#}");
                    }
                });
            }
            Some(_) = clients.join_next() => {}
        }
    }
}

/// Answers one control connection's commands until it closes.
async fn serve_client(stream: TcpStream, links: &[Link]) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = (&mut read)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .context("reading a command")?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write
                .write_all(format!("error: command longer than {MAX_LINE} bytes\n").as_bytes())
                .await?;
            bail!("command too long");
        }
        let reply = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => execute(links, text),
            Err(_) => "error: command is not UTF-8\n".to_owned(),
        };
        write
            .write_all(reply.as_bytes())
            .await
            .context("writing a reply")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_specs_parse() {
        let spec: LinkSpec = "dc2=udp:127.0.0.1:7001->[::1]:7000".parse().unwrap();
        assert_eq!(spec.name, "dc2");
        assert_eq!(spec.proto, Proto::Udp);
        assert_eq!(spec.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(spec.target, "[::1]:7000".parse().unwrap());
        let tcp: LinkSpec = "cql=tcp:127.0.0.1:0->127.0.0.1:9042".parse().unwrap();
        assert_eq!(tcp.proto, Proto::Tcp);
    }

    #[test]
    fn bad_link_specs_name_the_bad_part() {
        let cases = [
            ("udp:1.2.3.4:1->1.2.3.4:2", "missing \"=\""),
            ("=udp:1.2.3.4:1->1.2.3.4:2", "bad link name \"\""),
            ("a=sctp:127.0.0.1:1->127.0.0.1:2", "bad protocol \"sctp\""),
            ("a=udp:127.0.0.1:1", "missing \"->\""),
            (
                "a=udp:127.0.0.1->127.0.0.1:2",
                "bad listen address \"127.0.0.1\"",
            ),
            (
                "a=tcp:127.0.0.1:1->nowhere",
                "bad target address \"nowhere\"",
            ),
            ("a", "missing \"=\""),
            ("*=udp:127.0.0.1:1->127.0.0.1:2", "bad link name"),
        ];
        for (spec, expected) in cases {
            let err = format!("{:#}", spec.parse::<LinkSpec>().unwrap_err());
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for (text, d) in [
            ("40ms", Duration::from_millis(40)),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("0", Duration::ZERO),
            ("0.1ms", Duration::from_micros(100)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        for bad in ["", "40", "ms", "-1ms", "1h", "nanms", "2h", "99999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loss_and_switches_parse() {
        assert_eq!(parse_loss("1.5").unwrap(), 1.5);
        assert_eq!(parse_loss("50%").unwrap(), 50.0);
        for bad in ["-1", "101", "NaN", "x"] {
            assert!(parse_loss(bad).is_err(), "{bad}");
        }
        assert!(parse_switch("on").unwrap());
        assert!(!parse_switch("off").unwrap());
        assert!(parse_switch("maybe").is_err());
    }

    #[test]
    fn set_keeps_the_keys_it_does_not_name() {
        let change = SettingsChange::parse(["loss=2", "blackhole=on"].into_iter()).unwrap();
        let before = LinkSettings {
            delay: Duration::from_millis(7),
            ..LinkSettings::default()
        };
        let after = change.apply(before);
        assert_eq!(after.delay, Duration::from_millis(7));
        assert_eq!(after.loss_percent, 2.0);
        assert!(after.blackhole);
        assert!(SettingsChange::parse(std::iter::empty()).is_err());
        assert!(SettingsChange::parse(["jitter=1ms"].into_iter()).is_err());
    }
}
