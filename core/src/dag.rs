//! A validated DAG: the serialized form checked and indexed on a petgraph graph.
//!
//! Everything the run state machine asks on every event is precomputed here and answered in
//! O(1): task index by id, direct upstream/downstream indices, topological position, effective
//! priority weight, the tasks that decide a run's state and the setups relevant to each task.
//! Tasks are addressed by their index in `spec.tasks`; node `i` of the graph is task `i`.

use crate::ids::Name;
use crate::limits::{DAG_EDGES_MAX, DAG_TASKS_MAX, ID_BYTES_MAX, MAP_INDEX_MAX, RETRIES_MAX};
use crate::priority::{effective_weights, WeightInput};
use crate::spec::{DagSpec, MappingSpec, TaskRole, TaskSpec, SCHEMA_VERSION};
use crate::timetable::{Timetable, TimetableError};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("dag `{dag_id}` has a cycle: {}", cycle.join(" -> "))]
    Cycle { dag_id: String, cycle: Vec<String> },
    #[error("dag `{dag_id}` has task id `{task_id}` more than once")]
    DuplicateTaskId { dag_id: String, task_id: String },
    #[error("task `{task_id}` in dag `{dag_id}` names unknown upstream task `{upstream}`")]
    UnknownUpstream {
        dag_id: String,
        task_id: String,
        upstream: String,
    },
    #[error("dag `{dag_id}` has no tasks")]
    Empty { dag_id: String },
    #[error("dag `{dag_id}` has {count} {what}, more than the limit of {max}")]
    TooLarge {
        dag_id: String,
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("invalid id `{id}`: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("dag `{dag_id}`: {source}")]
    Schedule {
        dag_id: String,
        source: TimetableError,
    },
    #[error("dag `{dag_id}`: {reason}")]
    Invalid { dag_id: String, reason: String },
    #[error(
        "dag `{dag_id}` uses schema version {version}, but this build reads up to {supported}: \
         upgrade weft or produce the dag with an older sdk"
    )]
    SchemaTooNew {
        dag_id: String,
        version: u32,
        supported: u32,
    },
    #[error("task `{task_id}` in dag `{dag_id}` names unknown task group `{group_id}`")]
    UnknownTaskGroup {
        dag_id: String,
        task_id: String,
        group_id: String,
    },
    #[error("task `{task_id}` in dag `{dag_id}`: {reason}")]
    InvalidTask {
        dag_id: String,
        task_id: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Dag {
    spec: DagSpec,
    timetable: Timetable,
    /// Edge `a -> b` when `a` is a direct upstream of `b`; node `i` is `spec.tasks[i]`.
    graph: DiGraph<(), ()>,
    /// Task id -> position; read for every task-id lookup (foldhash: see `dispatch`).
    index: foldhash::HashMap<String, usize>,
    /// Task indices, upstream before downstream; ties keep the order of `spec.tasks`.
    topological: Vec<usize>,
    /// Inverse of `topological`: `topological[topological_position[i]] == i`.
    topological_position: Vec<usize>,
    /// Direct upstream indices of each task, deduplicated, in spec order.
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    weights: Vec<i64>,
    /// The tasks whose states decide the run's state (Airflow's effective leaves).
    run_state_tasks: Vec<usize>,
    /// Per task: the indirect setup tasks it waits for (Airflow's relevant setups that are not
    /// direct upstream tasks). Empty for teardowns and in DAGs without setups.
    indirect_setups: Vec<Vec<usize>>,
    /// The DAG id, and each task's id and pool, as shared names: every task instance key and
    /// dispatch request clones them instead of copying strings.
    dag_name: Name,
    task_names: Vec<Name>,
    pool_names: Vec<Name>,
    queue_names: Vec<Name>,
}

impl Dag {
    pub fn from_spec(spec: DagSpec) -> Result<Dag, DagError> {
        let timetable = Timetable::new(
            &spec.schedule,
            &spec.timezone,
            spec.start_date,
            spec.end_date,
            spec.catchup,
        )
        .map_err(|source| DagError::Schedule {
            dag_id: spec.dag_id.clone(),
            source,
        })?;
        validate_header(&spec)?;
        let index = index_tasks(&spec)?;
        validate_task_groups(&spec)?;
        for task in &spec.tasks {
            validate_task(&spec, task, &index)?;
        }
        let upstream = upstream_indices(&spec, &index)?;
        let downstream = invert(&upstream);
        let topological = topological_sort(&spec, &upstream, &downstream)?;
        Ok(Dag::assemble(
            spec,
            timetable,
            upstream,
            downstream,
            topological,
        ))
    }

    fn assemble(
        spec: DagSpec,
        timetable: Timetable,
        upstream: Vec<Vec<usize>>,
        downstream: Vec<Vec<usize>>,
        topological: Vec<usize>,
    ) -> Dag {
        let index = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.task_id.clone(), i))
            .collect();
        let mut topological_position = vec![0; topological.len()];
        for (position, &task) in topological.iter().enumerate() {
            topological_position[task] = position;
        }
        let own_weights: Vec<i64> = spec.tasks.iter().map(|task| task.priority_weight).collect();
        let rules: Vec<_> = spec.tasks.iter().map(|task| task.weight_rule).collect();
        let weights = effective_weights(WeightInput {
            own_weights: &own_weights,
            rules: &rules,
            upstream: &upstream,
            downstream: &downstream,
            topological: &topological,
        });
        let mut graph = DiGraph::with_capacity(spec.tasks.len(), 0);
        for _ in &spec.tasks {
            graph.add_node(());
        }
        for (task, ups) in upstream.iter().enumerate() {
            for &up in ups {
                graph.add_edge(NodeIndex::new(up), NodeIndex::new(task), ());
            }
        }
        let run_state_tasks = effective_leaves(&spec, &downstream);
        let indirect_setups = indirect_setups(&spec, &upstream, &downstream);
        let dag_name = Name::from(spec.dag_id.as_str());
        let task_names = spec
            .tasks
            .iter()
            .map(|task| Name::from(task.task_id.as_str()))
            .collect();
        let pool_names = spec
            .tasks
            .iter()
            .map(|task| Name::from(task.pool.as_str()))
            .collect();
        let queue_names = spec
            .tasks
            .iter()
            .map(|task| Name::from(task.queue.as_deref().unwrap_or(crate::spec::DEFAULT_QUEUE)))
            .collect();
        Dag {
            dag_name,
            task_names,
            pool_names,
            queue_names,
            spec,
            timetable,
            graph,
            index,
            topological,
            topological_position,
            upstream,
            downstream,
            weights,
            run_state_tasks,
            indirect_setups,
        }
    }

    pub fn dag_id(&self) -> &str {
        &self.spec.dag_id
    }

    pub fn spec(&self) -> &DagSpec {
        &self.spec
    }

    pub fn timetable(&self) -> &Timetable {
        &self.timetable
    }

    pub fn task(&self, task_id: &str) -> Option<&TaskSpec> {
        self.task_index(task_id)
            .map(|index| &self.spec.tasks[index])
    }

    /// Task ids in a topological order (upstream before downstream).
    pub fn topological_order(&self) -> Vec<&str> {
        self.topological
            .iter()
            .map(|&index| self.task_id_at(index))
            .collect()
    }

    pub fn upstream(&self, task_id: &str) -> Vec<&str> {
        self.ids_of(
            self.task_index(task_id)
                .map(|i| self.upstream[i].as_slice()),
        )
    }

    pub fn downstream(&self, task_id: &str) -> Vec<&str> {
        self.ids_of(
            self.task_index(task_id)
                .map(|i| self.downstream[i].as_slice()),
        )
    }

    /// The effective priority of a task after its weight rule (1 for an unknown task).
    pub fn priority_weight(&self, task_id: &str) -> i64 {
        self.task_index(task_id)
            .map(|index| self.weights[index])
            .unwrap_or(1)
    }

    /// Every task downstream of `task_id`, however far, in topological order.
    pub fn descendants(&self, task_id: &str) -> Vec<&str> {
        let found = self.task_index(task_id).map(|i| self.descendant_indices(i));
        self.ids_of(found.as_deref())
    }

    /// Every task upstream of `task_id`, however far, in topological order.
    pub fn ancestors(&self, task_id: &str) -> Vec<&str> {
        let found = self.task_index(task_id).map(|i| self.ancestor_indices(i));
        self.ids_of(found.as_deref())
    }

    pub fn task_count(&self) -> usize {
        self.spec.tasks.len()
    }

    pub fn task_index(&self, task_id: &str) -> Option<usize> {
        self.index.get(task_id).copied()
    }

    /// The task at `index`. Panics when `index >= task_count()` (a caller bug, not input).
    pub fn task_at(&self, index: usize) -> &TaskSpec {
        &self.spec.tasks[index]
    }

    pub fn task_id_at(&self, index: usize) -> &str {
        &self.spec.tasks[index].task_id
    }

    pub fn dag_name(&self) -> &Name {
        &self.dag_name
    }

    /// `task_id_at` as a shared name.
    pub fn task_name_at(&self, index: usize) -> &Name {
        &self.task_names[index]
    }

    /// The pool of the task at `index`, as a shared name.
    pub fn pool_name_at(&self, index: usize) -> &Name {
        &self.pool_names[index]
    }

    /// The worker queue of the task at `index`, as a shared name.
    pub fn queue_name_at(&self, index: usize) -> &Name {
        &self.queue_names[index]
    }

    pub fn topological_indices(&self) -> &[usize] {
        &self.topological
    }

    pub fn topological_position(&self, index: usize) -> usize {
        self.topological_position[index]
    }

    pub fn upstream_indices(&self, index: usize) -> &[usize] {
        &self.upstream[index]
    }

    pub fn downstream_indices(&self, index: usize) -> &[usize] {
        &self.downstream[index]
    }

    pub fn priority_weight_at(&self, index: usize) -> i64 {
        self.weights[index]
    }

    /// Tasks whose final states decide the run's state: Airflow's effective leaves (tasks with
    /// no downstream but teardowns, teardowns excluded), or every leaf when all are teardowns.
    pub fn run_state_indices(&self) -> &[usize] {
        &self.run_state_tasks
    }

    /// Setup tasks upstream of `index` (not directly) that it must wait for: Airflow's relevant
    /// setups — those with no teardown or with a teardown downstream of the task.
    pub fn indirect_setup_indices(&self, index: usize) -> &[usize] {
        &self.indirect_setups[index]
    }

    /// Every task reachable downstream of `index`, in topological order. O(tasks + edges):
    /// only `Clear` asks, so nothing is kept per task.
    pub fn descendant_indices(&self, index: usize) -> Vec<usize> {
        self.sorted_topologically(reachable(&self.downstream, index))
    }

    pub fn ancestor_indices(&self, index: usize) -> Vec<usize> {
        self.sorted_topologically(reachable(&self.upstream, index))
    }

    /// The graph; node `i` is task `i`, edges point downstream.
    pub fn graph(&self) -> &DiGraph<(), ()> {
        &self.graph
    }

    fn sorted_topologically(&self, mut indices: Vec<usize>) -> Vec<usize> {
        indices.sort_by_key(|&index| self.topological_position[index]);
        indices
    }

    fn ids_of(&self, indices: Option<&[usize]>) -> Vec<&str> {
        indices
            .unwrap_or_default()
            .iter()
            .map(|&index| self.task_id_at(index))
            .collect()
    }
}

