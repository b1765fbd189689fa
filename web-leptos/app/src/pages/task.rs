//! A task instance's page: state, tries and timings, rendered template fields, the actions
//! (clear with downstream/upstream, mark success or failed), and the log of a chosen try with a
//! live tail: log lines announced by the stream are read from the log's last offset, so lines
//! are never shown twice or skipped.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use weft_api_types::{LogChunk, MarkState, Role, StreamEvent, TaskInstanceDetail};

use crate::api::{self, encode_component, Load, Loader};
use crate::components::{has_role, show, Notice, NoticeLine, StateBadge};
use crate::live::on_events;
use crate::pages::run::{mark_task, ClearForm};
use crate::pages::{dag_href, run_api, run_href};
use crate::state::{
    duration_between, format_duration_ms, short_date, short_date_opt, task_state_name,
};

/// The most log text kept in the page; older text is dropped from the top.
pub const LOG_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// The log of one try as far as it has been read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogView {
    pub key: String,
    pub text: String,
    pub offset: u64,
    pub complete: bool,
    pub truncated: bool,
}

impl LogView {
    /// Appends a chunk, keeping at most [`LOG_LIMIT_BYTES`] (cut at a line start).
    pub fn append(&mut self, chunk: &LogChunk) {
        self.text.push_str(&chunk.content);
        self.offset = chunk.next_offset;
        self.complete = chunk.complete;
        if self.text.len() > LOG_LIMIT_BYTES {
            let mut cut = self.text.len() - LOG_LIMIT_BYTES;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            let cut = self.text[cut..].find('\n').map_or(cut, |n| cut + n + 1);
            self.text.drain(..cut);
            self.truncated = true;
        }
    }
}

