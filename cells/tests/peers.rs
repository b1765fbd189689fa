//! Two cells' engines in this process, linked over a real QUIC link on 127.0.0.1 (the store is
//! in memory: the link is what is tested). Cell A holds the only shard; a command sent to cell
//! B is carried out by A and answered through B, A's run events reach B's subscribers, an
//! error keeps its kind across the link, and a request that does not decode is refused without
//! ending the link.

use std::sync::Arc;
use std::time::Duration;
use weft_actors::{Engine, EngineConfig, EngineError, Event, Ownership, RustDag};
use weft_cells::certs::{self, Identity};
use weft_cells::link::{Connector, Credentials, LinkSettings};
use weft_cells::peers::Peers;
use weft_cells::workers::WorkerService;
use weft_core::state::DagRunState;
use weft_storage::memory::MemoryStore;
use weft_storage::Store;

const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

async fn engine(dir: &std::path::Path, store: &Arc<dyn Store>, cell: &str) -> Engine {
    let mut config = EngineConfig::new(dir.join(cell));
    config.ownership = Some(Arc::new(Ownership::for_cell(1, cell)));
    Engine::start(store.clone(), config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_one_cell_is_carried_out_by_the_owner_and_its_events_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::init(&certs_dir, false).unwrap();
    let mut credentials = Vec::new();
    for cell in ["cell-a", "cell-b", "cell-c"] {
        let identity = Identity::node(cell).unwrap();
        certs::issue(&certs_dir, &identity, &["127.0.0.1".to_string()]).unwrap();
        credentials.push(Credentials::load(&certs_dir, &identity).unwrap());
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = engine(dir.path(), &store, "cell-a").await;
    let b = engine(dir.path(), &store, "cell-b").await;
    // A holds the one shard; B has read the lease row that says so.
    a.shard_gained(0, 1);
    b.ownership()
        .unwrap()
        .set_directory([(0, "cell-a".to_string(), 1)]);
    a.register(RustDag::new("remote_dag").task("only", &[], |_| async { Ok(None) }))
        .await
        .unwrap();

    let listen = "127.0.0.1:0".parse().unwrap();
    let service = WorkerService::start_for(&a, listen, &credentials[0], LinkSettings::default())
        .await
        .unwrap();
    let address = service.local_addr().unwrap().to_string();
    let connector = |index: usize| {
        Connector::bind(listen, &credentials[index], LinkSettings::default()).unwrap()
    };
    let peers_a = Peers::start(
        a.clone(),
        connector(0),
        Identity::node("cell-a").unwrap(),
        Vec::new(),
    );
    service.route_cells(peers_a.acceptor());
    let peers_b = Peers::start(
        b.clone(),
        connector(1),
        Identity::node("cell-b").unwrap(),
        vec![address.clone()],
    );
    within(async {
        while peers_b.view().is_empty() || peers_a.view().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(peers_b.view()[0].name, "cell-a");

    // A trigger on B: A makes the run, B answers with it, B's subscribers see it end.
    let mut seen_on_b = b.subscribe();
    let run = within(b.trigger("remote_dag", serde_json::json!({"k": [1, 2]})))
        .await
        .unwrap();
    let stored = store
        .run(&run)
        .await
        .unwrap()
        .expect("the run is in the store");
    assert_eq!(stored.conf, serde_json::json!({"k": [1, 2]}));
    within(async {
        loop {
            if let Ok(Event::RunChanged {
                run: changed,
                state: DagRunState::Success,
                ..
            }) = seen_on_b.recv().await
            {
                if changed == run {
                    return;
                }
            }
        }
    })
    .await;

    // The owner's refusal keeps its kind: a run only the owner can look up is unknown on B
    // too (B refuses nothing itself: the DAG is not its to decide for).
    let missing = weft_core::ids::RunKey {
        dag_id: "remote_dag".into(),
        run_id: "no_such_run".into(),
    };
    let unknown = within(b.clear(&missing, &["only"], false, false)).await;
    assert!(
        matches!(unknown, Err(EngineError::UnknownRun(_))),
        "{unknown:?}"
    );

    // A request that does not decode, from another cell: refused, counted, and the link with
    // B carries on.
    let stranger = connector(2)
        .connect(service.local_addr().unwrap(), "127.0.0.1")
        .await
        .unwrap();
    let mut channel = stranger.open().await.unwrap();
    channel.send(&[1, 0xFF, 0xFF, 0xFF]).await.unwrap();
    channel.finish();
    let answer = within(channel.recv()).await;
    assert!(
        matches!(answer, Ok(None) | Err(_)),
        "a request that does not decode gets no answer: {answer:?}"
    );
    let again = within(b.set_paused("remote_dag", true)).await;
    assert!(again.is_ok(), "{again:?}");
    let dag = store.dag("remote_dag").await.unwrap().unwrap();
    assert!(dag.is_paused, "the pause sent to B is the owner's");

    peers_a.stop();
    peers_b.stop();
    service.stop().await;
    a.shutdown().await;
    b.shutdown().await;
}
