//! The operator and admin pages: import errors, workers and their slots, pools, the audit log,
//! and users with their roles (admin only; the API refuses others, and the page says so).

use leptos::prelude::*;
use leptos_meta::Title;
use weft_api_types::{
    AuditList, ImportErrorList, PoolList, Role, StreamEvent, User, UserCreate, UserList, UserPatch,
    WorkerList,
};

use crate::api::{self, encode_component, Loader};
use crate::components::{show, Notice, NoticeLine};
use crate::live::on_events;
use crate::pages::task_href;
use crate::state::short_date;

/// The audit entries shown.
pub const AUDIT_LIMIT: u32 = 200;

#[component]
pub fn ImportErrorsPage() -> impl IntoView {
    let errors = Loader::<ImportErrorList>::new(|| "/import-errors".into());
    on_events(
        move |event| {
            if matches!(event, StreamEvent::Dag { .. }) {
                errors.reload();
            }
        },
        move || errors.reload(),
    );
    view! {
        <Title text="Import errors · weft"/>
        <h1>"Import errors"</h1>
        {show(errors, |list: ImportErrorList| if list.import_errors.is_empty() {
            view! { <p class="muted" id="no-import-errors">"Every DAG file imported cleanly."</p> }.into_any()
        } else {
            view! {
                <div id="import-errors">{list.import_errors.into_iter().map(|e| view! {
                    <div class="import-error">
                        <h3><code>{e.fileloc.clone()}</code>{e.line.map(|l| format!(", line {l}"))}</h3>
                        <p class="muted">{short_date(&e.at)}</p>
                        <pre class="code">{e.message.clone()}</pre>
                    </div>
                }).collect_view()}</div>
            }.into_any()
        })}
    }
}

/// A bar of used out of total slots.
#[component]
fn SlotBar(used: u32, total: u32) -> impl IntoView {
    let percent = if total == 0 {
        0.0
    } else {
        (used as f64 / total as f64 * 100.0).min(100.0)
    };
    view! {
        <span class="slot-bar" title=format!("{used} of {total} slots in use")>
            <span class="slot-fill" style=format!("width:{percent:.0}%")></span>
        </span>
        <span class="muted">{format!(" {used} / {total}")}</span>
    }
}

#[component]
pub fn WorkersPage() -> impl IntoView {
    let workers = Loader::<WorkerList>::new(|| "/workers".into());
    on_events(
        move |event| {
            if matches!(event, StreamEvent::Task { .. }) {
                workers.reload();
            }
        },
        move || workers.reload(),
    );
    view! {
        <Title text="Workers · weft"/>
        <h1>"Workers and slots"</h1>
        {show(workers, |list: WorkerList| view! {
            <table class="table" id="workers">
                <thead><tr><th>"Worker"</th><th>"Slots"</th><th>"Running"</th></tr></thead>
                <tbody>{list.workers.into_iter().map(|w| view! {
                    <tr>
                        <td>{w.name.clone()}</td>
                        <td><SlotBar used={w.running.len() as u32} total=w.slots/></td>
                        <td>{w.running.iter().map(|r| view! {
                            <div><a href=task_href(&r.dag_id, &r.run_id, &r.task_id)>{format!("{} · {} · try {}", r.dag_id, r.task_id, r.try_number)}</a>
                            <span class="muted">{format!(" since {}", short_date(&r.started_at))}</span></div>
                        }).collect_view()}</td>
                    </tr>
                }).collect_view()}</tbody>
            </table>
        })}
    }
}

