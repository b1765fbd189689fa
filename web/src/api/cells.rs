//! The cells of a deployment (`GET /api/v1/cells`, and `weft cells list`, which builds the
//! same list from the store): each cell's heartbeat, the shards it holds by lease with their
//! epochs and lease ages, and, as the cell that answers sees them over its links, the others'
//! round-trip times and remote workers.

use crate::auth::Principal;
use crate::error::Result;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use weft_actors::{Engine, EngineError, Ownership};
use weft_api_types::{Cell, CellList, CellShard, Role};
use weft_storage::Store;

/// Every cell and every shard's owner, from `store`'s heartbeat and lease rows; `ownership` is
/// the answering cell's (its links' figures), `workers` its own remote workers.
pub async fn cell_list(
    store: &dyn Store,
    shards: u32,
    ownership: Option<&Ownership>,
    workers: Option<u32>,
) -> weft_storage::Result<CellList> {
    let cells = store.cells().await?;
    let leases = store.leases(shards).await?;
    let now = chrono::Utc::now();
    let age = |at: chrono::DateTime<chrono::Utc>| (now - at).num_milliseconds().max(0) as u64;
    let this_cell = ownership
        .map(|ownership| ownership.cell().to_string())
        .filter(|name| !name.is_empty());
    let peers = ownership.map(Ownership::peers).unwrap_or_default();
    let listed = cells
        .iter()
        .map(|cell| {
            let this = this_cell.as_deref() == Some(cell.name.as_str());
            let peer = peers.iter().find(|peer| peer.name == cell.name);
            Cell {
                name: cell.name.clone(),
                region: cell.region.clone(),
                address: cell.address.clone(),
                api: cell.api.clone(),
                heartbeat_age_ms: age(cell.beat_at),
                started_at: cell.started_at.to_rfc3339(),
                shards: leases
                    .iter()
                    .filter(|record| record.lease.owner.as_deref() == Some(cell.name.as_str()))
                    .map(|record| CellShard {
                        shard: record.lease.shard,
                        epoch: record.lease.epoch,
                        lease_age_ms: age(record.written_at),
                    })
                    .collect(),
                rtt_ms: peer.map(|peer| peer.rtt_ms),
                workers: if this {
                    workers
                } else {
                    peer.map(|peer| peer.workers)
                },
                this,
            }
        })
        .collect();
    let unowned_shards = (0..shards)
        .filter(|shard| {
            !leases.iter().any(|record| {
                record.lease.shard == *shard
                    && record
                        .lease
                        .owner
                        .as_ref()
                        .is_some_and(|owner| cells.iter().any(|cell| &cell.name == owner))
            })
        })
        .collect();
    Ok(CellList {
        cells: listed,
        shards,
        unowned_shards,
        this_cell,
    })
}

/// The cells of the deployment (everyone signed in). A standalone node is no cell: its list
/// is empty unless cells share its store.
#[utoipa::path(
    get,
    path = "/api/v1/cells",
    tag = "admin",
    responses(
        (status = 200, description = "cells, their shards and links", body = CellList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
    )
)]
pub async fn cells(State(state): State<AppState>, principal: Principal) -> Result<Json<CellList>> {
    principal.require(Role::Viewer)?;
    Ok(Json(seen_by(state.engine()).await?))
}

/// The cells as `engine` sees them: with its links' figures and its own remote workers (the
/// API and a cell's control socket answer with this).
pub async fn seen_by(engine: &Engine) -> std::result::Result<CellList, EngineError> {
    let ownership = engine.ownership().map(|ownership| ownership.as_ref());
    let shards = ownership.map_or(weft_core::lease::LeaseSettings::default().shards, |o| {
        o.shards()
    });
    let workers = engine.workers().await?.remote.len() as u32;
    Ok(cell_list(engine.store().as_ref(), shards, ownership, Some(workers)).await?)
}
