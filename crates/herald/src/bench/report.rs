//! Measurements shared by the bench modes: latency histograms, process CPU and memory readings,
//! and printing a result as a table or JSON.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use std::sync::{Mutex, PoisonError};

/// A set of latency histograms (microseconds), sharded so readers rarely contend.
#[derive(Debug)]
pub(crate) struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records `samples` (microseconds) into shard `i`.
    pub(crate) fn record(&self, i: usize, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.shards[i % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &s in samples {
            h.saturating_record(s.max(1));
        }
    }

    /// All shards merged.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = all.add(&*h);
        }
        all
    }
}

fn new_histogram() -> Histogram<u64> {
    // Invariant: 1 µs to 10 min at 3 significant figures is a valid configuration.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// p50/p90/p99/max of a histogram, in milliseconds.
pub(crate) fn latency_json(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| (v as f64) / 1000.0;
    serde_json::json!({
        "samples": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

/// User plus system CPU seconds used so far by process `pid` (`self` for this one).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports in clock ticks of 1/100 s on every common configuration.
    Some((utime + stime) / 100.0)
}

/// CPU seconds used by this process and, when known, the server, over a measurement.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    server_pid: Option<String>,
    generator: Option<f64>,
    server: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring.
    pub(crate) fn start(server_pid: Option<u32>) -> Self {
        let server_pid = server_pid.map(|p| p.to_string());
        Self {
            generator: cpu_seconds("self"),
            server: server_pid.as_deref().and_then(cpu_seconds),
            server_pid,
        }
    }

    /// CPU seconds since `start`: (generator, server).
    pub(crate) fn stop(&self) -> (Option<f64>, Option<f64>) {
        let delta = |before: Option<f64>, now: Option<f64>| before.zip(now).map(|(a, b)| b - a);
        (
            delta(self.generator, cpu_seconds("self")),
            delta(
                self.server,
                self.server_pid.as_deref().and_then(cpu_seconds),
            ),
        )
    }
}

/// Resident memory of process `pid`, in bytes.
pub(crate) fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Prints `result` as JSON or as an aligned two-column table.
pub(crate) fn print(result: &Value, json: bool) {
    if json {
        println!("{result}");
        return;
    }
    let mut rows = Vec::new();
    flatten("", result, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => flatten_map(prefix, map, out),
        Value::Number(n) => out.push((
            prefix.to_owned(),
            n.as_f64().map_or(n.to_string(), |f| {
                if f.fract() == 0.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.3}")
                }
            }),
        )),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn flatten_map(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        flatten(&key, v, out);
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal or output is JSON.
pub(crate) fn progress(len: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}
