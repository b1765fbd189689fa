//! `weft`: the command-line interface and the assembly of a node.

mod cli;
mod commands;
mod config;
mod control;
mod dag_processor;
mod node;
mod output;
mod remote;
mod secrets;
mod store_url;
mod web;

use clap::Parser;

/// The engine allocates many small, short-lived messages; mimalloc used about 40 % less CPU
/// than glibc malloc per in-process task (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // First, while this process has one thread: no task may inherit the key.
    secrets::take_key_from_env();
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weft=info,scylla=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
