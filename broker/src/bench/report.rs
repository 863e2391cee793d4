//! What a bench run prints, shared by every mode: the load report (one row
//! of throughput, latency percentiles and errors), the machine it ran on,
//! the progress line, and the plain-text table.
//!
//! Why one report for every load mode: `mllp`, `publish`, `fanout` and `e2e`
//! all answer the same questions (how many, how fast, how late, how many
//! failed), so users compare modes and runs column by column, and scripts
//! read the same `--json` keys whatever the mode.

use super::histogram::{Latencies, LatencySummary};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes in a megabyte as reported (decimal, like `MB/s` everywhere else).
pub const MB: f64 = 1_000_000.0;
/// Bytes in a mebibyte (memory sizes).
pub const MIB: f64 = 1_048_576.0;

/// The machine a run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Total memory (from /proc/meminfo), 0 when unknown.
    pub memory_bytes: u64,
    /// Kernel name and release, when known.
    pub kernel: String,
}

impl Machine {
    /// Describe this machine.
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| proc_kib(&s, "MemTotal:"))
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| format!("{} {}", std::env::consts::OS, r.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_string());
        Machine {
            cores,
            memory_bytes,
            kernel,
        }
    }

    /// `2 cores, 23.5 GiB, linux 6.1`.
    pub fn describe(&self) -> String {
        format!(
            "{} cores, {:.1} GiB memory, {}",
            self.cores,
            self.memory_bytes as f64 / (MIB * 1024.0),
            self.kernel
        )
    }
}

/// A `Key:   1234 kB` line of a /proc file, in bytes.
pub fn proc_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line
        .get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The result of a load mode (`mllp` now; `publish`, `fanout`, `e2e` later).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Mode name.
    pub mode: String,
    /// Address driven.
    pub target: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Messages sent and confirmed (an ACK AA naming them).
    pub messages: u64,
    /// Messages that failed, all kinds together.
    pub errors: u64,
    /// Failures by kind (`connect`, `timeout`, `closed`, `nak_ae`, …).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Wall time from the first send to the last answer.
    pub duration_s: f64,
    /// Confirmed messages per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6 bytes, framing excluded) confirmed per second.
    pub mb_per_sec: f64,
    /// Mean message size in bytes.
    pub message_bytes: usize,
    /// Target rate of an open-loop run (messages/s), `None` when closed-loop.
    pub rate: Option<f64>,
    /// Latency of confirmed messages.
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Durability of a broker this run started (`--spawn`).
    pub durability: Option<String>,
    /// Peak resident memory of a broker this run started (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// What the latency measures, from when to when (modes other than `mllp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_of: Option<String>,
    /// Binary-protocol publishers (`publish`, `fanout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<usize>,
    /// Records per publish (`publish`, `fanout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Subscribers of the topic (`fanout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<usize>,
    /// Records the broker confirmed to the publishers or MLLP senders
    /// (`fanout`, `e2e`, `destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested: Option<u64>,
    /// `ingested` per second of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_per_sec: Option<f64>,
    /// ACK latency of the MLLP senders (`e2e`, `destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_latency: Option<LatencySummary>,
    /// The warm-up before the measured window (`e2e`): its messages are in
    /// none of the figures above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    /// Messages/s a bare MLLP client reached against the same receiver (`destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_msgs_per_sec: Option<f64>,
    /// `msgs_per_sec` ÷ `bare_msgs_per_sec` (`destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_to_bare: Option<f64>,
    /// Where it ran.
    pub machine: Machine,
}

impl LoadReport {
    /// Assemble a report from merged counts.
    pub fn new(mode: &str, target: String, connections: usize, totals: &Totals) -> LoadReport {
        let secs = totals.elapsed.as_secs_f64().max(1e-9);
        let errors = totals.errors.values().sum();
        LoadReport {
            mode: mode.to_string(),
            target,
            connections,
            messages: totals.ok,
            errors,
            errors_by_kind: totals.errors.clone(),
            duration_s: totals.elapsed.as_secs_f64(),
            msgs_per_sec: totals.ok as f64 / secs,
            mb_per_sec: totals.bytes as f64 / MB / secs,
            message_bytes: 0,
            rate: None,
            latency: totals.latencies.summary(),
            durability: None,
            peak_rss_bytes: None,
            latency_of: None,
            publishers: None,
            batch: None,
            subscribers: None,
            ingested: None,
            ingest_per_sec: None,
            ack_latency: None,
            warmup: None,
            bare_msgs_per_sec: None,
            ratio_to_bare: None,
            machine: Machine::detect(),
        }
    }

