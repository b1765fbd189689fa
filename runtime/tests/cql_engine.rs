//! The engine on a two-datacenter CQL store (`WEFT_TEST_CQL` and `WEFT_TEST_CQL_DC2`, set by CI):
//! a node stopped mid-run makes the engine's writes fail (reported and retried, the run actor
//! rebuilt from the store); when the node returns the run completes with nothing lost and no
//! result accepted twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use weft_actors::{Engine, EngineConfig, RustDag};
use weft_core::ids::TaskInstanceKey;
use weft_core::state::{DagRunState, TaskState};
use weft_storage::cql::{CqlOptions, CqlStore};
use weft_storage::Store;

const TASKS: usize = 12;

fn cluster_script(arguments: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql-test-cluster.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .args(arguments)
        .status()
        .expect("run the cluster script");
    assert!(status.success(), "cql-test-cluster.sh {arguments:?} failed");
}

async fn successes(store: &dyn Store, run: &weft_core::ids::RunKey) -> usize {
    let records = store.task_instances(run).await.unwrap();
    records
        .iter()
        .filter(|record| record.state == TaskState::Success)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_stopped_datacenter_node() {
    let (Ok(dc1), Ok(_)) = (
        std::env::var("WEFT_TEST_CQL"),
        std::env::var("WEFT_TEST_CQL_DC2"),
    ) else {
        eprintln!(
            "WEFT_TEST_CQL and WEFT_TEST_CQL_DC2 are not both set: no two-datacenter cluster"
        );
        return;
    };
    let options = CqlOptions {
        contact_points: vec![dc1],
        keyspace: format!("weft_engine_{}", std::process::id()),
        local_datacenter: "dc1".to_string(),
        // A replica in each datacenter: compare-and-set at SERIAL needs both.
        replication: BTreeMap::from([("dc1".to_string(), 1), ("dc2".to_string(), 1)]),
        ..CqlOptions::default()
    };
    let store = CqlStore::connect(options)
        .await
        .expect("connect to the CQL test cluster");
    let store: Arc<dyn Store> = Arc::new(store);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let mut dag = RustDag::new("through_an_outage");
    for index in 0..TASKS {
        let upstream: Vec<String> = if index == 0 {
            Vec::new()
        } else {
            vec![format!("t{}", index - 1)]
        };
        let upstream: Vec<&str> = upstream.iter().map(String::as_str).collect();
        dag = dag
            .task(&format!("t{index}"), &upstream, |_| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(Some(serde_json::json!("done")))
            })
            .configure(|task| {
                task.retries = 5;
                task.retry_delay_ms = 100;
            });
    }
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("through_an_outage", serde_json::json!({}))
        .await
        .unwrap();
    let third = TaskInstanceKey::new("through_an_outage", &run.run_id, "t2", -1);
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let record = store.task_instance(&third).await.ok().flatten();
            if record.is_some_and(|record| record.state == TaskState::Success) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run makes progress before the outage");

    tokio::task::spawn_blocking(|| cluster_script(&["stop-node", "2"]))
        .await
        .unwrap();
    // Reads still work in dc1 (LOCAL_QUORUM); transitions (SERIAL) need dc2 and cannot be
    // recorded, so the run makes no recorded progress while the node is away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = successes(store.as_ref(), &run).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        successes(store.as_ref(), &run).await,
        before,
        "progress recorded without dc2"
    );
    assert!(before < TASKS, "the outage began before the run ended");
    tokio::task::spawn_blocking(|| cluster_script(&["start-node", "2"]))
        .await
        .unwrap();

    let state = tokio::time::timeout(Duration::from_secs(240), engine.wait_for_run(&run))
        .await
        .expect("the run finishes once the node is back")
        .unwrap();
    assert_eq!(state, DagRunState::Success);
    for index in 0..TASKS {
        let key = TaskInstanceKey::new("through_an_outage", &run.run_id, &format!("t{index}"), -1);
        let record = store.task_instance(&key).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Success, "{key}");
        let accepted = store
            .attempts(&key)
            .await
            .unwrap()
            .into_iter()
            .filter(|attempt| attempt.state == TaskState::Success)
            .count();
        assert_eq!(accepted, 1, "{key} has {accepted} accepted results");
    }
    engine.shutdown().await;
}
