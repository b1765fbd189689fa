//! The frame around every signed-in page: navigation (operator pages only for ops and admins,
//! admin pages only for admins), the signed-in user, sign-out, and whether the live stream is
//! connected.

use leptos::prelude::*;
use leptos_router::components::{Outlet, A};
use weft_api_types::{Me, Role};

use crate::api::{self, Load, Loader};
use crate::components::has_role;
use crate::live::provide_live;

#[component]
pub fn Layout() -> impl IntoView {
    let live = provide_live();
    let me = Loader::<Me>::new(|| "/me".to_string());
    provide_context(me);
    let sign_out = move |_| {
        leptos::task::spawn_local(async move {
            let _ = api::send_unit("POST", "/auth/logout", &serde_json::json!({})).await;
            api::browser::go("/login");
        });
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"weft"</a>
            <nav>
                <A href="/">"DAGs"</A>
                <A href="/cells">"Cells"</A>
                {move || has_role(Role::Op).then(|| view! {
                    <A href="/import-errors">"Import errors"</A>
                    <A href="/workers">"Workers"</A>
                    <A href="/pools">"Pools"</A>
                    <A href="/variables">"Variables"</A>
                    <A href="/connections">"Connections"</A>
                })}
                {move || has_role(Role::Admin).then(|| view! {
                    <A href="/audit">"Audit log"</A>
                    <A href="/users">"Users"</A>
                })}
            </nav>
            <span class="spacer"></span>
            <span
                id="live-indicator"
                class=move || if live.connected.get() { "live on" } else { "live" }
                data-connected=move || live.connected.get().to_string()
                title="the live stream of state changes"
            >
                {move || if live.connected.get() { "● live" } else { "○ offline" }}
            </span>
            <span class="me" id="signed-in-user">
                {move || match me.data.get() {
                    Load::Ready(me) => format!("{} ({})", me.username, me.role),
                    _ => String::new(),
                }}
            </span>
            <button class="link-button" id="sign-out" on:click=sign_out>"Sign out"</button>
        </header>
        <main class="content">
            <Outlet/>
        </main>
    }
}
