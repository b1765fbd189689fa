//! A DAG's page: its header (pause toggle, trigger with a JSON conf checked against the params,
//! backfill with a dry run), and the tabs: grid (runs × tasks, newest first, paged with the
//! `before` cursor), graph (layered layout coloured by a chosen run), Gantt of a run, code with
//! its versions, and details (tasks, params, docs).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};
use weft_api_types::{
    BackfillRequest, BackfillResponse, DagCode, DagDetail, DagPatch, DagSummary, DagVersion, Grid,
    Role, Run, RunDetail, StreamEvent, TriggerRun,
};

use crate::api::{self, encode_component, Load, Loader};
use crate::components::{has_role, show, Legend, Notice, NoticeLine, Sparkline, StateBadge};
use crate::conf;
use crate::graph::{layout, NODE_HEIGHT, NODE_WIDTH};
use crate::live::{concerns_dag, concerns_run, on_events};
use crate::pages::{dag_href, run_api, run_href, task_href};
use crate::state::{
    duration_between, format_duration_ms, label, parse_rfc3339_ms, run_state_name, short_date,
    short_date_opt, state_class, state_colour, task_state_name,
};

/// Runs per grid page.
pub const GRID_PAGE: u32 = 25;

#[component]
pub fn DagPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let dag_id = Memo::new(move |_| params.read().get("dag_id").unwrap_or_default());
    let tab = Memo::new(move |_| query.read().get("tab").unwrap_or_else(|| "grid".into()));
    let chosen_run = Memo::new(move |_| query.read().get("run"));

    let detail =
        Loader::<DagDetail>::new(move || format!("/dags/{}", encode_component(&dag_id.get())));
    // Older grid pages are reached through a stack of `before` cursors.
    let cursors = RwSignal::new(Vec::<String>::new());
    Effect::new(move |_| {
        dag_id.track();
        cursors.set(Vec::new());
    });
    let grid = Loader::<Grid>::new(move || {
        let mut path = format!(
            "/dags/{}/grid?limit={GRID_PAGE}",
            encode_component(&dag_id.get())
        );
        if let Some(before) = cursors.with(|c| c.last().cloned()) {
            path.push_str(&format!("&before={}", encode_component(&before)));
        }
        path
    });
    // The run the graph and Gantt show: the one in `?run=`, else the newest.
    let run_id = Memo::new(move |_| {
        chosen_run.get().or_else(|| match grid.data.get() {
            Load::Ready(g) => g.runs.first().map(|r| r.run_id.clone()),
            _ => None,
        })
    });

    on_events(
        move |event| {
            let dag = dag_id.get_untracked();
            if !concerns_dag(event, &dag) {
                return;
            }
            match event {
                StreamEvent::Dag { .. } => detail.reload(),
                StreamEvent::Run { .. } | StreamEvent::Task { .. } => {
                    grid.reload();
                    if matches!(event, StreamEvent::Run { .. }) {
                        detail.reload();
                    }
                }
                _ => {}
            }
        },
        move || {
            detail.reload();
            grid.reload();
        },
    );

    let panel = RwSignal::new("");
    Effect::new(move |_| {
        dag_id.track();
        panel.set("");
    });

    let tab_link = move |name: &'static str, text: &'static str| {
        view! {
            <a href=move || format!("{}?tab={name}", dag_href(&dag_id.get()))
               class=move || if tab.get() == name { "tab active" } else { "tab" }
               id=format!("tab-{name}")>{text}</a>
        }
    };

    view! {
        <Title text=move || format!("{} · weft", dag_id.get())/>
        // The action panels stay open while the header above them is refreshed by the stream.
        {show(detail, move |dag: DagDetail| view! { <DagHeader dag detail panel/> })}
        {move || {
            let dag = dag_id.get_untracked();
            match panel.get() {
                "trigger" => {
                    let params = match detail.data.get_untracked() {
                        Load::Ready(d) => d.params,
                        _ => serde_json::json!({}),
                    };
                    view! { <TriggerPanel dag_id=dag params grid/> }.into_any()
                }
                "backfill" => view! { <BackfillPanel dag_id=dag grid/> }.into_any(),
                _ => ().into_any(),
            }
        }}
        <nav class="tabs">
            {tab_link("grid", "Grid")}
            {tab_link("graph", "Graph")}
            {tab_link("gantt", "Gantt")}
            {tab_link("code", "Code")}
            {tab_link("details", "Details")}
        </nav>
        {move || match tab.get().as_str() {
            "graph" => view! { <GraphTab dag_id detail grid run_id/> }.into_any(),
            "gantt" => view! { <GanttTab dag_id grid run_id/> }.into_any(),
            "code" => view! { <CodeTab dag_id/> }.into_any(),
            "details" => view! { <DetailsTab detail/> }.into_any(),
            _ => view! { <GridTab dag_id grid cursors/> }.into_any(),
        }}
    }
}

