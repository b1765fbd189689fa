//! A run's page: its state, dates and conf, its task instances with their states, tries and
//! durations, the actions on them (clear with downstream/upstream, mark success or failed),
//! and the run's Gantt chart; kept current by the stream.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use weft_api_types::{
    ClearRequest, ClearResponse, MarkRequest, MarkState, Role, RunDetail, TaskInstance,
};

use crate::api::{self, Loader};
use crate::components::{has_role, show, Notice, NoticeLine, StateBadge};
use crate::live::{concerns_run, on_events};
use crate::pages::dag::{Gantt, RunStateLine};
use crate::pages::{dag_href, run_api, task_href};
use crate::state::{
    format_duration_ms, run_state_name, short_date, short_date_opt, task_state_name,
};

#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let dag_id = Memo::new(move |_| params.read().get("dag_id").unwrap_or_default());
    let run_id = Memo::new(move |_| params.read().get("run_id").unwrap_or_default());
    let detail = Loader::<RunDetail>::new(move || run_api(&dag_id.get(), &run_id.get()));
    on_events(
        move |event| {
            if concerns_run(event, &dag_id.get_untracked(), &run_id.get_untracked()) {
                detail.reload();
            }
        },
        move || detail.reload(),
    );
    let notice = RwSignal::new(None::<Notice>);
    view! {
        <Title text=move || format!("{} · {} · weft", run_id.get(), dag_id.get())/>
        <p class="crumbs"><a href=move || dag_href(&dag_id.get())>{move || dag_id.get()}</a> " / run"</p>
        {move || view! {
            <ClearForm dag_id=dag_id.get() run_id=run_id.get() task_id=None notice after=move || detail.reload()/>
        }}
        <NoticeLine notice/>
        {show(detail, move |d: RunDetail| {
            let run = d.run.clone();
            view! {
                <div class="page-head">
                    <h1 id="run-title">{run.run_id.clone()}</h1>
                    <span id="run-state" data-state=run_state_name(run.state)><RunStateLine run=run.clone()/></span>
                </div>
                <div class="facts">
                    <span>"Type " {format!("{:?}", run.run_type).to_lowercase()}</span>
                    <span>"Logical date " {short_date(&run.logical_date)}</span>
                    <span>"Data interval " {short_date(&run.data_interval_start)} " – " {short_date(&run.data_interval_end)}</span>
                    <span>"Started " {short_date_opt(run.start_date.as_deref())}</span>
                    <span>"Ended " {short_date_opt(run.end_date.as_deref())}</span>
                    {d.cell.clone().map(|cell| view! {
                        <span id="run-cell" data-cell=cell.clone()>"Cell " <a href="/cells">{cell.clone()}</a></span>
                    })}
                </div>
                <details><summary>"Conf"</summary><pre class="code">{serde_json::to_string_pretty(&run.conf).unwrap_or_default()}</pre></details>
                <table class="table" id="task-instances">
                    <thead><tr><th>"Task"</th><th>"State"</th><th>"Try"</th><th>"Started"</th><th>"Ended"</th><th>"Duration"</th><th>"Operator"</th><th>"Pool"</th><th></th></tr></thead>
                    <tbody>
                        {d.task_instances.iter().map(|ti| view! { <TaskRow ti=ti.clone() dag_id=run.dag_id.clone() run_id=run.run_id.clone() notice detail/> }).collect_view()}
                    </tbody>
                </table>
                <h2>"Gantt"</h2>
                <Gantt detail=d.clone()/>
            }
        })}
    }
}

#[component]
fn TaskRow(
    ti: TaskInstance,
    dag_id: String,
    run_id: String,
    notice: RwSignal<Option<Notice>>,
    detail: Loader<RunDetail>,
) -> impl IntoView {
    let state = task_state_name(Some(ti.state));
    let mark = {
        let (dag_id, run_id, task_id) = (dag_id.clone(), run_id.clone(), ti.task_id.clone());
        move |state: MarkState| {
            mark_task(
                dag_id.clone(),
                run_id.clone(),
                task_id.clone(),
                state,
                notice,
                move || detail.reload(),
            )
        }
    };
    let mark_failed = mark.clone();
    view! {
        <tr data-task-id=ti.task_id.clone() data-state=state>
            <td><a href=task_href(&dag_id, &run_id, &ti.task_id)>{ti.task_id.clone()}</a>
                {(ti.map_index >= 0).then(|| format!(" [{}]", ti.map_index))}</td>
            <td><StateBadge state=state/></td>
            <td>{format!("{} / {}", ti.try_number, ti.max_tries)}</td>
            <td>{short_date_opt(ti.start_date.as_deref())}</td>
            <td>{short_date_opt(ti.end_date.as_deref())}</td>
            <td>{ti.duration_ms.map(format_duration_ms).unwrap_or_default()}</td>
            <td>{ti.operator.clone()}</td>
            <td>{ti.pool.clone()}</td>
            <td class="actions">
                <button class="small mark-success" disabled=move || !has_role(Role::User) on:click=move |_| mark(MarkState::Success)>"Mark success"</button>
                <button class="small mark-failed" disabled=move || !has_role(Role::User) on:click=move |_| mark_failed(MarkState::Failed)>"Mark failed"</button>
            </td>
        </tr>
    }
}

