//! One map from states to names and colours (the CSS classes `st-<name>` in `weft.css`, with
//! Airflow's colours), and the formatting of dates and durations used on every page.

use weft_api_types::{RunState, TaskState};

/// The snake_case name of a task state, as the API writes it.
pub fn task_state_name(state: Option<TaskState>) -> &'static str {
    match state {
        None | Some(TaskState::None) => "none",
        Some(TaskState::Scheduled) => "scheduled",
        Some(TaskState::Queued) => "queued",
        Some(TaskState::Running) => "running",
        Some(TaskState::Success) => "success",
        Some(TaskState::Failed) => "failed",
        Some(TaskState::UpForRetry) => "up_for_retry",
        Some(TaskState::UpstreamFailed) => "upstream_failed",
        Some(TaskState::Skipped) => "skipped",
        Some(TaskState::Removed) => "removed",
    }
}

pub fn run_state_name(state: RunState) -> &'static str {
    match state {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Success => "success",
        RunState::Failed => "failed",
    }
}

/// The CSS class that colours something by state.
pub fn state_class(name: &str) -> String {
    format!("st-{name}")
}

/// The colours themselves (for SVG, where a class would do too, and for the legend).
pub fn state_colour(name: &str) -> &'static str {
    match name {
        "success" => "#008000",
        "running" => "#32cd32",
        "failed" => "#dc2626",
        "queued" => "#808080",
        "scheduled" => "#d2b48c",
        "up_for_retry" => "#ffd700",
        "upstream_failed" => "#ffa500",
        "skipped" => "#ff69b4",
        "removed" => "#d3d3d3",
        _ => "#ffffff",
    }
}

/// Every state, in the order the legend shows them.
pub const LEGEND: [&str; 10] = [
    "none",
    "scheduled",
    "queued",
    "running",
    "success",
    "failed",
    "up_for_retry",
    "upstream_failed",
    "skipped",
    "removed",
];

/// A state name for people: `up_for_retry` → `up for retry`.
pub fn label(name: &str) -> String {
    name.replace('_', " ")
}

/// `2024-01-01T00:00:00.123+00:00` → `2024-01-01 00:00:00`; anything else unchanged.
pub fn short_date(text: &str) -> String {
    if text.len() >= 19 && text.as_bytes().get(10) == Some(&b'T') {
        format!("{} {}", &text[..10], &text[11..19])
    } else {
        text.to_string()
    }
}

pub fn short_date_opt(text: Option<&str>) -> String {
    text.map(short_date).unwrap_or_else(|| "—".into())
}

/// Milliseconds since the Unix epoch of an RFC 3339 date-time (`Z` or `±hh:mm`, optional
/// fraction), or `None` if it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// A duration for people: `850 ms`, `12.4 s`, `3 min 05 s`, `2 h 04 min`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms / 1_000) % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// The duration between two RFC 3339 instants, when both are known.
pub fn duration_between(start: Option<&str>, end: Option<&str>) -> Option<u64> {
    let start = parse_rfc3339_ms(start?)?;
    let end = parse_rfc3339_ms(end?)?;
    u64::try_from(end - start).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_zones_and_fractions() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_rfc3339_ms("2024-01-01T01:00:00+01:00"),
            parse_rfc3339_ms("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2024-03-01T00:00:00Z").unwrap()
                - parse_rfc3339_ms("2024-02-28T00:00:00Z").unwrap(),
            2 * 86_400_000
        );
        assert_eq!(
            parse_rfc3339_ms("2024-01-01T00:00:00.123456789Z"),
            Some(1_704_067_200_123)
        );
        assert_eq!(parse_rfc3339_ms("2024-01-01"), None);
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn formats_durations_and_dates() {
        assert_eq!(format_duration_ms(850), "850 ms");
        assert_eq!(format_duration_ms(12_400), "12.4 s");
        assert_eq!(format_duration_ms(185_000), "3 min 05 s");
        assert_eq!(format_duration_ms(7_440_000), "2 h 04 min");
        assert_eq!(
            short_date("2024-01-01T10:20:30.5+00:00"),
            "2024-01-01 10:20:30"
        );
        assert_eq!(
            duration_between(Some("2024-01-01T00:00:00Z"), Some("2024-01-01T00:00:02Z")),
            Some(2_000)
        );
        assert_eq!(duration_between(Some("2024-01-01T00:00:00Z"), None), None);
    }

    #[test]
    fn every_state_has_a_colour_and_a_class() {
        for name in LEGEND {
            assert!(state_colour(name).starts_with('#'));
            assert_eq!(state_class(name), format!("st-{name}"));
        }
        assert_eq!(task_state_name(Some(TaskState::UpForRetry)), "up_for_retry");
        assert_eq!(task_state_name(None), "none");
    }
}
