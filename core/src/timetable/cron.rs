//! Five-field cron expressions and presets, parsed into bit sets and searched on wall-clock time.
//!
//! The semantics follow croniter (what Airflow uses), which is Vixie cron with two refinements
//! that matter for matching Airflow exactly: when both day-of-month and day-of-week are
//! restricted a day matches if either matches, and a day-of-month field counts as restricted
//! unless it is literally `*` or `?` (so `*/1` restricts, as in croniter), while a
//! day-of-week field counts as restricted unless it covers every day of the week.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// How many days a search walks before giving up. Every expression that parses matches at
/// least once in any 8 years (a February 29th can be 8 years from the next), so the bound only
/// stops a search that starts near the end of the calendar.
const SEARCH_DAYS_MAX: i64 = 366 * 9;

/// The presets Airflow knows (`airflow.utils.dates.cron_presets`), without `@once`, which is
/// not a cron schedule.
pub const PRESETS: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@quarterly", "0 0 1 */3 *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A parsed cron expression. Each field is a bit set of the values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpression {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    /// Bit 0 is Sunday; a `7` in the expression sets bit 0 too.
    days_of_week: u8,
    day_of_month_restricted: bool,
    day_of_week_restricted: bool,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value the first name stands for (`jan` is 1, `sun` is 0).
    first_name_value: u32,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    first_name_value: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    first_name_value: 0,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    first_name_value: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    first_name_value: 1,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    first_name_value: 0,
};

impl CronExpression {
    /// Parses five fields (`minute hour day-of-month month day-of-week`) or a preset. The error
    /// is the reason only; the caller adds the expression.
    pub fn parse(text: &str) -> Result<CronExpression, String> {
        let trimmed = text.trim();
        let expanded = if trimmed.starts_with('@') {
            let lowered = trimmed.to_ascii_lowercase();
            match PRESETS.iter().find(|(name, _)| *name == lowered) {
                Some((_, expression)) => *expression,
                None => {
                    let known: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
                    return Err(format!(
                        "unknown preset `{trimmed}`: use one of @once, {}",
                        known.join(", ")
                    ));
                }
            }
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let minutes = parse_field(fields[0], &MINUTE)?;
        let hours = parse_field(fields[1], &HOUR)?;
        let days_of_month = parse_field(fields[2], &DAY_OF_MONTH)?;
        let months = parse_field(fields[3], &MONTH)?;
        let mut days_of_week = parse_field(fields[4], &DAY_OF_WEEK)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        let expression = CronExpression {
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week: days_of_week as u8,
            day_of_month_restricted: !matches!(fields[2], "*" | "?"),
            day_of_week_restricted: days_of_week & 0x7f != 0x7f,
        };
        expression.check_some_day_matches()?;
        Ok(expression)
    }

    /// An expression restricted by day of month only may name days no chosen month has
    /// (`0 0 30 2 *`); such a schedule would never fire, so it is refused up front.
    fn check_some_day_matches(&self) -> Result<(), String> {
        if !self.day_of_month_restricted || self.day_of_week_restricted {
            return Ok(());
        }
        // Longest length of each month, February in a leap year.
        const MONTH_DAYS_MAX: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let possible = (1..=12u32).any(|month| {
            self.months & (1 << month) != 0
                && (1..=MONTH_DAYS_MAX[month as usize - 1])
                    .any(|day| self.days_of_month & (1 << day) != 0)
        });
        if possible {
            Ok(())
        } else {
            Err("it never matches: no chosen month has the chosen day-of-month".to_string())
        }
    }

    /// Whether the hour field allows every hour; Airflow then steps in absolute time so that a
    /// wall-clock hour repeated by a DST change is not skipped.
    pub fn covers_every_hour(&self) -> bool {
        self.hours == (1 << 24) - 1
    }

    fn matches_day(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let by_day_of_month = self.days_of_month & (1 << date.day()) != 0;
        let by_day_of_week = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.day_of_month_restricted, self.day_of_week_restricted) {
            (true, true) => by_day_of_month || by_day_of_week,
            (true, false) => by_day_of_month,
            (false, true) => by_day_of_week,
            (false, false) => true,
        }
    }

    /// The first matching minute of the day at or after `from_minute` (minutes since midnight).
    fn first_minute_from(&self, from_minute: u32) -> Option<u32> {
        (from_minute..24 * 60).find(|minute| {
            self.hours & (1 << (minute / 60)) != 0 && self.minutes & (1 << (minute % 60)) != 0
        })
    }

    /// The last matching minute of the day at or before `to_minute`.
    fn last_minute_to(&self, to_minute: u32) -> Option<u32> {
        (0..=to_minute).rev().find(|minute| {
            self.hours & (1 << (minute / 60)) != 0 && self.minutes & (1 << (minute % 60)) != 0
        })
    }

    /// The first matching wall-clock time strictly after `after`.
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = after.date();
        let mut from_minute = after.hour() * 60 + after.minute() + 1;
        for _ in 0..SEARCH_DAYS_MAX {
            if from_minute < 24 * 60 && self.matches_day(date) {
                if let Some(minute) = self.first_minute_from(from_minute) {
                    return Some(at_minute(date, minute));
                }
            }
            date = date.succ_opt()?;
            from_minute = 0;
        }
        None
    }

    /// The last matching wall-clock time strictly before `before`.
    pub fn prev_before(&self, before: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = before.date();
        let minute_of_day = before.hour() * 60 + before.minute();
        let on_minute = before.second() == 0 && before.nanosecond() == 0;
        // `None` when no minute of the first day is strictly before `before`.
        let mut to_minute = if on_minute {
            minute_of_day.checked_sub(1)
        } else {
            Some(minute_of_day)
        };
        for _ in 0..SEARCH_DAYS_MAX {
            if let Some(to) = to_minute {
                if self.matches_day(date) {
                    if let Some(minute) = self.last_minute_to(to) {
                        return Some(at_minute(date, minute));
                    }
                }
            }
            date = date.pred_opt()?;
            to_minute = Some(24 * 60 - 1);
        }
        None
    }
}

fn at_minute(date: NaiveDate, minute_of_day: u32) -> NaiveDateTime {
    date.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(minute_of_day))
}

/// Parses one field into a bit set (bit `n` set when value `n` is allowed).
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(format!(
                "{} field `{text}` has an empty list item",
                field.name
            ));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("{} step `{step}` is not a whole number", field.name))?;
                if step == 0 {
                    return Err(format!("{} step must be at least 1, found 0", field.name));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (low, high) = if range == "*" || range == "?" {
            (field.min, field.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let low = parse_value(low, field)?;
            let high = parse_value(high, field)?;
            if low > high {
                return Err(format!(
                    "{} range {range} runs backwards: write the smaller value first",
                    field.name
                ));
            }
            (low, high)
        } else {
            let value = parse_value(range, field)?;
            // `5/15` means "from 5 to the end, every 15", as in croniter.
            (value, if step.is_some() { field.max } else { value })
        };
        let step = step.unwrap_or(1);
        let mut value = low;
        while value <= high {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok(bits)
}

fn parse_value(text: &str, field: &Field) -> Result<u32, String> {
    let lowered = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|name| *name == lowered) {
        return Ok(index as u32 + field.first_name_value);
    }
    let value: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("{} `{text}` is not a number", field.name)
        } else {
            format!(
                "{} `{text}` is not a number or a name ({})",
                field.name,
                field.names.join(", ").to_ascii_uppercase()
            )
        }
    })?;
    if value < field.min || value > field.max {
        return Err(format!(
            "{} {value} is out of range {}-{}",
            field.name, field.min, field.max
        ));
    }
    Ok(value)
}
