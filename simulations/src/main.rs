//! The simulator's command line: run many seeds (`--seeds N`), replay one (`--seed S`), run
//! a deliberately broken variant (`--canary`: stale results accepted; `--canary-lease`:
//! remote workers ignore their lease; `--canary-cell-lease`: cells go on acting for a shard
//! after their lease keeper says `Lost`), or keep going until a time (`--until`). Every seed
//! runs both simulations, the node's and the cells'.
//!
//! The last line of a multi-seed run is exactly `N seeds, V violations`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weft_simulations::{describe_failure, run_seed, Canary, SeedReport};

/// How often the long-run mode prints progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Failures printed in full per run; the rest are counted.
const FAILURES_PRINTED_MAX: usize = 20;

#[derive(Debug, Default)]
struct Args {
    seeds: Option<u64>,
    seed: Option<u64>,
    first_seed: u64,
    canary: bool,
    canary_lease: bool,
    canary_cell_lease: bool,
    until: Option<Duration>,
    trace: bool,
}

const USAGE: &str = "usage: weft-simulations [--seeds N [--first-seed S] [--until 8h|RFC3339]] [--seed S [--trace]] [--canary | --canary-lease | --canary-cell-lease]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value; {USAGE}"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("`{text}`: {e}"));
        match word.as_str() {
            "--seeds" => args.seeds = Some(number(value("--seeds")?)?),
            "--seed" => args.seed = Some(number(value("--seed")?)?),
            "--first-seed" => args.first_seed = number(value("--first-seed")?)?,
            "--until" => args.until = Some(parse_until(&value("--until")?)?),
            "--canary" => args.canary = true,
            "--canary-lease" => args.canary_lease = true,
            "--canary-cell-lease" => args.canary_cell_lease = true,
            "--trace" => args.trace = true,
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    Ok(args)
}

/// `8h`, `90m`, `45s`, or an RFC 3339 time, as a duration from now.
fn parse_until(text: &str) -> Result<Duration, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        let left = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
        return Ok(left.to_std().unwrap_or_default());
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let amount: u64 = number
        .parse()
        .map_err(|_| format!("--until `{text}`: expected e.g. 8h, 90m, 45s or an RFC 3339 time"))?;
    let seconds = match unit {
        "h" => amount * 3600,
        "m" => amount * 60,
        "s" => amount,
        _ => return Err(format!("--until `{text}`: the unit is h, m or s")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let canary = if args.canary {
        Canary::AcceptStaleResults
    } else if args.canary_lease {
        Canary::IgnoreLease
    } else if args.canary_cell_lease {
        Canary::IgnoreCellLease
    } else {
        Canary::Off
    };
    if let Some(seed) = args.seed {
        return replay(seed, canary, args.trace);
    }
    let seeds = args.seeds.unwrap_or(100);
    match args.until {
        Some(duration) => long_run(args.first_seed, seeds, duration, canary),
        None => {
            let started = Instant::now();
            let (failed, violations) = run_batch(args.first_seed, seeds, canary);
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "ran {seeds} seeds in {seconds:.1} s on {} threads",
                threads()
            );
            finish(seeds, failed, violations, canary)
        }
    }
}

fn replay(seed: u64, canary: Canary, trace: bool) -> ExitCode {
    let report = run_seed(seed, canary);
    if trace {
        print!("{}", report.history.excerpt(None, "", usize::MAX));
        println!("cells:");
        print!("{}", report.cells.history.excerpt(None, "", usize::MAX));
    }
    println!(
        "seed {seed}: trace hash {:016x}, {} entries; cells trace hash {:016x}, {} entries",
        report.trace_hash,
        report.history.entries.len(),
        report.cells.trace_hash,
        report.cells.history.entries.len()
    );
    if !report.violations.is_empty() {
        print!("{}", describe_failure(&report, canary));
    }
    let violations = report.violations.len() as u64;
    finish(1, u64::from(violations > 0), violations, canary)
}

/// Runs seeds `first..first + count` on every core; prints failures in seed order.
fn run_batch(first: u64, count: u64, canary: Canary) -> (u64, u64) {
    let next = AtomicU64::new(first);
    let failures: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads() {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    break;
                }
                let report = run_seed(seed, canary);
                if !report.violations.is_empty() {
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(report);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|report| report.seed);
    for report in failures.iter().take(FAILURES_PRINTED_MAX) {
        print!("{}", describe_failure(report, canary));
    }
    let violations = failures.iter().map(|r| r.violations.len() as u64).sum();
    (failures.len() as u64, violations)
}

fn long_run(first: u64, batch: u64, duration: Duration, canary: Canary) -> ExitCode {
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let (mut done, mut failed, mut violations) = (0, 0, 0);
    while started.elapsed() < duration {
        let (batch_failed, batch_violations) = run_batch(first + done, batch, canary);
        done += batch;
        failed += batch_failed;
        violations += batch_violations;
        if last_progress.elapsed() >= PROGRESS_EVERY || started.elapsed() >= duration {
            last_progress = Instant::now();
            println!(
                "progress: {done} seeds, {failed} failing, {violations} violations, {:.0} s elapsed, next seed {}",
                started.elapsed().as_secs_f64(),
                first + done
            );
        }
    }
    finish(done, failed, violations, canary)
}

fn finish(seeds: u64, failed: u64, violations: u64, canary: Canary) -> ExitCode {
    if canary != Canary::Off {
        let verdict = if failed > 0 { "caught" } else { "NOT caught" };
        println!("canary {verdict}: {failed} of {seeds} seeds failed");
    }
    println!("{seeds} seeds, {violations} violations");
    // The canary is supposed to fail; it is an error when it does not.
    let ok = if canary == Canary::Off {
        violations == 0
    } else {
        failed > 0
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
