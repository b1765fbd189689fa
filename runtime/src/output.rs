//! Human tables and `--json` output.

use serde::Serialize;

/// Print rows as an aligned table, or as JSON with `json`.
pub fn print_table<T: Serialize>(json: bool, headers: &[&str], rows: &[Vec<String>], values: &T) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(values).unwrap_or_else(|_| "null".to_string())
        );
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join(" | ").trim_end());
    };
    line(headers.to_vec());
    println!(
        "{}",
        widths
            .iter()
            .map(|width| "-".repeat(*width))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string())
    );
}

pub fn time(at: Option<weft_core::Timestamp>) -> String {
    at.map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}
