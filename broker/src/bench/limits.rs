//! `medbus bench limits`: what this machine can do at best, measured the same
//! way every time, so a broker result can be read against it.
//!
//! Why: an ACK after a durable commit can never be faster than one
//! `fdatasync` plus one loopback round trip, and a broker cannot move more
//! bytes than loopback TCP does. Three measurements, each for `--duration`:
//! - `fdatasync`: append 4 KiB to a file in the data directory, fdatasync,
//!   record the latency; repeat.
//! - loopback round trip: 64-byte ping-pong with an echoing thread.
//! - loopback throughput: 64 KiB writes to a thread that discards them.

use super::histogram::{Latencies, LatencySummary};
use super::report::{render_rows, Machine, MB};
use super::BenchError;
use medbus_config::HumanDuration;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes appended before each fdatasync.
const SYNC_BLOCK: usize = 4096;
/// Bytes of each round-trip message.
const PING_BYTES: usize = 64;
/// Bytes of each write of the throughput test.
const STREAM_CHUNK: usize = 64 * 1024;

/// `medbus bench limits` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
    /// Directory to measure fdatasync in (default: the temp dir, where `mllp --spawn` puts its data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How long each of the three measurements runs.
    #[arg(long, short = 'd', default_value = "3s")]
    pub duration: HumanDuration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Latency and rate of a repeated operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpStats {
    /// Operations done.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles.
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// One-way byte rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamStats {
    /// Bytes received.
    pub bytes: u64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
}

/// The machine's limits.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LimitsReport {
    /// Always `limits`.
    pub mode: String,
    /// Where fdatasync was measured.
    pub data_dir: String,
    /// The file system type of `data_dir` (from /proc/self/mounts).
    pub filesystem: Option<String>,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// fdatasync after a 4 KiB append.
    pub fdatasync: OpStats,
    /// 64-byte loopback TCP round trip.
    pub loopback_rtt: OpStats,
    /// Loopback TCP one-way throughput with 64 KiB writes.
    pub loopback_throughput: StreamStats,
    /// Where it ran.
    pub machine: Machine,
}

impl LimitsReport {
    /// The plain-text table.
    pub fn table(&self) -> String {
        let ms = |v: f64| format!("{v:.3}");
        let row = |name: &str, o: &OpStats, unit: &str| {
            vec![
                ("measure", name.to_string()),
                ("ops", o.ops.to_string()),
                ("rate", format!("{:.0} {unit}", o.ops_per_sec)),
                ("p50 ms", ms(o.latency.p50_ms)),
                ("p90 ms", ms(o.latency.p90_ms)),
                ("p99 ms", ms(o.latency.p99_ms)),
                ("p99.9 ms", ms(o.latency.p99_9_ms)),
                ("max ms", ms(o.latency.max_ms)),
            ]
        };
        let mut out = format!(
            "medbus bench limits: data dir {} ({}) on {}\n",
            self.data_dir,
            self.filesystem.as_deref().unwrap_or("unknown fs"),
            self.machine.describe()
        );
        out.push_str(&render_rows(&[
            row("fdatasync 4 KiB append", &self.fdatasync, "ops/s"),
            row("loopback TCP RTT 64 B", &self.loopback_rtt, "rt/s"),
        ]));
        out.push_str(&format!(
            "loopback TCP one-way throughput (64 KiB writes): {:.0} MB/s\n",
            self.loopback_throughput.mb_per_sec
        ));
        out
    }
}

/// Run the three measurements.
pub fn run(args: &LimitsArgs) -> Result<LimitsReport, BenchError> {
    let duration = args.duration.0;
    if duration.is_zero() {
        return Err(BenchError::Usage("--duration must be above zero".into()));
    }
    let dir = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    let progress =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    progress.enable_steady_tick(Duration::from_millis(200));
    progress.set_message(format!("fdatasync in {} …", dir.display()));
    let fdatasync = fdatasync(&dir, duration)?;
    progress.set_message("loopback round trip …");
    let loopback_rtt = round_trip(duration)?;
    progress.set_message("loopback throughput …");
    let loopback_throughput = throughput(duration)?;
    progress.finish_and_clear();
    Ok(LimitsReport {
        mode: "limits".into(),
        filesystem: filesystem_of(&dir),
        data_dir: dir.display().to_string(),
        duration_s: duration.as_secs_f64(),
        fdatasync,
        loopback_rtt,
        loopback_throughput,
        machine: Machine::detect(),
    })
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        what: what.to_string(),
        source,
    }
}

