//! The live stream in the browser: one WebSocket to `/api/v1/stream` per page load, kept open
//! across navigation, reconnected after a drop with `since=<last seq>` so that the server
//! replays what was missed. Received events go into a bounded buffer in a signal; pages read
//! the events they have not seen yet with [`on_events`].

use std::collections::VecDeque;

use leptos::prelude::*;
use weft_api_types::{StreamEvent, StreamMessage};

/// Events kept for pages that have not read them yet; a page that falls further behind
/// refetches everything instead (as on `resync`).
pub const BUFFER_LIMIT: usize = 2_000;

/// The most recent events, numbered locally from the page load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buffer {
    /// How many events were received since the page loaded.
    pub received: u64,
    /// The last ones, at most [`BUFFER_LIMIT`]; the first has number `received - len`.
    pub events: VecDeque<StreamEvent>,
}

impl Buffer {
    pub fn push(&mut self, event: StreamEvent) {
        self.received += 1;
        self.events.push_back(event);
        while self.events.len() > BUFFER_LIMIT {
            self.events.pop_front();
        }
    }

    /// The events numbered `cursor..received`, or `None` when some of them are gone.
    pub fn since(&self, cursor: u64) -> Option<impl Iterator<Item = &StreamEvent>> {
        let first = self.received - self.events.len() as u64;
        if cursor < first {
            return None;
        }
        Some(self.events.iter().skip((cursor - first) as usize))
    }
}

/// The stream's state, shared through the context.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub buffer: RwSignal<Buffer>,
    /// The WebSocket is open.
    pub connected: RwSignal<bool>,
    /// The last server sequence number seen, for `since` on reconnect.
    pub last_seq: RwSignal<Option<u64>>,
}

impl Live {
    fn new() -> Live {
        Live {
            buffer: RwSignal::new(Buffer::default()),
            connected: RwSignal::new(false),
            last_seq: RwSignal::new(None),
        }
    }

    /// Records a message from the server.
    pub fn receive(self, message: StreamMessage) {
        self.last_seq.set(Some(message.seq));
        self.buffer.update(|buffer| buffer.push(message.event));
    }
}

/// Creates the stream state, provides it to every page, and (in the browser) connects.
pub fn provide_live() -> Live {
    let live = Live::new();
    provide_context(live);
    Effect::new(move |_| connect(live, 0));
    live
}

/// The stream state, or a disconnected one when no layout provided it.
pub fn use_live() -> Live {
    use_context::<Live>().unwrap_or_else(Live::new)
}

/// Calls `handle` for each event that arrives from now on, and `lost` when events were missed
/// (a `resync` from the server, or a page too slow to keep up): the page should refetch.
pub fn on_events(mut handle: impl FnMut(&StreamEvent) + 'static, mut lost: impl FnMut() + 'static) {
    let live = use_live();
    let mut cursor = live.buffer.with_untracked(|buffer| buffer.received);
    Effect::new(move |_| {
        live.buffer.with(|buffer| {
            match buffer.since(cursor) {
                None => lost(),
                Some(events) => {
                    for event in events {
                        match event {
                            StreamEvent::Resync => lost(),
                            event => handle(event),
                        }
                    }
                }
            }
            cursor = buffer.received;
        });
    });
}

/// Whether an event concerns the DAG `dag_id`.
pub fn concerns_dag(event: &StreamEvent, dag_id: &str) -> bool {
    match event {
        StreamEvent::Run { dag_id: d, .. }
        | StreamEvent::Task { dag_id: d, .. }
        | StreamEvent::Dag { dag_id: d }
        | StreamEvent::Log { dag_id: d, .. } => d == dag_id,
        StreamEvent::Resync => true,
    }
}

/// Whether an event is a state change of the run `run_id` of `dag_id` or of one of its tasks.
pub fn concerns_run(event: &StreamEvent, dag_id: &str, run_id: &str) -> bool {
    match event {
        StreamEvent::Run {
            dag_id: d,
            run_id: r,
            ..
        }
        | StreamEvent::Task {
            dag_id: d,
            run_id: r,
            ..
        } => d == dag_id && r == run_id,
        _ => false,
    }
}

#[cfg(feature = "hydrate")]
fn connect(live: Live, attempt: u32) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    use web_sys::{MessageEvent, WebSocket};

    let Some(window) = web_sys::window() else {
        return;
    };
    let location = window.location();
    let scheme = if location.protocol().ok().as_deref() == Some("https:") {
        "wss"
    } else {
        "ws"
    };
    let host = location.host().unwrap_or_default();
    let mut address = format!("{scheme}://{host}{}/stream", crate::api::API_PREFIX);
    if let Some(seq) = live.last_seq.get_untracked() {
        address.push_str(&format!("?since={seq}"));
    }
    let Ok(socket) = WebSocket::new(&address) else {
        retry(live, attempt);
        return;
    };
    let on_open = Closure::<dyn FnMut()>::new(move || live.connected.set(true));
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    on_open.forget();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        if let Some(text) = event.data().as_string() {
            if let Ok(message) = serde_json::from_str::<StreamMessage>(&text) {
                live.receive(message);
            }
        }
    });
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let opened = live.connected;
    let on_close = Closure::<dyn FnMut()>::new(move || {
        let was_open = opened.get_untracked();
        live.connected.set(false);
        retry(live, if was_open { 0 } else { attempt + 1 });
    });
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    on_close.forget();
}

/// Reconnects after a growing pause (0.25 s doubling up to 8 s) so that a server restart is
/// picked up quickly and a server that is down is not hammered.
#[cfg(feature = "hydrate")]
fn retry(live: Live, attempt: u32) {
    let delay = 250u64.saturating_mul(1 << attempt.min(5));
    set_timeout(
        move || connect(live, attempt),
        std::time::Duration::from_millis(delay),
    );
}

#[cfg(not(feature = "hydrate"))]
fn connect(_live: Live, _attempt: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(id: &str) -> StreamEvent {
        StreamEvent::Dag { dag_id: id.into() }
    }

    #[test]
    fn a_reader_gets_what_it_has_not_seen_and_learns_when_it_fell_behind() {
        let mut buffer = Buffer::default();
        buffer.push(dag("a"));
        buffer.push(dag("b"));
        let seen: Vec<_> = buffer.since(1).unwrap().cloned().collect();
        assert_eq!(seen, vec![dag("b")]);
        for n in 0..BUFFER_LIMIT {
            buffer.push(dag(&n.to_string()));
        }
        assert!(
            buffer.since(1).is_none(),
            "events 1.. were dropped from the buffer"
        );
        assert_eq!(buffer.events.len(), BUFFER_LIMIT);
        assert_eq!(buffer.since(buffer.received).unwrap().count(), 0);
    }

    #[test]
    fn events_are_matched_to_their_dag_and_run() {
        let task = StreamEvent::Task {
            dag_id: "etl".into(),
            run_id: "r1".into(),
            task_id: "load".into(),
            state: weft_api_types::TaskState::Running,
            try_number: 1,
            at: "2026-01-01T00:00:00Z".into(),
        };
        assert!(concerns_dag(&task, "etl"));
        assert!(!concerns_dag(&task, "other"));
        assert!(concerns_run(&task, "etl", "r1"));
        assert!(!concerns_run(&task, "etl", "r2"));
    }
}
