//! Sandboxing of task processes (in progress).

use serde::{Deserialize, Serialize};

/// How to confine an attempt's processes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Run inside bubblewrap namespaces with a read-only root.
    pub namespaces: bool,
    pub memory_bytes_max: Option<u64>,
    /// CPU quota in thousandths of a core.
    pub cpu_millis_max: Option<u64>,
    pub pids_max: Option<u64>,
}