fn op_stats(lat: &Latencies, elapsed: Duration) -> OpStats {
    OpStats {
        ops: lat.count(),
        ops_per_sec: lat.count() as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: lat.summary(),
    }
}

/// Append 4 KiB and fdatasync, over and over, in a scratch file of `dir`.
fn fdatasync(dir: &Path, duration: Duration) -> Result<OpStats, BenchError> {
    let path = dir.join(format!(".medbus-bench-limits-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot create the fdatasync scratch file"))?;
        let block = [0x5Au8; SYNC_BLOCK];
        let mut lat = Latencies::new();
        let started = Instant::now();
        while started.elapsed() < duration {
            let t = Instant::now();
            f.write_all(&block).map_err(io_err("write failed"))?;
            f.sync_data().map_err(io_err("fdatasync failed"))?;
            lat.record_since(t);
        }
        Ok(op_stats(&lat, started.elapsed()))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn loopback_pair() -> Result<(TcpStream, TcpListener), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("cannot bind loopback"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("cannot bind loopback"))?;
    let client = TcpStream::connect(addr).map_err(io_err("cannot connect over loopback"))?;
    client
        .set_nodelay(true)
        .map_err(io_err("cannot set TCP_NODELAY"))?;
    Ok((client, listener))
}

/// 64-byte ping-pong with an echoing thread.
fn round_trip(duration: Duration) -> Result<OpStats, BenchError> {
    let (mut client, listener) = loopback_pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; PING_BYTES];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let msg = [0xA5u8; PING_BYTES];
    let mut back = [0u8; PING_BYTES];
    let mut lat = Latencies::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        client
            .write_all(&msg)
            .map_err(io_err("loopback write failed"))?;
        client
            .read_exact(&mut back)
            .map_err(io_err("loopback read failed"))?;
        lat.record_since(t);
    }
    let elapsed = started.elapsed();
    let _ = client.shutdown(Shutdown::Write);
    let _ = echo.join();
    Ok(op_stats(&lat, elapsed))
}

/// 64 KiB writes for `duration` to a thread that reads and discards.
fn throughput(duration: Duration) -> Result<StreamStats, BenchError> {
    let (mut client, listener) = loopback_pair()?;
    let sink = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((total, Instant::now())),
                n => total += n as u64,
            }
        }
    });
    let chunk = vec![0xC3u8; STREAM_CHUNK];
    let started = Instant::now();
    while started.elapsed() < duration {
        client
            .write_all(&chunk)
            .map_err(io_err("loopback write failed"))?;
    }
    let _ = client.shutdown(Shutdown::Write);
    let (bytes, ended) = match sink.join() {
        Ok(r) => r.map_err(io_err("loopback read failed"))?,
        Err(_) => {
            return Err(BenchError::Io {
                what: "loopback reader failed".into(),
                source: std::io::Error::other("reader thread panicked"),
            })
        }
    };
    let secs = ended.duration_since(started).as_secs_f64().max(1e-9);
    Ok(StreamStats {
        bytes,
        mb_per_sec: bytes as f64 / MB / secs,
    })
}

/// The type of the file system holding `dir` (longest mount point prefix).
pub fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, fs) = (f.next()?, f.next()?, f.next()?);
            // Mount points escape spaces as \040.
            let mnt = mnt.replace("\\040", " ");
            dir.starts_with(&mnt).then(|| (mnt.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_everything() {
        let r = run(&LimitsArgs {
            data_dir: None,
            duration: HumanDuration(Duration::from_millis(200)),
            json: false,
        })
        .expect("limits");
        assert!(r.fdatasync.ops > 0);
        assert!(r.loopback_rtt.ops > 0);
        assert!(r.loopback_rtt.latency.p50_ms > 0.0);
        assert!(r.loopback_throughput.bytes > 0);
        assert!(r.table().contains("fdatasync"));
    }

    #[test]
    fn root_has_a_filesystem() {
        assert!(filesystem_of(Path::new("/")).is_some());
    }
}
