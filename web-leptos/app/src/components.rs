//! Small pieces every page uses: state badges and squares in the one colour map, the duration
//! sparkline, the legend, and the rendering of data that is loading, failed or ready.

use leptos::prelude::*;
use weft_api_types::{Me, Role};

use crate::api::{Failure, Load, Loader};
use crate::graph::sparkline_points;
use crate::state::{label, state_class, LEGEND};

/// A state written in its colour.
#[component]
pub fn StateBadge(#[prop(into)] state: String) -> impl IntoView {
    view! { <span class=format!("badge {}", state_class(&state)) data-state=state.clone()>{label(&state)}</span> }
}

/// A square in a state's colour.
#[component]
pub fn StateDot(
    #[prop(into)] state: String,
    #[prop(into, optional)] title: String,
) -> impl IntoView {
    view! { <span class=format!("dot {}", state_class(&state)) title=title data-state=state></span> }
}

/// The colours of every state.
#[component]
pub fn Legend() -> impl IntoView {
    view! {
        <div class="legend">
            {LEGEND.iter().map(|name| view! { <span class="legend-item"><StateDot state=*name/>{label(name)}</span> }).collect_view()}
        </div>
    }
}

/// Durations of recent runs as a line (oldest left).
#[component]
pub fn Sparkline(
    values: Vec<u64>,
    #[prop(default = 90.0)] width: f64,
    #[prop(default = 22.0)] height: f64,
) -> impl IntoView {
    let points = sparkline_points(&values, width, height);
    let title = format!("durations of the last {} runs", values.len());
    view! {
        <svg class="sparkline" width=width height=height viewBox=format!("0 0 {width} {height}") aria-label=title>
            <polyline points=points fill="none" stroke="currentColor" stroke-width="1.5"/>
        </svg>
    }
}

/// An API failure, with what to do.
#[component]
pub fn ErrorBox(failure: Failure) -> impl IntoView {
    let hint = match failure.status {
        403 => " Your role does not allow this; ask an admin for access.",
        404 => " It may have been removed or renamed.",
        0 => " The server could not be reached; the page retries when the connection is back.",
        _ => "",
    };
    view! { <div class="error-box" role="alert" data-code=failure.code.clone()>{failure.message.clone()}{hint}</div> }
}

/// Renders a loader's data once ready, "Loading…" before and the error after a failure.
pub fn show<T, V, F>(loader: Loader<T>, render: F) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
    F: Fn(T) -> V + Send + Sync + 'static,
{
    move || match loader.data.get() {
        Load::Loading => view! { <p class="loading">"Loading…"</p> }.into_any(),
        Load::Failed(failure) => view! { <ErrorBox failure/> }.into_any(),
        Load::Ready(value) => render(value).into_any(),
    }
}

/// The signed-in user, once `/me` answered.
pub fn use_me() -> Option<Loader<Me>> {
    use_context::<Loader<Me>>()
}

/// Whether the signed-in user has at least `role` (false until `/me` answered).
pub fn has_role(role: Role) -> bool {
    use_me()
        .and_then(|me| match me.data.get() {
            Load::Ready(me) => Some(me.role >= role),
            _ => None,
        })
        .unwrap_or(false)
}

/// A message shown after an action: what happened, or what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Done(String),
    Error(String),
}

#[component]
pub fn NoticeLine(notice: RwSignal<Option<Notice>>) -> impl IntoView {
    move || {
        notice.get().map(|n| match n {
            Notice::Done(text) => {
                view! { <p class="notice done" role="status">{text}</p> }.into_any()
            }
            Notice::Error(text) => {
                view! { <p class="notice error" role="alert">{text}</p> }.into_any()
            }
        })
    }
}
