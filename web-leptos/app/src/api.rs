//! Calls to the REST API from the browser (same origin, the session cookie authenticates), and
//! [`Loader`], the small state machine every page uses to fetch data and refetch it when the
//! live stream says it changed. On the server these calls are never made: effects and event
//! handlers only run in the browser.

use leptos::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use weft_api_types::API_PREFIX;

/// A failed call: the HTTP status (0 when the request did not complete) and the API's error
/// body (`code`, `message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Failure {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// Reads an error answer; a body that is not the API's JSON shape is kept as the message.
    pub fn from_body(status: u16, body: &str) -> Failure {
        match serde_json::from_str::<weft_api_types::ApiError>(body) {
            Ok(error) => Failure::new(status, &error.code, error.message),
            Err(_) => {
                let text = body.trim();
                let text = if text.is_empty() {
                    format!("the server answered {status}")
                } else {
                    text.chars().take(300).collect()
                };
                Failure::new(status, "http_error", text)
            }
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Percent-encodes a URL path segment or query value.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `/api/v1` + the path.
pub fn url(path: &str) -> String {
    format!("{API_PREFIX}{path}")
}

/// GET a JSON document.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, Failure> {
    let (status, body) = call("GET", path, None).await?;
    decode(status, &body)
}

/// Sends a JSON body (POST, PATCH, PUT) and reads a JSON answer.
pub async fn send<B: Serialize, T: DeserializeOwned>(
    method: &str,
    path: &str,
    body: &B,
) -> Result<T, Failure> {
    let body = serde_json::to_string(body)
        .map_err(|error| Failure::new(0, "encode", error.to_string()))?;
    let (status, text) = call(method, path, Some(body)).await?;
    decode(status, &text)
}

/// Sends a request whose answer body does not matter.
pub async fn send_unit<B: Serialize>(method: &str, path: &str, body: &B) -> Result<(), Failure> {
    let body = serde_json::to_string(body)
        .map_err(|error| Failure::new(0, "encode", error.to_string()))?;
    let (status, text) = call(method, path, Some(body)).await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Failure::from_body(status, &text))
    }
}

fn decode<T: DeserializeOwned>(status: u16, body: &str) -> Result<T, Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::from_body(status, body));
    }
    serde_json::from_str(body).map_err(|error| {
        Failure::new(
            status,
            "unexpected_answer",
            format!("the API's answer could not be read: {error}"),
        )
    })
}

/// One call; on a 401 (expired access token) it refreshes the session once and retries, and
/// when that fails it sends the browser to the sign-in page.
async fn call(method: &str, path: &str, body: Option<String>) -> Result<(u16, String), Failure> {
    let full = url(path);
    let (status, text) = browser::fetch(method, &full, body.clone()).await?;
    if status != 401 || path.starts_with("/auth/") {
        return Ok((status, text));
    }
    let (refreshed, _) = browser::fetch("POST", &url("/auth/refresh"), Some("{}".into())).await?;
    if refreshed == 200 {
        return browser::fetch(method, &full, body).await;
    }
    browser::to_login();
    Ok((status, text))
}

#[cfg(feature = "hydrate")]
pub mod browser {
    //! The browser's `fetch`, `location` and timers through web-sys.
    use super::Failure;
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    use web_sys::{Headers, Request, RequestCredentials, RequestInit, Response};

    fn js_failure(error: JsValue) -> Failure {
        let text = error
            .as_string()
            .or_else(|| {
                js_sys::Reflect::get(&error, &"message".into())
                    .ok()
                    .and_then(|m| m.as_string())
            })
            .unwrap_or_else(|| "the request did not complete".into());
        Failure::new(0, "network", text)
    }

    pub async fn fetch(
        method: &str,
        url: &str,
        body: Option<String>,
    ) -> Result<(u16, String), Failure> {
        let init = RequestInit::new();
        init.set_method(method);
        init.set_credentials(RequestCredentials::SameOrigin);
        let headers = Headers::new().map_err(js_failure)?;
        headers
            .set("Accept", "application/json")
            .map_err(js_failure)?;
        if let Some(body) = body {
            headers
                .set("Content-Type", "application/json")
                .map_err(js_failure)?;
            init.set_body(&JsValue::from_str(&body));
        }
        init.set_headers(&headers);
        let request = Request::new_with_str_and_init(url, &init).map_err(js_failure)?;
        let window = web_sys::window().ok_or_else(|| Failure::new(0, "network", "no window"))?;
        let response: Response = JsFuture::from(window.fetch_with_request(&request))
            .await
            .map_err(js_failure)?
            .dyn_into()
            .map_err(js_failure)?;
        let status = response.status();
        let text = JsFuture::from(response.text().map_err(js_failure)?)
            .await
            .map_err(js_failure)?
            .as_string()
            .unwrap_or_default();
        Ok((status, text))
    }