    /// The plain-text table (a header row and a value row, then error kinds).
    pub fn table(&self) -> String {
        let ms = |v: f64| format!("{v:.2}");
        let rss = self
            .peak_rss_bytes
            .map_or_else(|| "-".to_string(), |b| format!("{:.1} MiB", b as f64 / MIB));
        let cells: Vec<(&str, String)> = vec![
            ("mode", self.mode.clone()),
            ("conns", self.connections.to_string()),
            ("messages", self.messages.to_string()),
            ("duration", format!("{:.2}s", self.duration_s)),
            (self.rate_label(), format!("{:.0}", self.msgs_per_sec)),
            ("MB/s", format!("{:.2}", self.mb_per_sec)),
            ("p50 ms", ms(self.latency.p50_ms)),
            ("p90 ms", ms(self.latency.p90_ms)),
            ("p99 ms", ms(self.latency.p99_ms)),
            ("p99.9 ms", ms(self.latency.p99_9_ms)),
            ("max ms", ms(self.latency.max_ms)),
            ("errors", self.errors.to_string()),
            ("peak RSS", rss),
        ];
        let mut out = format!(
            "medbus bench {} -> {}{}: {} B messages{}, on {}\n",
            self.mode,
            self.target,
            self.durability
                .as_deref()
                .map(|d| format!(" (spawned broker, durability {d})"))
                .unwrap_or_default(),
            self.message_bytes,
            self.rate
                .map(|r| format!(", open loop at {r:.0} msg/s"))
                .unwrap_or_default(),
            self.machine.describe()
        );
        out.push_str(&render_rows(&[cells]));
        out.push_str(&self.notes());
        for (kind, n) in &self.errors_by_kind {
            let _ = writeln!(out, "  errors: {n} {kind}");
        }
        out
    }
}

impl LoadReport {
    /// The name of the throughput column: what one unit of `msgs_per_sec` is.
    pub fn rate_label(&self) -> &'static str {
        match self.mode.as_str() {
            "publish" => "records/s",
            "fanout" => "deliveries/s",
            "e2e" => "bundles/s",
            "destination" => "delivered/s",
            "fhir-read" => "requests/s",
            "fhir-hook" => "notifications/s",
            _ => "msgs/s",
        }
    }

    /// The lines under the table: the mode's own figures.
    fn notes(&self) -> String {
        let mut out = String::new();
        let mut shape = Vec::new();
        if let Some(p) = self.publishers {
            shape.push(format!("{p} publishers"));
        }
        if let Some(b) = self.batch {
            shape.push(format!("batches of {b}"));
        }
        if let Some(s) = self.subscribers {
            shape.push(format!("{s} subscribers"));
        }
        if !shape.is_empty() {
            let _ = writeln!(out, "  {}", shape.join(", "));
        }
        if let Some(what) = &self.latency_of {
            let _ = writeln!(out, "  latency: {what}");
        }
        if let (Some(n), Some(r)) = (self.ingested, self.ingest_per_sec) {
            let _ = writeln!(out, "  ingested: {n} ({r:.0}/s)");
        }
        if let Some(a) = &self.ack_latency {
            let _ = writeln!(
                out,
                "  MLLP ACK latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                a.p50_ms, a.p99_ms, a.max_ms
            );
        }
        if let Some(w) = &self.warmup {
            let _ = writeln!(
                out,
                "  warm-up before the window (not counted): {:.1}s, {} messages, {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                w.seconds, w.messages, w.errors, w.latency.p50_ms, w.latency.p99_ms, w.latency.max_ms
            );
        }
        if let Some(b) = self.bare_msgs_per_sec {
            let _ = writeln!(
                out,
                "  bare MLLP client against the same receiver: {b:.0} msgs/s; through the broker ÷ bare = {:.2}",
                self.ratio_to_bare.unwrap_or(0.0)
            );
        }
        out
    }
}

