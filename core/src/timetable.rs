//! Timetables: when a DAG's runs are due, with the data intervals and logical dates Airflow 3
//! gives the same schedule.
//!
//! Each kind mirrors one Airflow class, down to its DST handling, so that a run's logical date
//! and data interval match what Airflow would store:
//!
//! | schedule                              | Airflow class                |
//! |---------------------------------------|------------------------------|
//! | `None`                                | `NullTimetable`              |
//! | `@once`                               | `OnceTimetable`              |
//! | cron, `data_intervals = false`        | `CronTriggerTimetable`       |
//! | cron, `data_intervals = true`         | `CronDataIntervalTimetable`  |
//! | interval, `data_intervals = false`    | `DeltaTriggerTimetable`      |
//! | interval, `data_intervals = true`     | `DeltaDataIntervalTimetable` |
//!
//! Cron expressions are matched on the wall clock of the DAG's time zone, as croniter does
//! with naive datetimes, and converted back the way Airflow's `make_aware` does: a wall time
//! skipped by a spring-forward moves forward by the gap, a wall time repeated by a fall-back
//! means its second occurrence. Crons that fire every hour step in absolute time instead, as
//! Airflow does, so the repeated hour is not skipped.

mod cron;

pub use cron::PRESETS;

use crate::spec::ScheduleSpec;
use crate::Timestamp;
use chrono::{Duration, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use cron::CronExpression;
use serde::{Deserialize, Serialize};

/// The span of data a run covers: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DataInterval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl DataInterval {
    /// The empty interval at one instant, as Airflow's `DataInterval.exact`.
    pub fn exact(at: Timestamp) -> DataInterval {
        DataInterval { start: at, end: at }
    }
}

/// One run a timetable asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DagRunInfo {
    /// Always the start of the data interval, as Airflow's `DagRunInfo.logical_date`.
    pub logical_date: Timestamp,
    pub data_interval: DataInterval,
    /// The earliest time the run may be created (the end of its data interval).
    pub run_after: Timestamp,
}

impl DagRunInfo {
    /// A run covering `[start, end)`, due at `end` (Airflow's `DagRunInfo.interval`).
    pub fn interval(start: Timestamp, end: Timestamp) -> DagRunInfo {
        DagRunInfo {
            logical_date: start,
            data_interval: DataInterval { start, end },
            run_after: end,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("invalid cron expression \"{expression}\": {reason}")]
    BadCron { expression: String, reason: String },
    #[error("unknown time zone `{0}`: use an IANA name such as `Europe/Paris` or `UTC`")]
    UnknownTimezone(String),
    #[error("invalid schedule interval of {every_ms} ms: use a positive interval of at most {max_ms} ms")]
    BadInterval { every_ms: u64, max_ms: u64 },
}

/// The longest fixed interval accepted (about 1000 years); longer ones would overflow
/// timestamp arithmetic.
pub const INTERVAL_MS_MAX: u64 = 1000 * 366 * 24 * 60 * 60 * 1000;

/// How many ticks the data-interval timetable steps forward to get past the last run.
const ADVANCE_STEPS_MAX: usize = 4;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    ManualOnly,
    Once,
    Cron {
        cron: CronExpression,
        data_intervals: bool,
    },
    Delta {
        every: Duration,
        data_intervals: bool,
    },
}

