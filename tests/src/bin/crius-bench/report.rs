//! The result table: one row per measured quantity, one column group per runtime, and the ratio
//! crius/containerd of the medians. Printed as plain text and written as Markdown.

use std::fmt::Write;

use crate::stats::Summary;

/// One runtime's value in a row.
#[derive(Debug, Clone)]
pub enum Cell {
    Times(Summary),
    /// Latencies where the tail matters (polling RPCs): rendered as p50 / p99.
    Tail(Summary),
    /// A single figure with its unit (memory).
    Value(f64, &'static str),
    NotSupported(String),
    /// Words, not a figure (what leaked); never part of a ratio.
    Text(String),
    /// Served, but this figure is not measured for the runtime (the reason says why).
    NotMeasured(String),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub cells: Vec<(String, Cell)>,
}

impl Row {
    fn cell(&self, runtime: &str) -> Option<&Cell> {
        self.cells.iter().find(|(r, _)| r == runtime).map(|(_, c)| c)
    }

    fn headline(&self, runtime: &str) -> Option<f64> {
        match self.cell(runtime)? {
            Cell::Times(s) | Cell::Tail(s) => Some(s.median),
            Cell::Value(v, _) => Some(*v),
            Cell::NotSupported(_) | Cell::NotMeasured(_) | Cell::Text(_) => None,
        }
    }

    pub fn ratio(&self) -> Option<f64> {
        let c = self.headline("crius")?;
        let d = self.headline("containerd")?;
        (d > 0.0).then(|| c / d)
    }
}

fn render(cell: Option<&Cell>) -> String {
    match cell {
        None => "-".into(),
        Some(Cell::Times(s)) => {
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} (n={})",
                s.median, s.p90, s.min, s.max, s.n
            )
        }
        Some(Cell::Tail(s)) => format!("p50 {:.2} / p99 {:.2} (n={})", s.median, s.p99, s.n),
        // Small figures (CPU seconds) keep two decimals; kB and MB/s need none.
        Some(Cell::Value(v, "")) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(Cell::Value(v, unit)) if v.abs() < 10.0 => format!("{v:.2} {unit}"),
        Some(Cell::Value(v, unit)) => format!("{v:.0} {unit}"),
        Some(Cell::Text(t)) => t.replace('|', "/"),
        Some(Cell::NotSupported(why)) => format!("not supported ({})", short(why)),
        Some(Cell::NotMeasured(why)) => format!("not measured ({})", short(why)),
    }
}

fn short(s: &str) -> String {
    let s = s.replace('|', "/");
    if s.len() > 60 {
        format!("{}…", &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

fn ratio(r: &Row) -> String {
    r.ratio().map_or("-".into(), |x| format!("{x:.2}×"))
}

/// Plain table for stdout.
pub fn text(rows: &[Row], runtimes: &[&str]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "times: median / p90 / min / max in ms; ratio = crius / containerd (medians)"
    );
    for r in rows {
        let _ = writeln!(out, "{}", r.what);
        for rt in runtimes {
            let _ = writeln!(out, "  {rt:<11} {}", render(r.cell(rt)));
        }
        let _ = writeln!(out, "  {:<11} {}", "ratio", ratio(r));
    }
    out
}

/// Markdown table (for docs/PERFORMANCE.md).
pub fn markdown(rows: &[Row], runtimes: &[&str], header: &str) -> String {
    let mut out = String::from(header);
    let _ = writeln!(
        out,
        "\nTimes are median / p90 / min / max in milliseconds; ratio = crius / containerd (medians).\n"
    );
    let _ = write!(out, "| scenario |");
    for rt in runtimes {
        let _ = write!(out, " {rt} |");
    }
    let _ = writeln!(out, " ratio |");
    let _ = writeln!(out, "|---|{}---|", "---|".repeat(runtimes.len()));
    for r in rows {
        let _ = write!(out, "| {} |", r.what);
        for rt in runtimes {
            let _ = write!(out, " {} |", render(r.cell(rt)));
        }
        let _ = writeln!(out, " {} |", ratio(r));
    }
    out
}