#[component]
fn DagHeader(
    dag: DagDetail,
    detail: Loader<DagDetail>,
    panel: RwSignal<&'static str>,
) -> impl IntoView {
    let summary = dag.summary.clone();
    let dag_id = summary.dag_id.clone();
    let notice = RwSignal::new(None::<Notice>);
    let toggle = {
        let dag_id = dag_id.clone();
        move |ev: leptos::ev::Event| {
            let paused = !event_target_checked(&ev);
            let dag_id = dag_id.clone();
            leptos::task::spawn_local(async move {
                let path = format!("/dags/{}", encode_component(&dag_id));
                match api::send::<_, DagSummary>("PATCH", &path, &DagPatch { paused }).await {
                    Ok(s) => notice.set(Some(Notice::Done(if s.paused {
                        "Paused.".into()
                    } else {
                        "Unpaused.".into()
                    }))),
                    Err(f) => notice.set(Some(Notice::Error(f.message))),
                }
                detail.reload();
            });
        }
    };
    view! {
        <div class="page-head dag-head">
            <label class="switch" title=if summary.paused { "paused: click to unpause" } else { "active: click to pause" }>
                <input type="checkbox" id="dag-pause-toggle" class="pause-toggle" checked={!summary.paused}
                    disabled=move || !has_role(Role::User) on:change=toggle/>
            </label>
            <h1 id="dag-title">{summary.display_name.clone()}</h1>
            <span id="dag-paused-state" class=if summary.paused { "tag paused-label" } else { "tag active-label" }>
                {if summary.paused { "paused" } else { "active" }}
            </span>
            <span class="spacer"></span>
            <button id="open-trigger" disabled=move || !has_role(Role::User)
                on:click=move |_| panel.update(|p| *p = if *p == "trigger" { "" } else { "trigger" })>"Trigger"</button>
            <button id="open-backfill" disabled=move || !has_role(Role::Op)
                on:click=move |_| panel.update(|p| *p = if *p == "backfill" { "" } else { "backfill" })>"Backfill"</button>
        </div>
        <div class="facts">
            <span>"Schedule " <code>{summary.schedule.clone()}</code> " (" {summary.timezone.clone()} ")"</span>
            <span>"Next run " {short_date_opt(summary.next_run_at.as_deref())}</span>
            <span>"Owner " {summary.owner.clone().unwrap_or_else(|| "—".into())}</span>
            <span class="tags">{summary.tags.iter().map(|t| view! { <span class="tag">{t.clone()}</span> }).collect_view()}</span>
            <span title="durations of recent runs">"Durations " <Sparkline values=summary.recent_durations_ms.clone() width=120.0/></span>
        </div>
        {summary.description.clone().map(|d| view! { <p class="muted">{d}</p> })}
        <NoticeLine notice/>
    }
}