/// Which runs a timetable may produce: Airflow's `TimeRestriction`.
#[derive(Debug, Clone, Copy)]
struct Restriction {
    earliest: Option<Timestamp>,
    latest: Option<Timestamp>,
    catchup: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timetable {
    kind: Kind,
    timezone: Tz,
    start_date: Option<Timestamp>,
    end_date: Option<Timestamp>,
    catchup: bool,
}

impl Timetable {
    pub fn new(
        schedule: &ScheduleSpec,
        timezone: &str,
        start_date: Option<Timestamp>,
        end_date: Option<Timestamp>,
        catchup: bool,
    ) -> Result<Timetable, TimetableError> {
        let zone: Tz = timezone
            .parse()
            .map_err(|_| TimetableError::UnknownTimezone(timezone.to_string()))?;
        let kind = match schedule {
            ScheduleSpec::None => Kind::ManualOnly,
            ScheduleSpec::Cron { expression, .. }
                if expression.trim().eq_ignore_ascii_case("@once") =>
            {
                Kind::Once
            }
            ScheduleSpec::Cron {
                expression,
                data_intervals,
            } => {
                let cron = CronExpression::parse(expression).map_err(|reason| {
                    TimetableError::BadCron {
                        expression: expression.clone(),
                        reason,
                    }
                })?;
                Kind::Cron {
                    cron,
                    data_intervals: *data_intervals,
                }
            }
            ScheduleSpec::Interval {
                every_ms,
                data_intervals,
            } => {
                if *every_ms == 0 || *every_ms > INTERVAL_MS_MAX {
                    return Err(TimetableError::BadInterval {
                        every_ms: *every_ms,
                        max_ms: INTERVAL_MS_MAX,
                    });
                }
                // Within `INTERVAL_MS_MAX`, so the conversion cannot fail.
                let every = Duration::milliseconds(i64::try_from(*every_ms).unwrap_or(i64::MAX));
                Kind::Delta {
                    every,
                    data_intervals: *data_intervals,
                }
            }
        };
        Ok(Timetable {
            kind,
            timezone: zone,
            start_date,
            end_date,
            catchup,
        })
    }

    /// Manual triggers only.
    pub fn is_manual_only(&self) -> bool {
        matches!(self.kind, Kind::ManualOnly)
    }

