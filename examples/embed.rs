//! Embedding weft in a Rust program: a DAG whose tasks are Rust closures, run on the embedded
//! SQLite store, with a subscription to state changes.
//!
//! Run it with `cargo run -p weft-actors --example embed`.

use std::sync::Arc;
use weft_actors::{Engine, EngineConfig, Event, RustDag, TaskError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::temp_dir().join(format!("weft-embed-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let store =
        weft_storage::sqlite::SqliteStore::open(data_dir.join("weft.db"), Default::default())?;
    let engine = Engine::start(Arc::new(store), EngineConfig::new(&data_dir)).await?;

    let dag = RustDag::new("embedded_etl")
        .task("extract", &[], |_context| async {
            Ok(Some(serde_json::json!([1, 2, 3, 4])))
        })
        .task("sum", &["extract"], |context| async move {
            let numbers = context
                .xcoms
                .get("extract")
                .and_then(|value| value.as_array().cloned());
            let numbers =
                numbers.ok_or_else(|| TaskError::retryable("extract produced no list"))?;
            let total: i64 = numbers.iter().filter_map(|n| n.as_i64()).sum();
            Ok(Some(serde_json::json!(total)))
        })
        .task("report", &["sum"], |context| async move {
            println!("total = {}", context.xcoms["sum"]);
            Ok(None)
        });
    engine.register(dag).await?;

    let mut events = engine.subscribe();
    let run = engine
        .trigger("embedded_etl", serde_json::json!({}))
        .await?;
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let Event::TaskChanged { key, state, .. } = event {
                println!("{} -> {state}", key.task_id);
            }
        }
    });
    let state = engine.wait_for_run(&run).await?;
    println!("run {} finished: {state}", run.run_id);
    engine.shutdown().await;
    printer.abort();
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