#[component]
pub fn PoolsPage() -> impl IntoView {
    let pools = Loader::<PoolList>::new(|| "/pools".into());
    on_events(
        move |event| {
            if matches!(event, StreamEvent::Task { .. }) {
                pools.reload();
            }
        },
        move || pools.reload(),
    );
    view! {
        <Title text="Pools · weft"/>
        <h1>"Pools"</h1>
        {show(pools, |list: PoolList| view! {
            <table class="table" id="pools">
                <thead><tr><th>"Pool"</th><th>"Occupied"</th><th>"Description"</th></tr></thead>
                <tbody>{list.pools.into_iter().map(|p| view! {
                    <tr><td>{p.name.clone()}</td><td><SlotBar used=p.occupied total=p.slots/></td><td>{p.description.clone()}</td></tr>
                }).collect_view()}</tbody>
            </table>
        })}
    }
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let audit = Loader::<AuditList>::new(|| format!("/audit?limit={AUDIT_LIMIT}"));
    view! {
        <Title text="Audit log · weft"/>
        <div class="page-head"><h1>"Audit log"</h1><span class="spacer"></span>
            <button on:click=move |_| audit.reload()>"Refresh"</button></div>
        {show(audit, |list: AuditList| view! {
            <table class="table" id="audit">
                <thead><tr><th>"When"</th><th>"Who"</th><th>"What"</th><th>"On"</th><th>"From"</th><th>"Detail"</th></tr></thead>
                <tbody>{list.entries.into_iter().map(|e| view! {
                    <tr><td>{short_date(&e.at)}</td><td>{e.actor.clone()}</td><td><code>{e.action.clone()}</code></td>
                    <td>{e.target.clone()}</td><td>{e.from.clone().unwrap_or_default()}</td><td class="small">{e.detail.clone()}</td></tr>
                }).collect_view()}</tbody>
            </table>
        })}
    }
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let users = Loader::<UserList>::new(|| "/users".into());
    let notice = RwSignal::new(None::<Notice>);
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let role = RwSignal::new(Role::Viewer);
    let grants = RwSignal::new(String::new());
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = UserCreate {
            username: username.get_untracked().trim().to_string(),
            password: password.get_untracked(),
            role: role.get_untracked(),
            dag_grants: split_grants(&grants.get_untracked()),
        };
        leptos::task::spawn_local(async move {
            match api::send::<_, User>("POST", "/users", &body).await {
                Ok(user) => {
                    notice.set(Some(Notice::Done(format!(
                        "Created {} ({}).",
                        user.username, user.role
                    ))));
                    password.set(String::new());
                    users.reload();
                }
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
        });
    };
    view! {
        <Title text="Users · weft"/>
        <h1>"Users and roles"</h1>
        <p class="muted">"Viewer reads; User also triggers, clears, marks and pauses; Op also manages pools and backfills and sees import errors and workers; Admin also manages users and reads the audit log. DAG grants limit a User or Viewer to the DAGs listed."</p>
        <NoticeLine notice/>
        {show(users, move |list: UserList| view! {
            <table class="table" id="users">
                <thead><tr><th>"User"</th><th>"Role"</th><th>"DAG grants"</th><th>"Enabled"</th><th>"Created"</th></tr></thead>
                <tbody>{list.users.into_iter().map(|u| view! { <UserRow user=u users notice/> }).collect_view()}</tbody>
            </table>
        })}
        <form class="panel" id="user-create" on:submit=create>
            <h2>"Add a user"</h2>
            <div class="row">
                <input type="text" placeholder="Username" required prop:value=move || username.get() on:input=move |ev| username.set(event_target_value(&ev))/>
                <input type="password" placeholder="Password" required prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev))/>
                <RoleSelect value=role.get_untracked() on_change=move |r| role.set(r)/>
                <input type="text" placeholder="DAG grants (comma-separated, empty = all)" on:input=move |ev| grants.set(event_target_value(&ev))/>
                <button type="submit">"Add"</button>
            </div>
        </form>
    }
}

/// `"a, b,,c"` → `["a", "b", "c"]`.
pub fn split_grants(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[component]
fn RoleSelect(value: Role, on_change: impl Fn(Role) + 'static) -> impl IntoView {
    view! {
        <select class="role-select" on:change=move |ev| if let Some(r) = Role::parse(&event_target_value(&ev)) { on_change(r) }>
            {Role::ALL.into_iter().map(|r| view! { <option value=r.as_str() selected={r == value}>{r.as_str()}</option> }).collect_view()}
        </select>
    }
}

#[component]
fn UserRow(user: User, users: Loader<UserList>, notice: RwSignal<Option<Notice>>) -> impl IntoView {
    let name = user.username.clone();
    let patch = move |body: UserPatch| {
        let name = name.clone();
        leptos::task::spawn_local(async move {
            let path = format!("/users/{}", encode_component(&name));
            match api::send::<_, User>("PATCH", &path, &body).await {
                Ok(u) => notice.set(Some(Notice::Done(format!("Updated {}.", u.username)))),
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
            users.reload();
        });
    };
    let set_role = patch.clone();
    let set_grants = patch.clone();
    view! {
        <tr data-username=user.username.clone()>
            <td>{user.username.clone()}</td>
            <td><RoleSelect value=user.role on_change=move |r| set_role(UserPatch { role: Some(r), ..UserPatch::default() })/></td>
            <td><input type="text" value=user.dag_grants.join(", ") placeholder="all DAGs"
                on:change=move |ev| set_grants(UserPatch { dag_grants: Some(split_grants(&event_target_value(&ev))), ..UserPatch::default() })/></td>
            <td><input type="checkbox" checked={!user.disabled}
                on:change=move |ev| patch(UserPatch { disabled: Some(!event_target_checked(&ev)), ..UserPatch::default() })/></td>
            <td>{short_date(&user.created_at)}</td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::split_grants;

    #[test]
    fn grants_are_split_and_trimmed() {
        assert_eq!(split_grants(" etl, ,report "), vec!["etl", "report"]);
        assert!(split_grants("").is_empty());
    }
}
