//! The browser entry point: `hydrate()` is what the page's hydration script calls once the WASM
//! module has loaded; it attaches the Leptos app to the server-rendered HTML.
use wasm_bindgen::prelude::wasm_bindgen;

/// Hydrates the server-rendered page.
#[wasm_bindgen]
pub fn hydrate() {
    weft_ui::hydrate();
}
