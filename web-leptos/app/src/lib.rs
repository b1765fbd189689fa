//! weft's web UI: Leptos components and routes, rendered on the server (feature `ssr`, which
//! also exports [`ui_router`]) and hydrated in the browser (feature `hydrate`, entry point
//! [`hydrate`]). Pages are rendered with their layout on the server; their data comes from the
//! REST API (`/api/v1`, same origin) and stays current through the WebSocket stream.

pub mod api;
pub mod components;
pub mod conf;
pub mod graph;
pub mod live;
pub mod pages;
pub mod state;

#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub use server::{ui_router, SessionCheck, UiOptions};

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Stylesheet, Title};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::path;

/// The file name (without extension) of the JS glue and, with `_bg`, of the WASM module that
/// wasm-bindgen writes into the bundle directory.
pub const OUTPUT_NAME: &str = "weft_ui";

/// The stylesheet, served under `/pkg/weft.css`.
pub const STYLESHEET: &str = include_str!("../style/weft.css");

/// The HTML document around the app: what the server renders for every page.
pub fn shell(options: leptos::config::LeptosOptions) -> impl IntoView {
    use leptos::hydration::HydrationScripts;
    use leptos_meta::MetaTags;
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The whole UI: sign-in outside the layout, every other page inside it.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="weft-css" href="/pkg/weft.css"/>
        <Title text="weft"/>
        <Router>
            <Routes fallback=|| view! { <p class="page-error">"There is no page at this address."</p> }>
                <Route path=path!("/login") view=pages::login::LoginPage/>
                <ParentRoute path=path!("") view=pages::layout::Layout>
                    <Route path=path!("") view=pages::dags::DagListPage/>
                    <Route path=path!("dags/:dag_id") view=pages::dag::DagPage/>
                    <Route path=path!("dags/:dag_id/runs/:run_id") view=pages::run::RunPage/>
                    <Route path=path!("dags/:dag_id/runs/:run_id/tasks/:task_id") view=pages::task::TaskPage/>
                    <Route path=path!("import-errors") view=pages::admin::ImportErrorsPage/>
                    <Route path=path!("workers") view=pages::admin::WorkersPage/>
                    <Route path=path!("cells") view=pages::admin::CellsPage/>
                    <Route path=path!("pools") view=pages::admin::PoolsPage/>
                    <Route path=path!("variables") view=pages::admin::VariablesPage/>
                    <Route path=path!("connections") view=pages::admin::ConnectionsPage/>
                    <Route path=path!("audit") view=pages::admin::AuditPage/>
                    <Route path=path!("users") view=pages::admin::UsersPage/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// The browser entry point: attaches the app to the server-rendered page.
#[cfg(feature = "hydrate")]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    // A mark that the page is interactive now (the browser tests wait for it).
    if let Some(body) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.body())
    {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}
