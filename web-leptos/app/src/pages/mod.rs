//! The pages of the UI, one module per area.

pub mod admin;
pub mod dag;
pub mod dags;
pub mod layout;
pub mod login;
pub mod run;
pub mod task;

use crate::api::encode_component;

/// The address of a DAG's page.
pub fn dag_href(dag_id: &str) -> String {
    format!("/dags/{}", encode_component(dag_id))
}

/// The address of a run's page.
pub fn run_href(dag_id: &str, run_id: &str) -> String {
    format!(
        "/dags/{}/runs/{}",
        encode_component(dag_id),
        encode_component(run_id)
    )
}

/// The address of a task instance's page.
pub fn task_href(dag_id: &str, run_id: &str, task_id: &str) -> String {
    format!(
        "{}/tasks/{}",
        run_href(dag_id, run_id),
        encode_component(task_id)
    )
}

/// The API path of a run (after `/api/v1`).
pub fn run_api(dag_id: &str, run_id: &str) -> String {
    format!(
        "/dags/{}/runs/{}",
        encode_component(dag_id),
        encode_component(run_id)
    )
}
