//! The DAG list: search, tag, owner and paused filters, the paused toggle, schedule, next run,
//! the states of recent runs and a sparkline of their durations; kept current by the stream.

use leptos::prelude::*;
use leptos_meta::Title;
use weft_api_types::{DagList, DagPatch, DagSummary, Role};

use crate::api::{self, encode_component, Loader};
use crate::components::{has_role, show, Sparkline, StateDot};
use crate::live::on_events;
use crate::pages::{dag_href, run_href};
use crate::state::{run_state_name, short_date, short_date_opt};

/// DAGs per page.
pub const PAGE_SIZE: u64 = 50;

/// The API query of the list for the filters.
pub fn list_path(search: &str, tag: &str, owner: &str, paused: &str, offset: u64) -> String {
    let mut path = format!("/dags?limit={PAGE_SIZE}&offset={offset}");
    for (key, value) in [
        ("search", search),
        ("tag", tag),
        ("owner", owner),
        ("paused", paused),
    ] {
        if !value.trim().is_empty() {
            path.push_str(&format!("&{key}={}", encode_component(value.trim())));
        }
    }
    path
}

#[component]
pub fn DagListPage() -> impl IntoView {
    let search = RwSignal::new(String::new());
    let tag = RwSignal::new(String::new());
    let owner = RwSignal::new(String::new());
    let paused = RwSignal::new(String::new());
    let offset = RwSignal::new(0u64);
    let list = Loader::<DagList>::new(move || {
        list_path(
            &search.get(),
            &tag.get(),
            &owner.get(),
            &paused.get(),
            offset.get(),
        )
    });
    on_events(
        move |event| {
            if !matches!(event, weft_api_types::StreamEvent::Log { .. }) {
                list.reload();
            }
        },
        move || list.reload(),
    );
    let reset = move || offset.set(0);

    view! {
        <Title text="DAGs · weft"/>
        <div class="page-head">
            <h1>"DAGs"</h1>
        </div>
        <div class="filters">
            <input type="search" id="dag-search" placeholder="Search DAGs" prop:value=move || search.get()
                on:input=move |ev| { search.set(event_target_value(&ev)); reset(); }/>
            <input type="text" id="dag-tag" placeholder="Tag" prop:value=move || tag.get()
                on:input=move |ev| { tag.set(event_target_value(&ev)); reset(); }/>
            <input type="text" id="dag-owner" placeholder="Owner" prop:value=move || owner.get()
                on:input=move |ev| { owner.set(event_target_value(&ev)); reset(); }/>
            <select id="dag-paused" on:change=move |ev| { paused.set(event_target_value(&ev)); reset(); }>
                <option value="">"All"</option>
                <option value="false">"Active"</option>
                <option value="true">"Paused"</option>
            </select>
        </div>
        {show(list, move |data: DagList| {
            let total = data.total;
            let shown = data.dags.len() as u64;
            view! {
                <table class="table dag-list" id="dag-list">
                    <thead><tr>
                        <th title="active (on) or paused (off)">"On"</th><th>"DAG"</th><th>"Owner"</th><th>"Schedule"</th>
                        <th>"Next run"</th><th>"Recent runs"</th><th>"Durations"</th>
                    </tr></thead>
                    <tbody>
                        {data.dags.into_iter().map(|dag| view! { <DagRow dag list tag/> }).collect_view()}
                    </tbody>
                </table>
                <div class="pager">
                    <span>{format!("{}–{} of {total}", if shown == 0 { 0 } else { offset.get_untracked() + 1 }, offset.get_untracked() + shown)}</span>
                    <button disabled=move || offset.get() == 0 on:click=move |_| offset.update(|o| *o = o.saturating_sub(PAGE_SIZE))>"Previous"</button>
                    <button disabled={move || offset.get() + PAGE_SIZE >= total} on:click=move |_| offset.update(|o| *o += PAGE_SIZE)>"Next"</button>
                </div>
            }
        })}
    }
}

#[component]
fn DagRow(dag: DagSummary, list: Loader<DagList>, tag: RwSignal<String>) -> impl IntoView {
    let dag_id = dag.dag_id.clone();
    let error = RwSignal::new(None::<String>);
    let toggle = {
        let dag_id = dag_id.clone();
        move |ev: leptos::ev::Event| {
            let paused = !event_target_checked(&ev);
            let dag_id = dag_id.clone();
            leptos::task::spawn_local(async move {
                let path = format!("/dags/{}", encode_component(&dag_id));
                match api::send::<_, DagSummary>("PATCH", &path, &DagPatch { paused }).await {
                    Ok(_) => {
                        error.set(None);
                        list.reload();
                    }
                    Err(failure) => {
                        error.set(Some(failure.message));
                        list.reload();
                    }
                }
            });
        }
    };
    let can_pause = move || has_role(Role::User);
    view! {
        <tr data-dag-id=dag.dag_id.clone() class:paused={dag.paused}>
            <td>
                <label class="switch" title=if dag.paused { "paused: click to unpause" } else { "active: click to pause" }>
                    <input type="checkbox" class="pause-toggle" checked={!dag.paused} disabled=move || !can_pause() on:change=toggle/>
                </label>
                {move || error.get().map(|e| view! { <span class="notice error small">{e}</span> })}
            </td>
            <td>
                <a class="dag-link" href=dag_href(&dag.dag_id)>{dag.display_name.clone()}</a>
                {(dag.display_name != dag.dag_id).then(|| view! { <span class="muted">" " {dag.dag_id.clone()}</span> })}
                {dag.paused.then(|| view! { <span class="tag paused-label">"paused"</span> })}
                <div class="tags">
                    {dag.tags.iter().map(|t| {
                        let t = t.clone();
                        let set = t.clone();
                        view! { <button class="tag" on:click=move |_| tag.set(set.clone())>{t}</button> }
                    }).collect_view()}
                </div>
                {dag.description.clone().map(|d| view! { <div class="muted small">{d}</div> })}
            </td>
            <td>{dag.owner.clone().unwrap_or_default()}</td>
            <td><code>{dag.schedule.clone()}</code><div class="muted small">{dag.timezone.clone()}</div></td>
            <td>{short_date_opt(dag.next_run_at.as_deref())}</td>
            <td class="recent-runs">
                {dag.recent_runs.iter().rev().map(|run| {
                    let state = run_state_name(run.state);
                    view! {
                        <a href=run_href(&dag_id, &run.run_id)>
                            <StateDot state=state title=format!("{} · {}", short_date(&run.logical_date), state)/>
                        </a>
                    }
                }).collect_view()}
            </td>
            <td><Sparkline values=dag.recent_durations_ms.clone()/></td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::list_path;

    #[test]
    fn the_list_query_carries_only_the_filters_set() {
        assert_eq!(list_path("", "", "", "", 0), "/dags?limit=50&offset=0");
        assert_eq!(
            list_path("etl job", "prod", " ann ", "true", 50),
            "/dags?limit=50&offset=50&search=etl%20job&tag=prod&owner=ann&paused=true"
        );
    }
}