#[component]
fn TriggerPanel(dag_id: String, params: serde_json::Value, grid: Loader<Grid>) -> impl IntoView {
    let initial =
        serde_json::to_string_pretty(&conf::defaults(&params)).unwrap_or_else(|_| "{}".into());
    let text = RwSignal::new(initial.clone());
    let notice = RwSignal::new(None::<Notice>);
    let created = RwSignal::new(None::<Run>);
    let schema = params.clone();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let conf = match conf::check(&schema, &text.get_untracked()) {
            Ok(conf) => conf,
            Err(message) => {
                notice.set(Some(Notice::Error(message)));
                return;
            }
        };
        let dag_id = dag_id.clone();
        leptos::task::spawn_local(async move {
            let body = TriggerRun {
                conf: Some(conf),
                logical_date: None,
            };
            let path = format!("/dags/{}/runs", encode_component(&dag_id));
            match api::send::<_, Run>("POST", &path, &body).await {
                Ok(run) => {
                    notice.set(Some(Notice::Done(format!("Triggered {}.", run.run_id))));
                    created.set(Some(run));
                    grid.reload();
                }
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
        });
    };
    let has_params = params
        .get("properties")
        .and_then(|p| p.as_object())
        .is_some_and(|p| !p.is_empty());
    view! {
        <form class="panel" id="trigger-form" on:submit=submit>
            <h2>"Trigger a run"</h2>
            <label>"Conf (JSON)"
                <textarea id="trigger-conf" rows="8" prop:value=move || text.get()
                    on:input=move |ev| text.set(event_target_value(&ev))>{initial.clone()}</textarea>
            </label>
            {has_params.then(|| view! {
                <details><summary>"Params"</summary><pre class="code">{serde_json::to_string_pretty(&params).unwrap_or_default()}</pre></details>
            })}
            <button type="submit" id="trigger-submit">"Trigger"</button>
            <NoticeLine notice/>
            {move || created.get().map(|run| view! {
                <p><a id="triggered-run" href=run_href(&run.dag_id, &run.run_id)>"Open " {run.run_id.clone()}</a></p>
            })}
        </form>
    }
}