    /// The current path and query, e.g. `/dags/etl?tab=graph`.
    pub fn here() -> String {
        web_sys::window()
            .and_then(|w| {
                let location = w.location();
                Some(format!(
                    "{}{}",
                    location.pathname().ok()?,
                    location.search().ok()?
                ))
            })
            .unwrap_or_else(|| "/".into())
    }

    /// A full page load of `target` (so that the server sees new cookies).
    pub fn go(target: &str) {
        if let Some(window) = web_sys::window() {
            let _ = window.location().assign(target);
        }
    }

    pub fn to_login() {
        let here = here();
        if !here.starts_with("/login") {
            go(&format!("/login?next={}", super::encode_component(&here)));
        }
    }
}

#[cfg(not(feature = "hydrate"))]
pub mod browser {
    //! Outside the browser there is nothing to call: these are only reached from effects and
    //! event handlers, which the server never runs.
    use super::Failure;

    pub async fn fetch(
        _method: &str,
        _url: &str,
        _body: Option<String>,
    ) -> Result<(u16, String), Failure> {
        Err(Failure::new(
            0,
            "no_browser",
            "the API is called from the browser",
        ))
    }

    pub fn here() -> String {
        "/".into()
    }

    pub fn go(_target: &str) {}

    pub fn to_login() {}
}

/// The state of data a page shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Load<T> {
    Loading,
    Ready(T),
    Failed(Failure),
}

/// Fetches one API document for a page, refetches it when its URL changes or when asked
/// ([`Loader::reload`], e.g. on a live event), never runs two fetches at once (a reload asked
/// for while one is in flight runs once after it), keeps showing the old data while
/// refetching, and drops an answer for a URL the page has since moved away from.
#[derive(Debug)]
pub struct Loader<T: Send + Sync + 'static> {
    pub data: RwSignal<Load<T>>,
    url: Memo<String>,
    busy: RwSignal<(bool, bool)>,
}

impl<T: Send + Sync + 'static> Clone for Loader<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Send + Sync + 'static> Copy for Loader<T> {}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Loader<T> {
    /// `path` is the API path after `/api/v1`, computed reactively (from route params, say).
    pub fn new(path: impl Fn() -> String + Send + Sync + 'static) -> Loader<T> {
        let loader = Loader {
            data: RwSignal::new(Load::Loading),
            url: Memo::new(move |_| path()),
            busy: RwSignal::new((false, false)),
        };
        Effect::new(move |_| {
            loader.url.track();
            loader.data.set(Load::Loading);
            loader.reload();
        });
        loader
    }

    /// Fetches again (coalesced with a fetch in flight).
    pub fn reload(self) {
        let (running, _) = self.busy.get_untracked();
        if running {
            self.busy.set((true, true));
            return;
        }
        self.busy.set((true, false));
        let path = self.url.get_untracked();
        leptos::task::spawn_local(async move {
            let result = get::<T>(&path).await;
            if self.url.try_get_untracked().as_ref() == Some(&path) {
                let _ = self.data.try_set(match result {
                    Ok(value) => Load::Ready(value),
                    Err(failure) => Load::Failed(failure),
                });
            }
            let again = self.busy.try_get_untracked().map(|(_, again)| again);
            let _ = self.busy.try_set((false, false));
            let moved = self.url.try_get_untracked().is_some_and(|now| now != path);
            if again == Some(true) || moved {
                self.reload();
            }
        });
    }

    /// The data when ready.
    pub fn ready(self) -> Option<T> {
        match self.data.get() {
            Load::Ready(value) => Some(value),
            _ => None,
        }
    }

    /// Changes the data in place (e.g. after an action answered with the new value).
    pub fn set(self, value: T) {
        self.data.set(Load::Ready(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(
            encode_component("/dags/etl?tab=grid"),
            "%2Fdags%2Fetl%3Ftab%3Dgrid"
        );
        assert_eq!(
            encode_component("scheduled__2024-01-01T00:00:00+00:00"),
            "scheduled__2024-01-01T00%3A00%3A00%2B00%3A00"
        );
    }

    #[test]
    fn reads_error_bodies_in_either_shape() {
        let failure = Failure::from_body(
            422,
            r#"{"code":"invalid_conf","message":"param rows must be an integer"}"#,
        );
        assert_eq!(failure.code, "invalid_conf");
        assert_eq!(
            failure.to_string(),
            "param rows must be an integer (invalid_conf)"
        );
        let failure = Failure::from_body(502, "");
        assert_eq!(failure.message, "the server answered 502");
    }
}