/// Checks that an id is 1..=`ID_BYTES_MAX` bytes of `[A-Za-z0-9_.-]`.
pub fn validate_id(id: &str) -> Result<(), DagError> {
    let invalid = |reason: String| {
        Err(DagError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("ids must not be empty".to_string());
    }
    if id.len() > ID_BYTES_MAX {
        return invalid(format!(
            "{} bytes, more than the limit of {ID_BYTES_MAX}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        return invalid(format!(
            "character `{bad}` is not allowed: use letters, digits, `_`, `.`, `-`"
        ));
    }
    Ok(())
}

fn validate_header(spec: &DagSpec) -> Result<(), DagError> {
    let dag_id = &spec.dag_id;
    if spec.schema_version > SCHEMA_VERSION {
        return Err(DagError::SchemaTooNew {
            dag_id: dag_id.clone(),
            version: spec.schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    validate_id(dag_id)?;
    if spec.tasks.is_empty() {
        return Err(DagError::Empty {
            dag_id: dag_id.clone(),
        });
    }
    if spec.tasks.len() > DAG_TASKS_MAX {
        return Err(DagError::TooLarge {
            dag_id: dag_id.clone(),
            what: "tasks",
            count: spec.tasks.len(),
            max: DAG_TASKS_MAX,
        });
    }
    Ok(())
}

fn index_tasks(spec: &DagSpec) -> Result<HashMap<&str, usize>, DagError> {
    let mut index = HashMap::with_capacity(spec.tasks.len());
    for (position, task) in spec.tasks.iter().enumerate() {
        validate_id(&task.task_id)?;
        if index.insert(task.task_id.as_str(), position).is_some() {
            return Err(DagError::DuplicateTaskId {
                dag_id: spec.dag_id.clone(),
                task_id: task.task_id.clone(),
            });
        }
    }
    Ok(index)
}

fn validate_task_groups(spec: &DagSpec) -> Result<(), DagError> {
    let invalid = |reason: String| {
        Err(DagError::Invalid {
            dag_id: spec.dag_id.clone(),
            reason,
        })
    };
    let mut parents: HashMap<&str, Option<&str>> = HashMap::new();
    for group in &spec.task_groups {
        validate_id(&group.group_id)?;
        if parents
            .insert(&group.group_id, group.parent_group.as_deref())
            .is_some()
        {
            return invalid(format!(
                "task group `{}` is defined more than once",
                group.group_id
            ));
        }
    }
    for group in &spec.task_groups {
        // Walking up more parents than there are groups means the parents form a loop.
        let mut current = group.parent_group.as_deref();
        for _ in 0..=spec.task_groups.len() {
            let Some(parent) = current else { break };
            match parents.get(parent) {
                None => {
                    return invalid(format!(
                        "task group `{}` names unknown parent group `{parent}`",
                        group.group_id
                    ))
                }
                Some(next) => current = *next,
            }
        }
        if current.is_some() {
            return invalid(format!(
                "task group `{}` is its own ancestor",
                group.group_id
            ));
        }
    }
    Ok(())
}

fn validate_task(
    spec: &DagSpec,
    task: &TaskSpec,
    index: &HashMap<&str, usize>,
) -> Result<(), DagError> {
    let invalid = |reason: String| {
        Err(DagError::InvalidTask {
            dag_id: spec.dag_id.clone(),
            task_id: task.task_id.clone(),
            reason,
        })
    };
    if task.retries > RETRIES_MAX {
        return invalid(format!(
            "{} retries, more than the limit of {RETRIES_MAX}",
            task.retries
        ));
    }
    if task.pool_slots == 0 {
        return invalid("pool_slots must be at least 1".to_string());
    }
    if task.pool.is_empty() {
        return invalid("pool must not be empty".to_string());
    }
    if let Some(group_id) = &task.task_group {
        if !spec
            .task_groups
            .iter()
            .any(|group| &group.group_id == group_id)
        {
            return Err(DagError::UnknownTaskGroup {
                dag_id: spec.dag_id.clone(),
                task_id: task.task_id.clone(),
                group_id: group_id.clone(),
            });
        }
    }
    match &task.mapping {
        Some(MappingSpec::Literal { length }) if *length > MAP_INDEX_MAX => invalid(format!(
            "maps over {length} elements, more than the limit of {MAP_INDEX_MAX}"
        )),
        Some(MappingSpec::Upstream { task_id }) if !index.contains_key(task_id.as_str()) => {
            invalid(format!("maps over unknown upstream task `{task_id}`"))
        }
        Some(MappingSpec::Upstream { task_id }) if !task.upstream.contains(task_id) => invalid(
            format!("maps over `{task_id}`, which must also be one of its direct upstream tasks"),
        ),
        _ => Ok(()),
    }
}

/// Direct upstream indices per task, duplicates dropped (Airflow keeps upstream ids in a set).
fn upstream_indices(
    spec: &DagSpec,
    index: &HashMap<&str, usize>,
) -> Result<Vec<Vec<usize>>, DagError> {
    let mut edges = 0usize;
    let mut all = Vec::with_capacity(spec.tasks.len());
    for task in &spec.tasks {
        let mut seen = HashSet::new();
        let mut ups = Vec::with_capacity(task.upstream.len());
        for upstream in &task.upstream {
            let Some(&position) = index.get(upstream.as_str()) else {
                return Err(DagError::UnknownUpstream {
                    dag_id: spec.dag_id.clone(),
                    task_id: task.task_id.clone(),
                    upstream: upstream.clone(),
                });
            };
            if seen.insert(position) {
                ups.push(position);
            }
        }
        edges += ups.len();
        if edges > DAG_EDGES_MAX {
            return Err(DagError::TooLarge {
                dag_id: spec.dag_id.clone(),
                what: "edges",
                count: edges,
                max: DAG_EDGES_MAX,
            });
        }
        all.push(ups);
    }
    Ok(all)
}

fn invert(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut inverted = vec![Vec::new(); edges.len()];
    for (task, targets) in edges.iter().enumerate() {
        for &target in targets {
            inverted[target].push(task);
        }
    }
    inverted
}

/// Kahn's algorithm, always taking the ready task that comes first in the spec, so the order
/// is stable and readable. Tasks left over sit on or behind a cycle.
fn topological_sort(
    spec: &DagSpec,
    upstream: &[Vec<usize>],
    downstream: &[Vec<usize>],
) -> Result<Vec<usize>, DagError> {
    let mut waiting_for: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..upstream.len())
        .filter(|&i| waiting_for[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(upstream.len());
    while let Some(task) = ready.pop_first() {
        order.push(task);
        for &down in &downstream[task] {
            waiting_for[down] -= 1;
            if waiting_for[down] == 0 {
                ready.insert(down);
            }
        }
    }
    if order.len() == upstream.len() {
        return Ok(order);
    }
    let cycle = find_cycle(upstream, &waiting_for);
    Err(DagError::Cycle {
        dag_id: spec.dag_id.clone(),
        cycle: cycle
            .into_iter()
            .map(|i| spec.tasks[i].task_id.clone())
            .collect(),
    })
}

/// One cycle among the tasks Kahn's algorithm could not order (`waiting_for > 0`), as task
/// indices in edge direction with the first repeated at the end: `a -> b -> c -> a`.
/// Every such task has an upstream that is also left over, so walking upstream must repeat.
fn find_cycle(upstream: &[Vec<usize>], waiting_for: &[usize]) -> Vec<usize> {
    let left_over = |task: usize| waiting_for[task] > 0;
    let Some(start) = (0..upstream.len()).find(|&task| left_over(task)) else {
        return Vec::new();
    };
    let mut visited_at = HashMap::new();
    let mut walk = Vec::new();
    let mut current = start;
    while let std::collections::hash_map::Entry::Vacant(entry) = visited_at.entry(current) {
        entry.insert(walk.len());
        walk.push(current);
        match upstream[current].iter().copied().find(|&up| left_over(up)) {
            Some(up) => current = up,
            None => return walk,
        }
    }
    let mut cycle: Vec<usize> = walk[visited_at[&current]..].to_vec();
    cycle.reverse();
    // Start at the task that comes first in the spec, so the message is stable.
    let first = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, &task)| task)
        .map_or(0, |(i, _)| i);
    cycle.rotate_left(first);
    cycle.push(cycle[0]);
    cycle
}

fn reachable(edges: &[Vec<usize>], from: usize) -> Vec<usize> {
    let mut seen = vec![false; edges.len()];
    let mut queue = VecDeque::from([from]);
    let mut found = Vec::new();
    while let Some(task) = queue.pop_front() {
        for &next in &edges[task] {
            if !seen[next] {
                seen[next] = true;
                found.push(next);
                queue.push_back(next);
            }
        }
    }
    found
}

/// Airflow's `_tis_for_dagrun_state`: a task counts when it is not a teardown and all its
/// downstream tasks are teardowns; when no task qualifies, every task without downstream does.
fn effective_leaves(spec: &DagSpec, downstream: &[Vec<usize>]) -> Vec<usize> {
    let is_teardown = |task: usize| spec.tasks[task].role == TaskRole::Teardown;
    let leaves: Vec<usize> = (0..spec.tasks.len())
        .filter(|&task| !is_teardown(task) && downstream[task].iter().all(|&d| is_teardown(d)))
        .collect();
    if !leaves.is_empty() {
        return leaves;
    }
    (0..spec.tasks.len())
        .filter(|&task| downstream[task].is_empty())
        .collect()
}

/// Airflow's `get_upstreams_only_setups` minus the direct upstream tasks, for every task that
/// is not a teardown. O((setups + teardowns) × (tasks + edges)).
fn indirect_setups(
    spec: &DagSpec,
    upstream: &[Vec<usize>],
    downstream: &[Vec<usize>],
) -> Vec<Vec<usize>> {
    let count = spec.tasks.len();
    let role = |task: usize| spec.tasks[task].role;
    let mut result = vec![Vec::new(); count];
    for setup in (0..count).filter(|&task| role(task) == TaskRole::Setup) {
        let teardowns: Vec<usize> = downstream[setup]
            .iter()
            .copied()
            .filter(|&d| role(d) == TaskRole::Teardown)
            .collect();
        // A task `t` below the setup keeps it relevant when one of the setup's teardowns lies
        // below `t`, i.e. `t` is an ancestor of that teardown.
        let mut above_teardown = vec![teardowns.is_empty(); count];
        for &teardown in &teardowns {
            for ancestor in reachable(upstream, teardown) {
                above_teardown[ancestor] = true;
            }
        }
        for task in reachable(downstream, setup) {
            let direct = upstream[task].contains(&setup);
            if role(task) != TaskRole::Teardown && above_teardown[task] && !direct {
                result[task].push(setup);
            }
        }
    }
    result
}
