//! Builds the UI's browser bundle with nothing but cargo and crates: compiles
//! `web-leptos/hydrate` for `wasm32-unknown-unknown`, runs wasm-bindgen on it as a library
//! (`wasm-bindgen-cli-support`, the same version as the `wasm-bindgen` the UI links), and
//! writes `weft_ui.js` and `weft_ui_bg.wasm` (plus gzip copies the server sends to browsers
//! that accept them) into the bundle directory the server's `web.pkg_dir` names.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name wasm-bindgen gives the bundle's files (`weft_ui.js`, `weft_ui_bg.wasm`); the
/// server's hydration scripts link the same names.
pub const OUTPUT_NAME: &str = "weft_ui";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const CRATE_FILE: &str = "weft_ui_hydrate.wasm";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not run cargo ({0}); is Rust installed and on PATH?")]
    CargoMissing(std::io::Error),
    #[error("`cargo build` of the WASM crate failed ({0}); if it says the target is missing, run `rustup target add wasm32-unknown-unknown` (scripts/install-deps.sh does)")]
    CargoFailed(std::process::ExitStatus),
    #[error("cargo finished but {0} is missing")]
    WasmMissing(PathBuf),
    #[error("wasm-bindgen failed: {0}")]
    Bindgen(String),
    #[error("could not write the bundle in {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where to build from and to.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The repository root (holding `web-leptos/hydrate`).
    pub repo_root: PathBuf,
    /// The bundle directory to write.
    pub out_dir: PathBuf,
    /// Cargo's target directory for the WASM build (kept apart from the host build's, so
    /// that the two never wait on each other's lock).
    pub target_dir: PathBuf,
    /// An optimised build (small, slower to compile); the default.
    pub release: bool,
}

impl BuildOptions {
    /// The defaults: this repository, `target/site/pkg`, and `ui-wasm` in the target
    /// directory (`$CARGO_TARGET_DIR`, else `target`).
    pub fn for_repo() -> BuildOptions {
        let repo_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let repo_root = repo_root.canonicalize().unwrap_or(repo_root);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root.join("target"));
        BuildOptions {
            out_dir: repo_root.join("target/site/pkg"),
            target_dir: target.join("ui-wasm"),
            repo_root,
            release: true,
        }
    }
}

/// The files written.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub js: PathBuf,
    pub wasm: PathBuf,
    pub wasm_bytes: u64,
}

/// Builds the bundle. Cargo's own output goes to this process's stderr.
pub fn build(options: &BuildOptions) -> Result<Bundle, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = options.repo_root.join("web-leptos/hydrate/Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--lib", "--target", WASM_TARGET, "--target-dir"])
        .arg(&options.target_dir)
        // Set at compile time it would make the hydration script look for `weft_ui.wasm`
        // instead of wasm-bindgen's `weft_ui_bg.wasm`.
        .env_remove("LEPTOS_OUTPUT_NAME")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    if options.release {
        command.arg("--release");
    }
    let status = command.status().map_err(BuildError::CargoMissing)?;
    if !status.success() {
        return Err(BuildError::CargoFailed(status));
    }
    let profile = if options.release { "release" } else { "debug" };
    let input = options
        .target_dir
        .join(WASM_TARGET)
        .join(profile)
        .join(CRATE_FILE);
    if !input.is_file() {
        return Err(BuildError::WasmMissing(input));
    }

    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Write { path, source }
    };
    fs::create_dir_all(&options.out_dir).map_err(write_error(&options.out_dir))?;
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&input)
        .out_name(OUTPUT_NAME)
        .web(true)
        .map_err(|e| BuildError::Bindgen(format!("{e:#}")))?
        .typescript(false)
        .debug(!options.release)
        .remove_name_section(options.release)
        .remove_producers_section(options.release)
        .generate(&options.out_dir)
        .map_err(|e| BuildError::Bindgen(format!("{e:#}")))?;

    let js = options.out_dir.join(format!("{OUTPUT_NAME}.js"));
    let wasm = options.out_dir.join(format!("{OUTPUT_NAME}_bg.wasm"));
    for file in [&js, &wasm] {
        gzip_beside(file)?;
    }
    let wasm_bytes = fs::metadata(&wasm).map_err(write_error(&wasm))?.len();
    Ok(Bundle {
        js,
        wasm,
        wasm_bytes,
    })
}

/// Writes `<file>.gz`, which the server sends instead of `file` to browsers that accept gzip.
pub fn gzip_beside(file: &Path) -> Result<PathBuf, BuildError> {
    let target = PathBuf::from(format!("{}.gz", file.display()));
    let error = |source| BuildError::Write {
        path: target.clone(),
        source,
    };
    let bytes = fs::read(file).map_err(error)?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&bytes).map_err(error)?;
    let compressed = encoder.finish().map_err(error)?;
    fs::write(&target, compressed).map_err(error)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_gzip_copy_decompresses_to_the_original() {
        let dir = tempfile_dir();
        let file = dir.join("a.js");
        fs::write(&file, "export function hydrate() {}\n".repeat(50)).unwrap();
        let gz = gzip_beside(&file).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(&gz).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, fs::read_to_string(&file).unwrap());
        assert!(fs::metadata(&gz).unwrap().len() < fs::metadata(&file).unwrap().len());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn defaults_point_into_this_repository() {
        let options = BuildOptions::for_repo();
        assert!(options
            .repo_root
            .join("web-leptos/hydrate/Cargo.toml")
            .is_file());
        assert!(options.out_dir.ends_with("target/site/pkg"));
        assert!(options.release);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-ui-build-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
