//! Architecture rules that the compiler does not check: core stays pure, crates depend only in
//! the allowed direction, only the runtime names a concrete store backend, and executors never
//! see the engine.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifest(krate: &str) -> toml::Table {
    let text = std::fs::read_to_string(workspace().join(krate).join("Cargo.toml")).unwrap();
    text.parse().unwrap()
}

fn dependency_names(table: &toml::Table, section: &str) -> Vec<String> {
    table
        .get(section)
        .and_then(|deps| deps.as_table())
        .map(|deps| deps.keys().cloned().collect())
        .unwrap_or_default()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// Lines of code, without comments, so that docs may name what the code must not use.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(index, line)| {
            (
                index + 1,
                line.split("//").next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn core_has_no_io_dependency() {
    let core = manifest("core");
    let forbidden = [
        "tokio",
        "ractor",
        "ractor_cluster",
        "rusqlite",
        "scylla",
        "quinn",
        "rustls",
        "rand",
        "getrandom",
        "axum",
        "reqwest",
        "weft-storage",
        "weft-actors",
    ];
    for section in ["dependencies", "dev-dependencies"] {
        for name in dependency_names(&core, section) {
            assert!(
                !forbidden.contains(&name.as_str()),
                "core must stay pure but [{section}] has `{name}`"
            );
        }
    }
    let root = manifest(".");
    let chrono = &root["workspace"]["dependencies"]["chrono"];
    assert_eq!(
        chrono["default-features"].as_bool(),
        Some(false),
        "chrono's default features include the clock"
    );
    let features: Vec<&str> = chrono["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        !features.contains(&"clock") && !features.contains(&"now"),
        "core's chrono must not read the clock: {features:?}"
    );
}

#[test]
fn core_sources_do_no_io_and_read_no_clock() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::process",
        "SystemTime",
        "Instant::now",
        "Utc::now",
        "Local::now",
        "thread_rng",
        "std::env",
        "tokio",
        "ractor",
    ];
    let mut found = Vec::new();
    for file in rust_files(&workspace().join("core/src")) {
        for (number, line) in code_lines(&file) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{number}: {word}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "core must not do IO or read the clock:\n{}",
        found.join("\n")
    );
}

#[test]
fn crates_depend_in_the_allowed_direction() {
    let allowed: &[(&str, &[&str])] = &[
        ("core", &[]),
        ("storage", &["weft-core"]),
        ("actors", &["weft-core", "weft-storage"]),
        // The links and sessions between processes: above the engine, whose remote worker
        // slots (their messages and wire form are the engine's) they carry; the lease keeper
        // reads and writes lease rows through the store API (never a concrete backend).
        ("cells", &["weft-core", "weft-storage", "weft-actors"]),
        // The link emulator of tests and benchmarks stands alone.
        ("linkemu", &[]),
        (
            "runtime",
            &[
                "weft-core",
                "weft-storage",
                "weft-actors",
                "weft-cells",
                "weft-api-types",
                "weft-web",
            ],
        ),
        ("web/api-types", &[]),
        // The simulator drives the core and the run's commit pipeline, never the runtime.
        ("simulations", &["weft-core", "weft-storage", "weft-actors"]),
        (
            "web",
            &[
                "weft-core",
                "weft-storage",
                "weft-actors",
                "weft-api-types",
                "weft-ui",
            ],
        ),
    ];
    for (krate, allowed) in allowed {
        for name in dependency_names(&manifest(krate), "dependencies") {
            if name.starts_with("weft") {
                assert!(
                    allowed.contains(&name.as_str()),
                    "`{krate}` may not depend on `{name}`"
                );
            }
        }
    }
}

/// The lines of `path` before its first `#[cfg(test)]`: a unit test may use what production
/// code must not.
fn production_lines(path: &Path) -> Vec<(usize, String)> {
    let mut lines = code_lines(path);
    let production = lines
        .iter()
        .position(|(_, line)| line.trim() == "#[cfg(test)]")
        .unwrap_or(lines.len());
    lines.truncate(production);
    lines
}

#[test]
fn only_the_runtime_names_a_concrete_backend() {
    let backends = [
        "SqliteStore",
        "sqlite::",
        "MemoryStore",
        "memory::",
        "rusqlite",
    ];
    let mut found = Vec::new();
    for krate in ["core/src", "actors/src", "web/src"] {
        for file in rust_files(&workspace().join(krate)) {
            // Production code only: a unit test picks its store, as integration tests do.
            for (number, line) in production_lines(&file) {
                for word in backends {
                    if line.contains(word) {
                        found.push(format!("{}:{number}: {word}", file.display()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "backends are chosen by the runtime only:\n{}",
        found.join("\n")
    );
}

/// What runs an attempt takes its assignment and a `WorkerContext` (handlers, Python runners),
/// so that a worker in another process runs attempts without an engine: no executor names the
/// engine's shared state, its actors or its supervision tree.
#[test]
fn executors_never_see_the_engine() {
    let engine = [
        "crate::shared",
        "Shared",
        "crate::tree",
        "crate::engine::Engine",
        "ractor::",
        "ActorRef",
    ];
    let mut found = Vec::new();
    for file in rust_files(&workspace().join("actors/src/executor")) {
        for (number, line) in production_lines(&file) {
            for word in engine {
                if line.contains(word) {
                    found.push(format!("{}:{number}: {word}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "executors run attempts from their assignment and a WorkerContext alone:\n{}",
        found.join("\n")
    );
}

/// No actor module imports another actor module: they talk through `messages` and are spawned
/// by `tree`, the one module that names actor types. The dispatcher's use of the worker slot's
/// `SlotHandle` (starting an attempt without a message hop) is the one exception.
#[test]
fn no_actor_module_imports_another() {
    let actors = [
        "scheduler_actor",
        "dag_run_actor",
        "task_actor",
        "dispatcher_actor",
        "worker_slot",
    ];
    let allowed = [("dispatcher_actor", "crate::worker_slot::SlotHandle")];
    let mut found = Vec::new();
    for module in actors {
        let file = workspace().join(format!("actors/src/{module}.rs"));
        assert!(file.exists(), "{} is an actor module", file.display());
        for (number, line) in production_lines(&file) {
            for other in actors.iter().filter(|other| **other != module) {
                let path = format!("crate::{other}");
                let excepted = allowed
                    .iter()
                    .any(|(from, what)| *from == module && line.contains(what));
                if line.contains(&path) && !excepted {
                    found.push(format!("{}:{number}: {path}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "actor modules talk through messages and tree:\n{}",
        found.join("\n")
    );
}