#[component]
pub fn TaskPage() -> impl IntoView {
    let params = use_params_map();
    let dag_id = Memo::new(move |_| params.read().get("dag_id").unwrap_or_default());
    let run_id = Memo::new(move |_| params.read().get("run_id").unwrap_or_default());
    let task_id = Memo::new(move |_| params.read().get("task_id").unwrap_or_default());
    let ti_path = move || {
        format!(
            "{}/tasks/{}",
            run_api(&dag_id.get(), &run_id.get()),
            encode_component(&task_id.get())
        )
    };
    let detail = Loader::<TaskInstanceDetail>::new(ti_path);
    // The try whose log is shown: chosen by hand, else the latest.
    let chosen_try = RwSignal::new(None::<u32>);
    let shown_try = Memo::new(move |_| {
        chosen_try.get().or_else(|| match detail.data.get() {
            Load::Ready(d) => Some(d.instance.try_number.max(1)),
            _ => None,
        })
    });
    let log = RwSignal::new(LogView::default());
    let log_busy = RwSignal::new((false, false));

    // Reads the shown try's log from where it stopped (a new try starts a new log).
    let read_log = move || {
        let Some(try_number) = shown_try.get_untracked() else {
            return;
        };
        let key = format!("{}|{try_number}", ti_path());
        if log.with_untracked(|l| l.key != key) {
            log.set(LogView {
                key: key.clone(),
                ..LogView::default()
            });
        }
        let (running, _) = log_busy.get_untracked();
        if running {
            log_busy.set((true, true));
            return;
        }
        log_busy.set((true, false));
        let offset = log.with_untracked(|l| l.offset);
        let path = format!("{}/logs/{try_number}?offset={offset}", ti_path());
        leptos::task::spawn_local(async move {
            if let Ok(chunk) = api::get::<LogChunk>(&path).await {
                log.update(|l| {
                    if l.key == key && l.offset == offset {
                        l.append(&chunk);
                    }
                });
            }
            let again = log_busy.try_get_untracked().is_some_and(|(_, again)| again);
            let _ = log_busy.try_set((false, again));
        });
    };
    // A read asked for while one was in flight runs once that one is done.
    let reread = RwSignal::new(0u32);
    Effect::new(move |_| {
        shown_try.track();
        reread.track();
        read_log();
    });
    Effect::new(move |_| {
        let (running, again) = log_busy.get();
        if !running && again {
            log_busy.set((false, false));
            reread.update(|n| *n += 1);
        }
    });
    // The stream announces new lines; a slow poll covers a stream that is reconnecting.
    Effect::new(move |_| {
        let poll = move || {
            if log.with_untracked(|l| !l.complete && !l.key.is_empty()) {
                read_log();
            }
        };
        if let Ok(handle) = set_interval_with_handle(poll, std::time::Duration::from_secs(2)) {
            on_cleanup(move || handle.clear());
        }
    });

    on_events(
        move |event| {
            let (dag, run, task) = (
                dag_id.get_untracked(),
                run_id.get_untracked(),
                task_id.get_untracked(),
            );
            match event {
                StreamEvent::Task {
                    dag_id: d,
                    run_id: r,
                    task_id: t,
                    ..
                } if *d == dag && *r == run && *t == task => {
                    detail.reload();
                    read_log();
                }
                StreamEvent::Log {
                    dag_id: d,
                    run_id: r,
                    task_id: t,
                    try_number,
                    ..
                } if *d == dag
                    && *r == run
                    && *t == task
                    && Some(*try_number) == shown_try.get_untracked() =>
                {
                    read_log();
                }
                _ => {}
            }
        },
        move || {
            detail.reload();
            read_log();
        },
    );

    let notice = RwSignal::new(None::<Notice>);
    view! {
        <Title text=move || format!("{} · {} · weft", task_id.get(), dag_id.get())/>
        <p class="crumbs">
            <a href=move || dag_href(&dag_id.get())>{move || dag_id.get()}</a> " / "
            <a href=move || run_href(&dag_id.get(), &run_id.get())>{move || run_id.get()}</a> " / task"
        </p>
        {show(detail, move |d: TaskInstanceDetail| {
            let ti = d.instance.clone();
            let state = task_state_name(Some(ti.state));
            let (dag, run, task) = (dag_id.get_untracked(), run_id.get_untracked(), task_id.get_untracked());
            let mark = {
                let (dag, run, task) = (dag.clone(), run.clone(), task.clone());
                move |state: MarkState| mark_task(dag.clone(), run.clone(), task.clone(), state, notice, move || detail.reload())
            };
            let mark_failed = mark.clone();
            view! {
                <div class="page-head">
                    <h1 id="task-title">{ti.task_id.clone()}</h1>
                    <span id="task-state" data-state=state><StateBadge state=state/></span>
                    <span class="spacer"></span>
                    <button id="mark-success" disabled=move || !has_role(Role::User) on:click=move |_| mark(MarkState::Success)>"Mark success"</button>
                    <button id="mark-failed" disabled=move || !has_role(Role::User) on:click=move |_| mark_failed(MarkState::Failed)>"Mark failed"</button>
                </div>
                <div class="facts">
                    <span>"Try " <span id="task-try">{ti.try_number}</span> " of " {ti.max_tries}</span>
                    <span>"Operator " {ti.operator.clone()}</span>
                    <span>"Pool " {ti.pool.clone()}</span>
                    <span>"Started " {short_date_opt(ti.start_date.as_deref())}</span>
                    <span>"Ended " {short_date_opt(ti.end_date.as_deref())}</span>
                    <span>"Duration " {ti.duration_ms.map(format_duration_ms).unwrap_or_else(|| "—".into())}</span>
                </div>
                <h2>"Tries"</h2>
                <table class="table" id="tries">
                    <thead><tr><th>"Try"</th><th>"State"</th><th>"Started"</th><th>"Ended"</th><th>"Duration"</th><th>"Ran on"</th><th></th></tr></thead>
                    <tbody>{d.tries.iter().map(|t| {
                        let n = t.try_number;
                        view! {
                            <tr>
                                <td>{n}</td><td><StateBadge state=task_state_name(Some(t.state))/></td>
                                <td>{short_date(&t.start_date)}</td><td>{short_date_opt(t.end_date.as_deref())}</td>
                                <td>{duration_between(Some(&t.start_date), t.end_date.as_deref()).map(format_duration_ms).unwrap_or_default()}</td>
                                <td>{t.hostname.clone()}</td>
                                <td><button class="small link-button" on:click=move |_| chosen_try.set(Some(n))>"Log"</button></td>
                            </tr>
                        }
                    }).collect_view()}</tbody>
                </table>
                <h2>"Rendered templates"</h2>
                {if d.rendered_fields.is_empty() {
                    view! { <p class="muted">"This task has no template fields."</p> }.into_any()
                } else {
                    view! {
                        <dl class="rendered" id="rendered-fields">{d.rendered_fields.iter().map(|(name, value)| view! {
                            <dt>{name.clone()}</dt>
                            <dd><pre class="code">{match value { serde_json::Value::String(s) => s.clone(), other => serde_json::to_string_pretty(other).unwrap_or_default() }}</pre></dd>
                        }).collect_view()}</dl>
                    }.into_any()
                }}
            }
        })}
        // Outside the data above, so that a refresh from the stream does not close a clear
        // waiting for its confirmation.
        <h2>"Actions"</h2>
        {move || view! {
            <ClearForm dag_id=dag_id.get() run_id=run_id.get() task_id=Some(task_id.get()) notice after=move || detail.reload()/>
        }}
        <NoticeLine notice/>
        <h2>"Log " {move || shown_try.get().map(|t| format!("(try {t})"))}</h2>
        {move || log.with(|l| l.truncated).then(|| view! { <p class="muted">"Older lines were dropped from this view (the page keeps the last 2 MiB)."</p> })}
        <pre class="log" id="task-log" data-complete=move || log.with(|l| l.complete.to_string())>{move || log.with(|l| l.text.clone())}</pre>
        {move || log.with(|l| (!l.complete && !l.key.is_empty()).then(|| view! { <p class="muted live-tail">"Following the log as it is written…"</p> }))}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_view_keeps_a_bounded_tail_cut_at_a_line() {
        let mut view = LogView::default();
        view.append(&LogChunk {
            content: "first\n".into(),
            next_offset: 6,
            complete: false,
        });
        assert_eq!(
            (view.text.as_str(), view.offset, view.complete),
            ("first\n", 6, false)
        );
        let line = "x".repeat(1023) + "\n";
        let big = line.repeat(LOG_LIMIT_BYTES / 1024 + 10);
        view.append(&LogChunk {
            content: big,
            next_offset: 99,
            complete: true,
        });
        assert!(view.truncated);
        assert!(view.text.len() <= LOG_LIMIT_BYTES);
        assert!(view.text.starts_with('x') && view.text.ends_with('\n'));
        assert!(view.complete);
    }
}
