//! `weft-ui-build [--debug] [--out DIR] [--target-dir DIR]`: builds the UI's browser bundle
//! (see the library) and says where it is.

use anyhow::{bail, Context};
use weft_ui_build::{build, BuildOptions};

fn main() -> anyhow::Result<()> {
    let mut options = BuildOptions::for_repo();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--debug" => options.release = false,
            "--out" => options.out_dir = args.next().context("--out needs a directory")?.into(),
            "--target-dir" => {
                options.target_dir = args
                    .next()
                    .context("--target-dir needs a directory")?
                    .into()
            }
            "-h" | "--help" => {
                println!("weft-ui-build [--debug] [--out DIR] [--target-dir DIR]\n\nBuilds the web UI's WASM bundle into DIR (default target/site/pkg).");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; try --help"),
        }
    }
    let bundle = build(&options)?;
    eprintln!(
        "UI bundle: {} and {} ({} KiB)",
        bundle.js.display(),
        bundle.wasm.display(),
        bundle.wasm_bytes / 1024
    );
    Ok(())
}