    /// Whether missed runs are created (`catchup=True`) or only the latest one.
    pub fn catchup(&self) -> bool {
        self.catchup
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The next run to create after the last automated run (`None` when there was none), as
    /// Airflow's `next_dagrun_info` gives it at time `now`; `None` when no further run is due
    /// ever. With catchup off, `now` decides which interval is the latest one due.
    pub fn next_dagrun_info(
        &self,
        last: Option<&DataInterval>,
        now: Timestamp,
    ) -> Option<DagRunInfo> {
        let restriction = Restriction {
            earliest: self.start_date,
            latest: self.end_date,
            catchup: self.catchup,
        };
        self.next_with(last, restriction, now)
    }

    /// The data interval of a manual run triggered at `run_after`.
    pub fn infer_manual_data_interval(&self, run_after: Timestamp) -> DataInterval {
        match &self.kind {
            Kind::ManualOnly | Kind::Once => DataInterval::exact(run_after),
            Kind::Cron {
                data_intervals: false,
                ..
            }
            | Kind::Delta {
                data_intervals: false,
                ..
            } => DataInterval::exact(run_after),
            Kind::Cron {
                cron,
                data_intervals: true,
            } => {
                // The last complete period before `run_after`: a run triggered at 01:00 on a
                // daily schedule covers the previous day.
                let interval = self.align_to_prev(cron, run_after).and_then(|end| {
                    self.cron_prev(cron, end)
                        .map(|start| DataInterval { start, end })
                });
                interval.unwrap_or(DataInterval::exact(run_after))
            }
            Kind::Delta {
                every,
                data_intervals: true,
            } => run_after
                .checked_sub_signed(*every)
                .map(|start| DataInterval {
                    start,
                    end: run_after,
                })
                .unwrap_or(DataInterval::exact(run_after)),
        }
    }

    /// Every run whose logical date lies in `[from, to]`, for backfills, at most `limit`, in
    /// order. As Airflow's backfill, the range replaces the DAG's start and end dates and every
    /// run in it is produced whatever `catchup` says.
    pub fn runs_between(&self, from: Timestamp, to: Timestamp, limit: usize) -> Vec<DagRunInfo> {
        let mut runs = Vec::new();
        if self.is_manual_only() || from > to {
            return runs;
        }
        let restriction = Restriction {
            earliest: Some(from),
            latest: Some(to),
            catchup: true,
        };
        let mut last: Option<DataInterval> = None;
        while runs.len() < limit {
            let Some(info) = self.next_with(last.as_ref(), restriction, to) else {
                break;
            };
            if info.logical_date > to || last.is_some_and(|previous| info.data_interval <= previous)
            {
                break;
            }
            if info.logical_date >= from {
                runs.push(info);
            }
            last = Some(info.data_interval);
        }
        runs
    }

    fn next_with(
        &self,
        last: Option<&DataInterval>,
        restriction: Restriction,
        now: Timestamp,
    ) -> Option<DagRunInfo> {
        match &self.kind {
            Kind::ManualOnly => None,
            Kind::Once => {
                if last.is_some() {
                    return None;
                }
                let run_after = restriction.earliest.unwrap_or(now);
                if restriction.latest.is_some_and(|latest| run_after > latest) {
                    return None;
                }
                Some(DagRunInfo::interval(run_after, run_after))
            }
            Kind::Cron {
                data_intervals: true,
                ..
            }
            | Kind::Delta {
                data_intervals: true,
                ..
            } => self.next_data_interval(last, restriction, now),
            Kind::Cron {
                data_intervals: false,
                ..
            }
            | Kind::Delta {
                data_intervals: false,
                ..
            } => self.next_trigger(last, restriction, now),
        }
    }

    /// Airflow's `_DataIntervalTimetable.next_dagrun_info`.
    fn next_data_interval(
        &self,
        last: Option<&DataInterval>,
        restriction: Restriction,
        now: Timestamp,
    ) -> Option<DagRunInfo> {
        let earliest = if !restriction.catchup {
            Some(self.skip_to_latest(restriction.earliest, now)?)
        } else {
            match restriction.earliest {
                Some(earliest) => Some(self.align_to_next_any(earliest)?),
                None => None,
            }
        };
        let start = match last {
            None => earliest?,
            Some(last) => {
                // Aligning matters when the schedule changed since the last run.
                let aligned_end = self.align_to_prev_any(last.end)?;
                let mut start = match earliest {
                    Some(earliest) => aligned_end.max(earliest),
                    None => aligned_end,
                };
                // A coarser new schedule can realign onto the last run's logical date; stepping
                // forward clears it. Airflow gives up after one step, which stalls hourly crons
                // in Lord Howe's 30-minute DST change; a few more steps keep the DAG running.
                for _ in 0..ADVANCE_STEPS_MAX {
                    if start > last.start {
                        break;
                    }
                    start = self.get_next(start)?;
                }
                if start <= last.start {
                    return None;
                }
                start
            }
        };
        if restriction.latest.is_some_and(|latest| start > latest) {
            return None;
        }
        let end = self.get_next(start)?;
        Some(DagRunInfo::interval(start, end))
    }

    /// Airflow's `_TriggerTimetable.next_dagrun_info` with a zero-length data interval.
    fn next_trigger(
        &self,
        last: Option<&DataInterval>,
        restriction: Restriction,
        now: Timestamp,
    ) -> Option<DagRunInfo> {
        let next = if restriction.catchup {
            match (last, restriction.earliest) {
                (Some(last), _) => self.get_next(last.end)?,
                (None, None) => self.first_trigger_without_start(now)?,
                (None, Some(earliest)) => self.align_to_next_any(earliest)?,
            }
        } else {
            let mut next = self.align_to_prev_any(now)?;
            if let Some(last) = last {
                next = next.max(self.get_next(last.end)?);
            } else if restriction.earliest.is_none() {
                next = next.max(self.first_trigger_without_start(now)?);
            }
            if let Some(earliest) = restriction.earliest {
                next = next.max(self.align_to_next_any(earliest)?);
            }
            next
        };
        if restriction.latest.is_some_and(|latest| latest < next) {
            return None;
        }
        Some(DagRunInfo::interval(next, next))
    }

    /// Airflow's `_calc_first_run` with `run_immediately=False`: the tick just passed when it
    /// was less than a tenth of a period (at least five minutes) ago, else the next tick.
    fn first_trigger_without_start(&self, now: Timestamp) -> Option<Timestamp> {
        let Kind::Cron { cron, .. } = &self.kind else {
            return Some(now);
        };
        let past = self.align_to_prev(cron, now)?;
        let next = self.align_to_next(cron, now)?;
        let buffer = ((next - past) / 10).max(Duration::minutes(5));
        Some(if now - past <= buffer { past } else { next })
    }

    /// With catchup off: the start of the latest interval that is already due.
    fn skip_to_latest(&self, earliest: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron { cron, .. } => {
                let last_start = self.cron_prev(cron, now)?;
                let next_start = self.cron_next(cron, last_start)?;
                // On a boundary the interval starting now is not due yet; the one ending now is.
                let new_start = if next_start >= now {
                    if next_start == now {
                        last_start
                    } else {
                        self.cron_prev(cron, last_start)?
                    }
                } else {
                    // Airflow asserts this cannot happen; keep the later, safe choice.
                    last_start
                };
                match earliest {
                    None => Some(new_start),
                    Some(earliest) => Some(new_start.max(self.align_to_next(cron, earliest)?)),
                }
            }
            Kind::Delta { every, .. } => {
                // Fixed intervals are rounded on the Unix epoch, as Airflow does.
                let every_us = every.num_microseconds()?;
                let now_us = now.timestamp_micros();
                let rounded =
                    Timestamp::from_timestamp_micros(now_us - now_us.rem_euclid(every_us))?;
                let new_start = rounded.checked_sub_signed(*every)?;
                Some(earliest.map_or(new_start, |earliest| new_start.max(earliest)))
            }
            Kind::ManualOnly | Kind::Once => None,
        }
    }

