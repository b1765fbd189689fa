//! The sign-in page: username and password to `POST /api/v1/auth/login`, which sets the
//! session cookies; then a full load of the page the visitor was going to. A visitor whose
//! access cookie expired but who still has a refresh cookie is signed in again silently.

use leptos::html;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use weft_api_types::{LoginRequest, LoginResponse, RefreshRequest};

use crate::api;

/// Only a path on this site may be a `next` target (no `//host` or `https://…`).
pub fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
        .unwrap_or_else(|| "/".into())
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let next = move || safe_next(query.read().get("next"));
    let username: NodeRef<html::Input> = NodeRef::new();
    let password: NodeRef<html::Input> = NodeRef::new();
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);

    Effect::new(move |_| {
        let target = next();
        leptos::task::spawn_local(async move {
            let refreshed: Result<LoginResponse, _> =
                api::send("POST", "/auth/refresh", &RefreshRequest::default()).await;
            if refreshed.is_ok() {
                api::browser::go(&target);
            }
        });
    });

    let submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let (Some(user), Some(pass)) = (username.get_untracked(), password.get_untracked()) else {
            return;
        };
        let request = LoginRequest {
            username: user.value().trim().to_string(),
            password: pass.value(),
        };
        if request.username.is_empty() || request.password.is_empty() {
            error.set(Some("Enter your username and password.".into()));
            return;
        }
        busy.set(true);
        let target = next();
        leptos::task::spawn_local(async move {
            match api::send::<_, LoginResponse>("POST", "/auth/login", &request).await {
                Ok(_) => api::browser::go(&target),
                Err(failure) => {
                    busy.set(false);
                    error.set(Some(failure.message));
                }
            }
        });
    };

    view! {
        <Title text="Sign in · weft"/>
        <div class="login-page">
            <form class="login-form" id="login-form" on:submit=submit>
                <h1>"weft"</h1>
                <label>"Username"<input type="text" name="username" id="username" autocomplete="username" node_ref=username required/></label>
                <label>"Password"<input type="password" name="password" id="password" autocomplete="current-password" node_ref=password required/></label>
                {move || error.get().map(|message| view! { <p class="notice error" role="alert" id="login-error">{message}</p> })}
                <button type="submit" id="sign-in" disabled=move || busy.get()>"Sign in"</button>
            </form>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/dags/etl".into())), "/dags/etl");
        assert_eq!(safe_next(Some("//evil.example".into())), "/");
        assert_eq!(safe_next(Some("https://evil.example".into())), "/");
        assert_eq!(safe_next(None), "/");
    }
}