#[component]
fn BackfillPanel(dag_id: String, grid: Loader<Grid>) -> impl IntoView {
    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let rerun_failed = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let dates = RwSignal::new(None::<BackfillResponse>);
    let run = move |dry_run: bool| {
        let dag_id = dag_id.clone();
        let (from_day, to_day) = (from.get_untracked(), to.get_untracked());
        if from_day.is_empty() || to_day.is_empty() {
            notice.set(Some(Notice::Error(
                "Choose the first and last logical dates.".into(),
            )));
            return;
        }
        let body = BackfillRequest {
            from: format!("{from_day}T00:00:00Z"),
            to: format!("{to_day}T23:59:59Z"),
            dry_run,
            rerun_failed: rerun_failed.get_untracked(),
        };
        leptos::task::spawn_local(async move {
            let path = format!("/dags/{}/backfills", encode_component(&dag_id));
            match api::send::<_, BackfillResponse>("POST", &path, &body).await {
                Ok(answer) => {
                    let n = answer.logical_dates.len();
                    notice.set(Some(Notice::Done(if answer.created {
                        format!("Created {n} runs.")
                    } else {
                        format!("A backfill would create {n} runs:")
                    })));
                    dates.set(Some(answer));
                    grid.reload();
                }
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
        });
    };
    let dry = run.clone();
    view! {
        <div class="panel" id="backfill-form">
            <h2>"Backfill"</h2>
            <div class="row">
                <label>"From " <input type="date" id="backfill-from" on:input=move |ev| from.set(event_target_value(&ev))/></label>
                <label>"To " <input type="date" id="backfill-to" on:input=move |ev| to.set(event_target_value(&ev))/></label>
                <label><input type="checkbox" id="backfill-rerun-failed" on:change=move |ev| rerun_failed.set(event_target_checked(&ev))/>" Rerun failed runs"</label>
            </div>
            <button id="backfill-dry-run" on:click=move |_| dry(true)>"Dry run"</button>
            <button id="backfill-create" on:click=move |_| run(false)>"Create runs"</button>
            <NoticeLine notice/>
            {move || dates.get().map(|d| view! {
                <ul class="dates" id="backfill-dates">{d.logical_dates.iter().map(|x| view! { <li>{short_date(x)}</li> }).collect_view()}</ul>
            })}
        </div>
    }
}

#[component]
fn GridTab(
    dag_id: Memo<String>,
    grid: Loader<Grid>,
    cursors: RwSignal<Vec<String>>,
) -> impl IntoView {
    view! {
        <Legend/>
        {show(grid, move |g: Grid| {
            let dag = dag_id.get_untracked();
            let next = g.next_before.clone();
            let tasks = g.tasks.clone();
            view! {
                <div class="grid-wrap">
                <table class="grid" id="grid">
                    <thead><tr>
                        <th class="run-col">"Run"</th>
                        {tasks.iter().map(|t| view! { <th class="task-col"><span title=t.clone()>{t.clone()}</span></th> }).collect_view()}
                    </tr></thead>
                    <tbody>
                        {g.runs.iter().zip(g.cells.iter()).map(|(run, cells)| {
                            let run_state = run_state_name(run.state);
                            view! {
                                <tr data-run-id=run.run_id.clone()>
                                    <th class="run-col">
                                        <a href=run_href(&dag, &run.run_id) class=format!("run-label {}", state_class(run_state)) title=run_state>
                                            {short_date(&run.logical_date)}
                                        </a>
                                    </th>
                                    {tasks.iter().zip(cells.iter()).map(|(task, cell)| {
                                        let state = task_state_name(*cell);
                                        view! {
                                            <td><a class=format!("cell {}", state_class(state)) data-task-id=task.clone() data-state=state
                                                href=task_href(&dag, &run.run_id, task) title=format!("{task}: {}", label(state))></a></td>
                                        }
                                    }).collect_view()}
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                </div>
                <div class="pager">
                    <button id="grid-newer" disabled=move || cursors.with(|c| c.is_empty())
                        on:click=move |_| cursors.update(|c| { c.pop(); })>"Newer"</button>
                    <button id="grid-older" disabled=next.is_none()
                        on:click=move |_| if let Some(n) = next.clone() { cursors.update(|c| c.push(n)) }>"Older"</button>
                    {g.runs.is_empty().then(|| view! { <span class="muted">"No runs yet."</span> })}
                </div>
            }
        })}
    }
}

/// A picker of the runs on the grid's current page.
#[component]
fn RunPicker(
    dag_id: Memo<String>,
    grid: Loader<Grid>,
    run_id: Memo<Option<String>>,
    tab: &'static str,
) -> impl IntoView {
    let navigate = leptos_router::hooks::use_navigate();
    view! {
        <label class="run-picker">"Run "
            <select id="run-picker" on:change=move |ev| {
                let run = event_target_value(&ev);
                navigate(&format!("{}?tab={tab}&run={}", dag_href(&dag_id.get_untracked()), encode_component(&run)), Default::default());
            }>
                {move || grid.ready().map(|g| g.runs.iter().map(|r| {
                    let selected = run_id.get().as_deref() == Some(r.run_id.as_str());
                    view! { <option value=r.run_id.clone() selected=selected>{format!("{} · {}", short_date(&r.logical_date), run_state_name(r.state))}</option> }
                }).collect_view())}
            </select>
        </label>
    }
}

/// The task instances of the chosen run, refetched when the stream reports on that run.
fn run_detail_loader(dag_id: Memo<String>, run_id: Memo<Option<String>>) -> Loader<RunDetail> {
    let loader = Loader::<RunDetail>::new(move || match run_id.get() {
        Some(run) => run_api(&dag_id.get(), &run),
        None => String::new(),
    });
    on_events(
        move |event| {
            if let Some(run) = run_id.get_untracked() {
                if concerns_run(event, &dag_id.get_untracked(), &run) {
                    loader.reload();
                }
            }
        },
        move || loader.reload(),
    );
    loader
}

#[component]
fn GraphTab(
    dag_id: Memo<String>,
    detail: Loader<DagDetail>,
    grid: Loader<Grid>,
    run_id: Memo<Option<String>>,
) -> impl IntoView {
    let run = run_detail_loader(dag_id, run_id);
    let state_of = move |task_id: &str| -> &'static str {
        match run.data.get() {
            Load::Ready(r) => r
                .task_instances
                .iter()
                .find(|ti| ti.task_id == task_id)
                .map(|ti| task_state_name(Some(ti.state)))
                .unwrap_or("none"),
            _ => "none",
        }
    };
    view! {
        <div class="toolbar"><RunPicker dag_id grid run_id tab="graph"/><Legend/></div>
        {show(detail, move |dag: DagDetail| {
            let lay = layout(&dag.tasks);
            let dag_name = dag.summary.dag_id.clone();
            view! {
                <div class="graph-wrap">
                <svg class="graph" id="graph" width=lay.width height=lay.height viewBox=format!("0 0 {} {}", lay.width, lay.height)>
                    <defs>
                        <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
                            <path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/>
                        </marker>
                    </defs>
                    {lay.edges.iter().map(|e| view! { <path class="edge" d=e.path.clone() marker-end="url(#arrow)"/> }).collect_view()}
                    {lay.nodes.into_iter().map(|node| {
                        let id = node.task_id.clone();
                        let id_for_state = id.clone();
                        let id_for_fill = id.clone();
                        let dag_name = dag_name.clone();
                        let navigate = leptos_router::hooks::use_navigate();
                        let open = move |_| {
                            if let Some(run) = run_id.get_untracked() {
                                navigate(&task_href(&dag_name, &run, &id), Default::default());
                            }
                        };
                        view! {
                            <g class="node" data-task-id=node.task_id.clone() data-state=move || state_of(&id_for_state) on:click=open>
                                <rect x=node.x y=node.y width=NODE_WIDTH height=NODE_HEIGHT rx="5"
                                    fill=move || state_colour(state_of(&id_for_fill)) stroke="#555"/>
                                <text x={node.x + 8.0} y={node.y + 15.0} class="node-id">{node.task_id.clone()}</text>
                                <text x={node.x + 8.0} y={node.y + 29.0} class="node-op">{node.operator.clone()}</text>
                            </g>
                        }
                    }).collect_view()}
                </svg>
                </div>
            }
        })}
    }
}

#[component]
fn GanttTab(
    dag_id: Memo<String>,
    grid: Loader<Grid>,
    run_id: Memo<Option<String>>,
) -> impl IntoView {
    let run = run_detail_loader(dag_id, run_id);
    view! {
        <div class="toolbar"><RunPicker dag_id grid run_id tab="gantt"/></div>
        {move || if run_id.get().is_none() {
            view! { <p class="muted">"No runs yet."</p> }.into_any()
        } else {
            show(run, move |r: RunDetail| view! { <Gantt detail=r/> }).into_any()
        }}
    }
}

/// Bars from each task instance's start to its end on one time axis.
#[component]
pub fn Gantt(detail: RunDetail) -> impl IntoView {
    let dag_id = detail.run.dag_id.clone();
    let run_id = detail.run.run_id.clone();
    let spans: Vec<(String, &'static str, Option<i64>, Option<i64>)> = detail
        .task_instances
        .iter()
        .map(|ti| {
            (
                ti.task_id.clone(),
                task_state_name(Some(ti.state)),
                ti.start_date.as_deref().and_then(parse_rfc3339_ms),
                ti.end_date.as_deref().and_then(parse_rfc3339_ms),
            )
        })
        .collect();
    let start = spans.iter().filter_map(|s| s.2).min();
    let end = spans.iter().filter_map(|s| s.3.or(s.2)).max();
    let (Some(start), Some(end)) = (start, end) else {
        return view! { <p class="muted">"No task of this run has started yet."</p> }.into_any();
    };
    let total = (end - start).max(1) as f64;
    view! {
        <div class="gantt" id="gantt">
            <div class="gantt-axis"><span>{short_date_opt(detail.run.start_date.as_deref())}</span><span>{format_duration_ms((end - start) as u64)}</span></div>
            {spans.into_iter().map(|(task, state, s, e)| {
                let (left, width) = match s {
                    Some(s) => {
                        let e = e.unwrap_or(end);
                        (((s - start) as f64 / total) * 100.0, (((e - s).max(0) as f64 / total) * 100.0).max(0.4))
                    }
                    None => (0.0, 0.0),
                };
                let took = match (s, e) { (Some(s), Some(e)) => format_duration_ms((e - s).max(0) as u64), (Some(_), None) => "running".into(), _ => "not started".into() };
                view! {
                    <div class="gantt-row">
                        <a class="gantt-label" href=task_href(&dag_id, &run_id, &task)>{task.clone()}</a>
                        <div class="gantt-track">
                            <div class=format!("gantt-bar {}", state_class(state)) style=format!("left:{left:.2}%;width:{width:.2}%") title=format!("{task}: {} · {took}", label(state))></div>
                        </div>
                        <span class="gantt-took">{took.clone()}</span>
                    </div>
                }
            }).collect_view()}
        </div>
    }.into_any()
}

#[component]
fn CodeTab(dag_id: Memo<String>) -> impl IntoView {
    let version = RwSignal::new(None::<String>);
    let versions = Loader::<Vec<DagVersion>>::new(move || {
        format!("/dags/{}/versions", encode_component(&dag_id.get()))
    });
    let code = Loader::<DagCode>::new(move || {
        let mut path = format!("/dags/{}/code", encode_component(&dag_id.get()));
        if let Some(v) = version.get() {
            path.push_str(&format!("?version={}", encode_component(&v)));
        }
        path
    });
    view! {
        <div class="toolbar">
            <label>"Version "
                <select id="code-version" on:change=move |ev| {
                    let v = event_target_value(&ev);
                    version.set(if v.is_empty() { None } else { Some(v) });
                }>
                    <option value="">"current"</option>
                    {move || versions.ready().map(|vs| vs.into_iter().map(|v| view! {
                        <option value=v.version_hash.clone()>{format!("{} · {}", short_date(&v.created_at), &v.version_hash[..v.version_hash.len().min(12)])}</option>
                    }).collect_view())}
                </select>
            </label>
        </div>
        {show(code, |c: DagCode| view! {
            <p class="muted">{c.fileloc.clone().unwrap_or_default()} " · version " <code>{c.version_hash.clone()}</code></p>
            <pre class="code" id="dag-code">{c.source.clone()}</pre>
        })}
    }
}

#[component]
fn DetailsTab(detail: Loader<DagDetail>) -> impl IntoView {
    show(detail, |dag: DagDetail| {
        view! {
            {dag.doc_md.clone().map(|doc| view! { <h2>"Documentation"</h2><pre class="doc">{doc}</pre> })}
            <h2>"Tasks"</h2>
            <table class="table">
                <thead><tr><th>"Task"</th><th>"Operator"</th><th>"Upstream"</th><th>"Trigger rule"</th><th>"Retries"</th><th>"Pool"</th><th>"Group"</th></tr></thead>
                <tbody>{dag.tasks.iter().map(|t| view! {
                    <tr><td>{t.task_id.clone()}</td><td>{t.operator.clone()}</td><td>{t.upstream.join(", ")}</td>
                    <td>{t.trigger_rule.clone()}</td><td>{t.retries}</td><td>{t.pool.clone()}</td><td>{t.group.clone().unwrap_or_default()}</td></tr>
                }).collect_view()}</tbody>
            </table>
            <h2>"Params"</h2>
            <pre class="code">{serde_json::to_string_pretty(&dag.params).unwrap_or_default()}</pre>
            <p class="muted">"Version " <code>{dag.version_hash.clone()}</code> " · " {dag.summary.fileloc.clone().unwrap_or_default()}</p>
        }
    })
}

/// The state badge of a run with its duration, for headers.
#[component]
pub fn RunStateLine(run: Run) -> impl IntoView {
    let took = duration_between(run.start_date.as_deref(), run.end_date.as_deref())
        .map(format_duration_ms);
    view! {
        <StateBadge state=run_state_name(run.state)/>
        {took.map(|t| view! { <span class="muted">" " {t}</span> })}
    }
}