    fn get_next(&self, current: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron { cron, .. } => self.cron_next(cron, current),
            Kind::Delta { every, .. } => current.checked_add_signed(*every),
            Kind::ManualOnly | Kind::Once => None,
        }
    }

    fn align_to_next_any(&self, current: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron { cron, .. } => self.align_to_next(cron, current),
            _ => Some(current),
        }
    }

    fn align_to_prev_any(&self, current: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron { cron, .. } => self.align_to_prev(cron, current),
            _ => Some(current),
        }
    }

    /// `current` when it is a tick, else the next tick.
    fn align_to_next(&self, cron: &CronExpression, current: Timestamp) -> Option<Timestamp> {
        let next = self.cron_next(cron, current)?;
        if self.cron_prev(cron, next)? != current {
            Some(next)
        } else {
            Some(current)
        }
    }

    /// `current` when it is a tick, else the previous tick.
    fn align_to_prev(&self, cron: &CronExpression, current: Timestamp) -> Option<Timestamp> {
        let prev = self.cron_prev(cron, current)?;
        if self.cron_next(cron, prev)? != current {
            Some(prev)
        } else {
            Some(current)
        }
    }

    /// Airflow's `CronMixin._get_next`: the first tick strictly after `current`.
    fn cron_next(&self, cron: &CronExpression, current: Timestamp) -> Option<Timestamp> {
        let naive = current.with_timezone(&self.timezone).naive_local();
        let scheduled = cron.next_after(naive)?;
        if cron.covers_every_hour() {
            current.checked_add_signed(scheduled - naive)
        } else {
            Some(self.make_aware(scheduled))
        }
    }

    /// Airflow's `CronMixin._get_prev`: the last tick strictly before `current`.
    fn cron_prev(&self, cron: &CronExpression, current: Timestamp) -> Option<Timestamp> {
        let naive = current.with_timezone(&self.timezone).naive_local();
        let scheduled = cron.prev_before(naive)?;
        if cron.covers_every_hour() {
            current.checked_sub_signed(naive - scheduled)
        } else {
            Some(self.make_aware(scheduled))
        }
    }

    /// A wall-clock time in the DAG's zone as an instant, as Airflow's `make_aware` (which
    /// sets `fold=1` and lets pendulum normalize): a repeated wall time is its second
    /// occurrence; a skipped one is read with the offset from before the change, which lands
    /// after the change by the length of the gap (02:30 becomes 03:30).
    fn make_aware(&self, naive: NaiveDateTime) -> Timestamp {
        match self.timezone.from_local_datetime(&naive) {
            LocalResult::Single(local) => local.to_utc(),
            LocalResult::Ambiguous(first, second) => first.to_utc().max(second.to_utc()),
            LocalResult::None => {
                // Every zone keeps an offset for months, and offsets are within ±18 hours, so
                // 36 hours before the wall time is still before the change.
                let before = naive - Duration::hours(36);
                let offset = self.timezone.offset_from_utc_datetime(&before).fix();
                (naive - Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc()
            }
        }
    }
}
