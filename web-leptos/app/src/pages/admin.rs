//! The operator and admin pages: import errors, workers and their slots, pools, Variables and
//! Connections (values masked as the API answers them), the audit log, and users with their
//! roles (admin only; the API refuses others, and the page says so).

use leptos::prelude::*;
use leptos_meta::Title;
use weft_api_types::{
    AuditList, CellList, Connection, ConnectionCreate, ConnectionList, ConnectionPatch,
    ImportErrorList, PoolList, Role, StreamEvent, User, UserCreate, UserList, UserPatch, Variable,
    VariableCreate, VariableList, VariablePatch, WorkerList, MASKED_VALUE,
};

use crate::api::{self, encode_component, Loader};
use crate::components::{show, Notice, NoticeLine};
use crate::live::on_events;
use crate::pages::task_href;
use crate::state::short_date;

/// The audit entries shown.
pub const AUDIT_LIMIT: u32 = 200;
/// The variables or connections shown (the API's largest page).
pub const SECRETS_LIMIT: u32 = 500;

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
            {(list.waiting_unserved_queue > 0).then(|| view! {
                <p class="warning" id="unserved">{format!(
                    "{} tries wait for a queue no worker serves: they start once a worker serving their queue joins.",
                    list.waiting_unserved_queue
                )}</p>
            })}
            <table class="table" id="workers">
                <thead><tr><th>"Worker"</th><th>"Queues"</th><th>"Slots"</th><th>"Last heartbeat"</th><th>"Running"</th></tr></thead>
                <tbody>{list.workers.into_iter().map(|w| view! {
                    <tr class=w.kind.clone()>
                        <td>
                            {w.name.clone()}
                            {w.draining.then(|| view! { <span class="badge draining">" draining"</span> })}
                            {(w.kind == "remote").then(|| view! {
                                <div class="muted">{format!("remote · {} · {}", w.address, w.version)}</div>
                            })}
                            {(!w.labels.is_empty()).then(|| view! {
                                <div class="muted">{w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")}</div>
                            })}
                        </td>
                        <td>{if w.queues.is_empty() { "every queue".to_string() } else { w.queues.join(", ") }}</td>
                        <td><SlotBar used={w.running.len() as u32} total=w.slots/></td>
                        <td>{w.last_heartbeat.as_deref().map(short_date).unwrap_or_default()}</td>
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

/// The cells of the deployment: regions, shards and epochs held, lease and heartbeat ages,
/// the links' round-trip times and each cell's remote workers, as the cell serving this page
/// sees them. Read again every two seconds (leases move without a run changing).
#[component]
pub fn CellsPage() -> impl IntoView {
    let cells = Loader::<CellList>::new(|| "/cells".into());
    on_events(
        move |event| {
            if matches!(event, StreamEvent::Run { .. }) {
                cells.reload();
            }
        },
        move || cells.reload(),
    );
    Effect::new(move |_| {
        let every =
            set_interval_with_handle(move || cells.reload(), std::time::Duration::from_secs(2));
        if let Ok(every) = every {
            on_cleanup(move || every.clear());
        }
    });
    view! {
        <Title text="Cells · weft"/>
        <h1>"Cells"</h1>
        {show(cells, |list: CellList| view! {
            {list.cells.is_empty().then(|| view! {
                <p class="muted">"This node is no cell: it runs alone on its store (weft standalone)."</p>
            })}
            {(!list.unowned_shards.is_empty()).then(|| view! {
                <p class="warning" id="unowned-shards">{format!(
                    "Shards without a live owner: {:?} (their DAGs wait until a cell takes them).",
                    list.unowned_shards
                )}</p>
            })}
            <table class="table" id="cells">
                <thead><tr><th>"Cell"</th><th>"Region"</th><th>"Shards (epoch)"</th><th>"Lease age"</th><th>"Heartbeat"</th><th>"Round trip"</th><th>"Workers"</th></tr></thead>
                <tbody>{list.cells.into_iter().map(|cell| view! {
                    <tr data-cell=cell.name.clone()>
                        <td>
                            {cell.name.clone()}
                            {cell.this.then(|| view! { <span class="badge this-cell">"this cell"</span> })}
                            <div class="muted">{format!("{} · {}", cell.address, cell.api)}</div>
                        </td>
                        <td>{cell.region.clone()}</td>
                        <td class="shards">{cell.shards.iter().map(|shard| format!("{} ({})", shard.shard, shard.epoch)).collect::<Vec<_>>().join(", ")}</td>
                        <td>{cell.shards.iter().map(|shard| shard.lease_age_ms).max().map(|age| format!("{age} ms")).unwrap_or_default()}</td>
                        <td>{format!("{} ms ago", cell.heartbeat_age_ms)}</td>
                        <td class="rtt">{cell.rtt_ms.map(|rtt| format!("{rtt:.1} ms")).unwrap_or_else(|| "–".into())}</td>
                        <td>{cell.workers.map(|workers| workers.to_string()).unwrap_or_else(|| "–".into())}</td>
                    </tr>
                }).collect_view()}</tbody>
            </table>
            <p class="muted">{format!("{} shards in all.", list.shards)}</p>
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

/// `Some(text)` unless it is empty: an empty field means "none".
pub fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A port typed in a form: empty is none; anything but a number from 0 to 65535 is refused.
pub fn parse_port(text: &str) -> Result<Option<u16>, String> {
    match optional(text) {
        None => Ok(None),
        Some(port) => port
            .parse::<u16>()
            .map(Some)
            .map_err(|_| format!("the port `{port}` is not a number from 0 to 65535")),
    }
}

/// "Showing 500 of 612" when the list is one page of a longer one.
fn more_note(shown: usize, total: usize) -> Option<String> {
    (total > shown).then(|| format!("Showing the first {shown} of {total}."))
}

/// A delete button that asks again before it acts.
#[component]
fn DeleteButton(on_delete: impl Fn() + 'static) -> impl IntoView {
    let armed = RwSignal::new(false);
    view! {
        <button class="small delete" on:click=move |_| { if armed.get_untracked() { armed.set(false); on_delete() } else { armed.set(true) } }>
            {move || if armed.get() { "Really delete?" } else { "Delete" }}
        </button>
    }
}

#[component]
pub fn VariablesPage() -> impl IntoView {
    let variables = Loader::<VariableList>::new(|| format!("/variables?limit={SECRETS_LIMIT}"));
    let notice = RwSignal::new(None::<Notice>);
    let key = RwSignal::new(String::new());
    let value = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = VariableCreate {
            key: key.get_untracked().trim().to_string(),
            value: value.get_untracked(),
            description: optional(&description.get_untracked()),
        };
        leptos::task::spawn_local(async move {
            match api::send::<_, Variable>("POST", "/variables", &body).await {
                Ok(variable) => {
                    notice.set(Some(Notice::Done(format!("Created {}.", variable.key))));
                    key.set(String::new());
                    value.set(String::new());
                    description.set(String::new());
                    variables.reload();
                }
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
        });
    };
    view! {
        <Title text="Variables · weft"/>
        <h1>"Variables"</h1>
        <p class="muted">"Values are encrypted at rest. The value of a variable whose key names a secret (password, secret, token, api_key, …) is shown as *** and can only be replaced."</p>
        <NoticeLine notice/>
        {show(variables, move |list: VariableList| view! {
            {more_note(list.variables.len(), list.total_entries).map(|note| view! { <p class="muted">{note}</p> })}
            {if list.variables.is_empty() {
                view! { <p class="muted" id="no-variables">"No variables yet."</p> }.into_any()
            } else {
                view! {
                    <table class="table" id="variables">
                        <thead><tr><th>"Key"</th><th>"Value"</th><th>"Description"</th><th></th></tr></thead>
                        <tbody>{list.variables.into_iter().map(|v| view! { <VariableRow variable=v variables notice/> }).collect_view()}</tbody>
                    </table>
                }.into_any()
            }}
        })}
        <form class="panel" id="variable-create" on:submit=create>
            <h2>"Add a variable"</h2>
            <div class="row">
                <input type="text" name="key" placeholder="Key" required prop:value=move || key.get() on:input=move |ev| key.set(event_target_value(&ev))/>
                <input type="text" name="value" placeholder="Value" prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev))/>
                <input type="text" name="description" placeholder="Description (optional)" prop:value=move || description.get() on:input=move |ev| description.set(event_target_value(&ev))/>
                <button type="submit">"Add"</button>
            </div>
        </form>
    }
}

#[component]
fn VariableRow(
    variable: Variable,
    variables: Loader<VariableList>,
    notice: RwSignal<Option<Notice>>,
) -> impl IntoView {
    let path = format!("/variables/{}", encode_component(&variable.key));
    let masked = variable.value == MASKED_VALUE;
    let patch = {
        let path = path.clone();
        move |body: VariablePatch| {
            let path = path.clone();
            leptos::task::spawn_local(async move {
                match api::send::<_, Variable>("PATCH", &path, &body).await {
                    Ok(v) => notice.set(Some(Notice::Done(format!("Updated {}.", v.key)))),
                    Err(f) => notice.set(Some(Notice::Error(f.message))),
                }
                variables.reload();
            });
        }
    };
    let set_value = patch.clone();
    let delete = move || {
        let path = path.clone();
        leptos::task::spawn_local(async move {
            match api::send_unit("DELETE", &path, &serde_json::json!({})).await {
                Ok(()) => notice.set(Some(Notice::Done("Deleted.".to_string()))),
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
            variables.reload();
        });
    };
    let (value, placeholder) = if masked {
        (String::new(), "*** (hidden: type to replace)")
    } else {
        (variable.value.clone(), "")
    };
    view! {
        <tr data-key=variable.key.clone()>
            <td><code>{variable.key.clone()}</code></td>
            <td><input type="text" class="value" value=value placeholder=placeholder
                on:change=move |ev| set_value(VariablePatch { value: Some(event_target_value(&ev)), ..VariablePatch::default() })/></td>
            <td><input type="text" class="description" value=variable.description.clone().unwrap_or_default() placeholder="no description"
                on:change=move |ev| patch(VariablePatch { description: Some(optional(&event_target_value(&ev))), ..VariablePatch::default() })/></td>
            <td><DeleteButton on_delete=delete/></td>
        </tr>
    }
}

#[component]
pub fn ConnectionsPage() -> impl IntoView {
    let connections =
        Loader::<ConnectionList>::new(|| format!("/connections?limit={SECRETS_LIMIT}"));
    let notice = RwSignal::new(None::<Notice>);
    let fields: [(&'static str, &'static str, RwSignal<String>); 9] = [
        (
            "connection_id",
            "Connection id",
            RwSignal::new(String::new()),
        ),
        (
            "conn_type",
            "Type (postgres, http, …)",
            RwSignal::new(String::new()),
        ),
        ("host", "Host", RwSignal::new(String::new())),
        ("port", "Port", RwSignal::new(String::new())),
        ("schema", "Schema", RwSignal::new(String::new())),
        ("login", "Login", RwSignal::new(String::new())),
        ("password", "Password", RwSignal::new(String::new())),
        ("extra", "Extra (JSON object)", RwSignal::new(String::new())),
        ("description", "Description", RwSignal::new(String::new())),
    ];
    let text = move |index: usize| fields[index].2.get_untracked();
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let port = match parse_port(&text(3)) {
            Ok(port) => port,
            Err(message) => {
                notice.set(Some(Notice::Error(message)));
                return;
            }
        };
        let body = ConnectionCreate {
            connection_id: text(0).trim().to_string(),
            conn_type: text(1).trim().to_string(),
            host: optional(&text(2)),
            port,
            schema: optional(&text(4)),
            login: optional(&text(5)),
            password: Some(text(6)).filter(|p| !p.is_empty()),
            extra: optional(&text(7)),
            description: optional(&text(8)),
        };
        leptos::task::spawn_local(async move {
            match api::send::<_, Connection>("POST", "/connections", &body).await {
                Ok(c) => {
                    notice.set(Some(Notice::Done(format!("Created {}.", c.connection_id))));
                    for (_, _, field) in fields {
                        field.set(String::new());
                    }
                    connections.reload();
                }
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
        });
    };
    view! {
        <Title text="Connections · weft"/>
        <h1>"Connections"</h1>
        <p class="muted">"Connections are encrypted at rest. A password is never shown, only whether one is set: type a new one to replace it. Secret keys of the extra are shown as ***."</p>
        <NoticeLine notice/>
        {show(connections, move |list: ConnectionList| view! {
            {more_note(list.connections.len(), list.total_entries).map(|note| view! { <p class="muted">{note}</p> })}
            {if list.connections.is_empty() {
                view! { <p class="muted" id="no-connections">"No connections yet."</p> }.into_any()
            } else {
                view! {
                    <table class="table" id="connections">
                        <thead><tr><th>"Id"</th><th>"Type"</th><th>"Host"</th><th>"Port"</th><th>"Schema"</th><th>"Login"</th><th>"Password"</th><th>"Extra"</th><th>"Description"</th><th></th></tr></thead>
                        <tbody>{list.connections.into_iter().map(|c| view! { <ConnectionRow connection=c connections notice/> }).collect_view()}</tbody>
                    </table>
                }.into_any()
            }}
        })}
        <form class="panel" id="connection-create" on:submit=create>
            <h2>"Add a connection"</h2>
            <div class="row">
                {fields.into_iter().map(|(name, label, field)| {
                    let kind = if name == "password" { "password" } else { "text" };
                    let required = name == "connection_id" || name == "conn_type";
                    view! {
                        <input type=kind name=name placeholder=label required=required
                            prop:value=move || field.get() on:input=move |ev| field.set(event_target_value(&ev))/>
                    }
                }).collect_view()}
                <button type="submit">"Add"</button>
            </div>
        </form>
    }
}

#[component]
fn ConnectionRow(
    connection: Connection,
    connections: Loader<ConnectionList>,
    notice: RwSignal<Option<Notice>>,
) -> impl IntoView {
    let path = format!(
        "/connections/{}",
        encode_component(&connection.connection_id)
    );
    let patch = {
        let path = path.clone();
        move |body: ConnectionPatch| {
            let path = path.clone();
            leptos::task::spawn_local(async move {
                match api::send::<_, Connection>("PATCH", &path, &body).await {
                    Ok(c) => {
                        notice.set(Some(Notice::Done(format!("Updated {}.", c.connection_id))))
                    }
                    Err(f) => notice.set(Some(Notice::Error(f.message))),
                }
                connections.reload();
            });
        }
    };
    let delete = move || {
        let path = path.clone();
        leptos::task::spawn_local(async move {
            match api::send_unit("DELETE", &path, &serde_json::json!({})).await {
                Ok(()) => notice.set(Some(Notice::Done("Deleted.".to_string()))),
                Err(f) => notice.set(Some(Notice::Error(f.message))),
            }
            connections.reload();
        });
    };
    let port_patch = patch.clone();
    let password_patch = patch.clone();
    // One editable cell: `set` puts the typed text into a patch.
    let cell = move |value: Option<String>,
                     class: &'static str,
                     set: fn(&mut ConnectionPatch, String)| {
        let patch = patch.clone();
        view! {
            <td><input type="text" class=class value=value.unwrap_or_default()
                on:change=move |ev| { let mut body = ConnectionPatch::default(); set(&mut body, event_target_value(&ev)); patch(body) }/></td>
        }
    };
    view! {
        <tr data-connection-id=connection.connection_id.clone()>
            <td><code>{connection.connection_id.clone()}</code></td>
            {cell(Some(connection.conn_type.clone()), "conn-type", |body, text| body.conn_type = Some(text.trim().to_string()))}
            {cell(connection.host.clone(), "host", |body, text| body.host = Some(optional(&text)))}
            <td><input type="text" class="port" size="6" value=connection.port.map(|p| p.to_string()).unwrap_or_default()
                on:change=move |ev| match parse_port(&event_target_value(&ev)) {
                    Ok(port) => port_patch(ConnectionPatch { port: Some(port), ..ConnectionPatch::default() }),
                    Err(message) => notice.set(Some(Notice::Error(message))),
                }/></td>
            {cell(connection.schema.clone(), "schema", |body, text| body.schema = Some(optional(&text)))}
            {cell(connection.login.clone(), "login", |body, text| body.login = Some(optional(&text)))}
            <td><input type="password" class="password" autocomplete="new-password"
                placeholder={if connection.has_password { "set (type to replace)" } else { "none" }}
                on:change=move |ev| password_patch(ConnectionPatch { password: Some(Some(event_target_value(&ev)).filter(|p| !p.is_empty())), ..ConnectionPatch::default() })/></td>
            {cell(connection.extra.clone(), "extra", |body, text| body.extra = Some(optional(&text)))}
            {cell(connection.description.clone(), "description", |body, text| body.description = Some(optional(&text)))}
            <td><DeleteButton on_delete=delete/></td>
        </tr>
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
    use super::{more_note, optional, parse_port, split_grants};

    #[test]
    fn form_fields_read_empty_as_none_and_ports_as_numbers() {
        assert_eq!(optional("  "), None);
        assert_eq!(optional(" db "), Some("db".to_string()));
        assert_eq!(parse_port(""), Ok(None));
        assert_eq!(parse_port("5432"), Ok(Some(5432)));
        assert!(parse_port("70000").unwrap_err().contains("65535"));
        assert_eq!(more_note(2, 2), None);
        assert_eq!(
            more_note(500, 612).as_deref(),
            Some("Showing the first 500 of 612.")
        );
    }

    #[test]
    fn grants_are_split_and_trimmed() {
        assert_eq!(split_grants(" etl, ,report "), vec!["etl", "report"]);
        assert!(split_grants("").is_empty());
    }
}