/// The load sent before an open-loop run's measured window, at the same
/// rate: a fresh broker creates its topics and grows its buffers on the first
/// messages, once in its life, and a steady-state figure should not carry
/// that. It is reported beside the figures, never hidden.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Warmup {
    /// Its length.
    pub seconds: f64,
    /// Messages that arrived from it.
    pub messages: u64,
    /// Its messages that failed or never arrived.
    pub errors: u64,
    /// Their latency.
    pub latency: LatencySummary,
}

/// Left-aligned columns, two spaces apart, for rows of `(header, value)`
/// (headers taken from the first row).
pub fn render_rows(rows: &[Vec<(&str, String)>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let widths: Vec<usize> = first
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .filter_map(|r| r.get(i).map(|(_, v)| v.len()))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(s, "{c:<w$}  ");
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(first.iter().map(|(h, _)| *h).collect());
    for r in rows {
        out.push_str(&line(r.iter().map(|(_, v)| v.as_str()).collect()));
    }
    out
}

/// What one load thread counted, merged into the run's totals.
#[derive(Default, Clone)]
pub struct Totals {
    /// Confirmed messages.
    pub ok: u64,
    /// Payload bytes of confirmed messages.
    pub bytes: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of confirmed messages.
    pub latencies: Latencies,
    /// Run time: from the start to this thread's last answer (the longest
    /// one after a merge).
    pub elapsed: Duration,
}

impl Totals {
    /// Count one failure of `kind`.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Add another thread's counts.
    pub fn merge(&mut self, other: &Totals) {
        self.ok += other.ok;
        self.bytes += other.bytes;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        self.latencies.merge(&other.latencies);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// Counters every load thread bumps as it goes, read by the progress line.
#[derive(Default)]
pub struct Live {
    /// Confirmed messages so far.
    pub ok: AtomicU64,
    /// Failures so far.
    pub errors: AtomicU64,
}

/// The progress line on stderr (drawn only when stderr is a terminal).
pub struct Progress {
    /// The indicatif bar.
    bar: indicatif::ProgressBar,
    /// When the load started.
    started: Instant,
    /// Messages confirmed at the previous tick, for the current rate.
    last_ok: u64,
    /// Time of the previous tick.
    last_tick: Instant,
}

impl Progress {
    /// A bar of `total` units (milliseconds of a timed run, or messages).
    pub fn new(total: u64) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let now = Instant::now();
        Progress {
            bar,
            started: now,
            last_ok: 0,
            last_tick: now,
        }
    }

    /// Update with the live counters; `position` in the bar's units.
    pub fn tick(&mut self, position: u64, live: &Live, extra: &str) {
        let ok = live.ok.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        let rate = if dt > 0.0 {
            (ok - self.last_ok.min(ok)) as f64 / dt
        } else {
            0.0
        };
        self.last_ok = ok;
        self.last_tick = now;
        self.bar.set_position(position);
        self.bar.set_message(format!(
            "{ok} msgs  {rate:.0} msg/s now  {:.0} msg/s avg  {errors} errors{extra}",
            ok as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
        ));
    }

    /// Remove the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render_rows(&[vec![("a", "1".into()), ("long", "22".into())]]);
        assert_eq!(t, "a  long\n1  22\n");
    }

    #[test]
    fn proc_lines() {
        let s = "MemTotal:       24683996 kB\nVmHWM:\t   1024 kB\n";
        assert_eq!(proc_kib(s, "MemTotal:"), Some(24_683_996 * 1024));
        assert_eq!(proc_kib(s, "VmHWM:"), Some(1024 * 1024));
        assert_eq!(proc_kib(s, "VmRSS:"), None);
    }

    #[test]
    fn json_keys_are_flat_snake_case() {
        let mut t = Totals {
            ok: 10,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        t.error("timeout");
        let r = LoadReport::new("mllp", "x".into(), 1, &t);
        let v = serde_json::to_value(&r).expect("json");
        for k in ["msgs_per_sec", "p50_ms", "p99_9_ms", "max_ms", "errors"] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(v["msgs_per_sec"], 5.0);
        assert_eq!(v["errors_by_kind"]["timeout"], 1);
        assert!(r.table().contains("errors: 1 timeout"));
    }
}
