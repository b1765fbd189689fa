//! `weft-linkemu`: opens the links given on the command line and serves the control protocol
//! (see the `weft_linkemu::control` module) until SIGTERM or SIGINT.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{error::ErrorKind, CommandFactory, Parser};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use weft_linkemu::control::{self, LinkSpec};
use weft_linkemu::{Link, LinkSettings};

/// Relays that give links between local processes latency, loss and partitions.
///
/// Prints one `control ADDR` line, one `link NAME PROTO LISTEN -> TARGET` line per link, then
/// `ready` once every link listens. Commands on the control address, one per line:
/// `set NAME|* [delay=40ms] [loss=1.5] [blackhole=on|off]`, `reset NAME|*`, `show`.
#[derive(Debug, Parser)]
#[command(name = "weft-linkemu", version)]
struct Args {
    /// TCP address of the control protocol; it has no authentication, so keep it on loopback.
    #[arg(long, value_name = "IP:PORT")]
    control: SocketAddr,
    /// A link to open, repeatable: NAME=udp:LISTEN->TARGET or NAME=tcp:LISTEN->TARGET
    /// (for example dc2=udp:127.0.0.1:7001->127.0.0.2:7000).
    #[arg(long = "link", value_name = "NAME=PROTO:LISTEN->TARGET", required = true, value_parser = parse_link)]
    links: Vec<LinkSpec>,
}

fn parse_link(text: &str) -> Result<LinkSpec, String> {
    text.parse().map_err(|e| format!("{e:#}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    if let Some(name) = duplicate_name(&args.links) {
        Args::command()
            .error(
                ErrorKind::ValueValidation,
                format!("link name {name:?} is given more than once"),
            )
            .exit();
    }
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-linkemu: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn duplicate_name(links: &[LinkSpec]) -> Option<&str> {
    let mut seen = HashSet::new();
    links
        .iter()
        .map(|l| l.name.as_str())
        .find(|name| !seen.insert(*name))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut links = Vec::with_capacity(args.links.len());
    for spec in &args.links {
        links.push(open(spec).await?);
    }
    let links: Arc<[Link]> = links.into();
    let listener = TcpListener::bind(args.control)
        .await
        .with_context(|| format!("cannot listen for control on {}", args.control))?;
    println!("control {}", listener.local_addr()?);
    for link in links.iter() {
        println!(
            "link {} {} {} -> {}",
            link.name(),
            link.proto(),
            link.local_addr(),
            link.target()
        );
    }
    println!("ready");
    tokio::select! {
        served = control::serve(listener, links.clone()) => served?,
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    // Dropping the links stops their relays; the process exits right after.
    drop(links);
    Ok(())
}

async fn open(spec: &LinkSpec) -> anyhow::Result<Link> {
    weft_linkemu::start(
        &spec.name,
        spec.proto,
        spec.listen,
        spec.target,
        LinkSettings::default(),
    )
    .await
}