/// Sets a task instance's state by hand.
pub fn mark_task(
    dag_id: String,
    run_id: String,
    task_id: String,
    state: MarkState,
    notice: RwSignal<Option<Notice>>,
    after: impl Fn() + 'static,
) {
    leptos::task::spawn_local(async move {
        let path = format!(
            "{}/tasks/{}/state",
            run_api(&dag_id, &run_id),
            api::encode_component(&task_id)
        );
        match api::send_unit("POST", &path, &MarkRequest { state }).await {
            Ok(()) => notice.set(Some(Notice::Done(format!(
                "Marked {task_id} {}.",
                if state == MarkState::Success {
                    "success"
                } else {
                    "failed"
                }
            )))),
            Err(f) => notice.set(Some(Notice::Error(f.message))),
        }
        after();
    });
}

/// Clearing: a dry run first lists what would be cleared, then a confirmation clears it.
/// Without `task_id` it clears every task of the run.
#[component]
pub fn ClearForm<F>(
    dag_id: String,
    run_id: String,
    task_id: Option<String>,
    notice: RwSignal<Option<Notice>>,
    after: F,
) -> impl IntoView
where
    F: Fn() + Clone + Send + Sync + 'static,
{
    let downstream = RwSignal::new(task_id.is_some());
    let upstream = RwSignal::new(false);
    let pending = RwSignal::new(None::<Vec<String>>);
    let request = {
        let task_id = task_id.clone();
        move |dry_run: bool| ClearRequest {
            task_ids: task_id.clone().into_iter().collect(),
            downstream: downstream.get_untracked(),
            upstream: upstream.get_untracked(),
            dry_run,
        }
    };
    let path = format!("{}/clear", run_api(&dag_id, &run_id));
    let send = move |dry_run: bool| {
        let body = request(dry_run);
        let path = path.clone();
        let after = after.clone();
        leptos::task::spawn_local(async move {
            match api::send::<_, ClearResponse>("POST", &path, &body).await {
                Ok(answer) if dry_run => {
                    if answer.task_ids.is_empty() {
                        notice.set(Some(Notice::Error("Nothing to clear.".into())));
                    } else {
                        pending.set(Some(answer.task_ids));
                    }
                }
                Ok(answer) => {
                    pending.set(None);
                    notice.set(Some(Notice::Done(format!(
                        "Cleared {}.",
                        answer.task_ids.join(", ")
                    ))));
                    after();
                }
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
        });
    };
    let confirm = send.clone();
    let label = if task_id.is_some() {
        "Clear"
    } else {
        "Clear run"
    };
    view! {
        <div class="clear-form">
            {task_id.is_some().then(|| view! {
                <label><input type="checkbox" id="clear-downstream" checked=true on:change=move |ev| downstream.set(event_target_checked(&ev))/>" Downstream"</label>
                <label><input type="checkbox" id="clear-upstream" on:change=move |ev| upstream.set(event_target_checked(&ev))/>" Upstream"</label>
            })}
            <button id="clear-start" disabled=move || !has_role(Role::User) on:click=move |_| send(true)>{label}"…"</button>
            {move || pending.get().map(|ids| {
                let confirm = confirm.clone();
                view! {
                    <span class="confirm">
                        "Will clear: " <strong id="clear-list">{ids.join(", ")}</strong>
                        <button id="clear-confirm" on:click=move |_| confirm(false)>"Confirm"</button>
                        <button on:click=move |_| pending.set(None)>"Cancel"</button>
                    </span>
                }
            })}
        </div>
    }
}
