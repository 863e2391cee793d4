//! `medbus bench`: the load generator, and the yardstick it is read against.
//!
//! Why it lives in the broker crate: it drives the real binary (`--spawn`
//! starts `medbus serve` as a child) and reuses the broker's own MLLP codec
//! and file splitting, so what it measures is what users run.
//!
//! # Layout
//! - [`mllp`]: C concurrent MLLP connections, send → ACK, messages/s and
//!   ACK latency.
//! - [`publish`]: binary-protocol publishers, batches answered once
//!   durable; records/s and ack latency.
//! - [`fanout`]: K subscribers on one topic fed by publishers;
//!   deliveries/s and delivery latency from a timestamp in each record.
//! - [`e2e`]: MLLP in at a fixed rate (open loop), FHIR Bundles out to a
//!   subscriber of `fhir.bundles`; end-to-end latency.
//! - [`destination`]: a built-in fast MLLP receiver fed by a broker's
//!   `[[destinations]]`, against a bare MLLP client; delivered/s and ratio.
//! - [`fhir`]: the FHIR gateway: `read` (keep-alive `GET Patient/{id}`,
//!   requests/s) and `hook` (MLLP in at a fixed rate → rest-hook
//!   notification of a Subscription; notification latency).
//! - [`route`]: one route draining a filled topic (`none` or `fhir`), on
//!   a broker started on a copy of it; records/s from readiness, against
//!   the FHIR converter alone on the same messages.
//! - [`proto`]: what the protocol modes share (runtime per thread, connect,
//!   start gate, timestamps, progress loop).
//! - [`limits`]: this machine's fdatasync, loopback round trip and loopback
//!   throughput, measured the same way every time.
//! - [`corpus`]: the messages sent (built-in mix or files), unique MSH-10s,
//!   ACK checking.
//! - [`spawn`]: a broker started for one run, its port and its peak RSS.
//! - [`histogram`]: HDR latency histograms, coordinated omission.
//! - [`report`]: the load report, table and `--json`, the progress line.
//!
//! Every load mode is one file returning a [`report::LoadReport`] (`route`,
//! a row per route timed, returns its own [`route::RouteReport`]).

pub mod corpus;
pub mod destination;
pub mod e2e;
pub mod fanout;
pub mod fhir;
pub mod histogram;
pub mod limits;
pub mod mllp;
pub mod proto;
pub mod publish;
pub mod report;
pub mod route;
pub mod spawn;

/// Why a bench could not run (a run that ran reports its errors instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad arguments or input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Nothing answers at the target address.
    #[error("cannot connect to {addr}: {source} (is a broker listening there? or use --spawn)")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker started with `--spawn` failed.
    #[error("the spawned broker {reason}{}", if log_tail.is_empty() { String::new() } else { format!("; its log ends with:\n{log_tail}") })]
    Spawn {
        /// What went wrong.
        reason: String,
        /// The end of its stderr.
        log_tail: String,
    },
    /// A message file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other I/O failure of the bench itself.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BenchError {
    /// A set-up step of the run failed for a reason that is not an OS error
    /// of its own (a refused request, a count that does not add up).
    pub fn setup(what: String, e: impl std::fmt::Display) -> BenchError {
        BenchError::Io {
            what,
            source: std::io::Error::other(e.to_string()),
        }
    }

    /// The process exit code for this error: 2 for bad usage, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// `--durability` of a spawned broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// journal entry written and fdatasynced before every ACK.
    Fsync,
    /// journal entry written, not synced.
    Flush,
    /// Nothing synced, ever.
    None,
}

impl DurabilityArg {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityArg::Fsync => "fsync",
            DurabilityArg::Flush => "flush",
            DurabilityArg::None => "none",
        }
    }
}

/// `medbus bench <mode>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// C concurrent MLLP connections, each send → wait for ACK; messages/s and ACK latency.
    Mllp(mllp::MllpArgs),
    /// This machine's limits: fdatasync of a 4 KiB append, loopback TCP round trip and throughput.
    Limits(limits::LimitsArgs),
    /// Binary-protocol publishers, batches answered once durable; records/s and ack latency.
    Publish(publish::PublishArgs),
    /// K subscribers on one topic fed by publishers; deliveries/s and delivery latency.
    Fanout(fanout::FanoutArgs),
    /// MLLP in at a fixed rate → FHIR Bundles to a subscriber; end-to-end latency.
    E2e(e2e::E2eArgs),
    /// A broker delivering to a fast MLLP receiver, against a bare MLLP client; delivered/s and ratio.
    Destination(destination::DestinationArgs),
    /// The FHIR gateway: `read` = keep-alive GET Patient/{id}, requests/s; `hook` = MLLP in at a fixed rate → rest-hook notification latency.
    Fhir(fhir::FhirArgs),
    /// One route (`none`, `fhir` or both in turn) draining a filled topic on a broker of its own; records/s against the FHIR converter alone.
    Route(route::RouteArgs),
}

impl BenchCommand {
    /// Whether `--json` was asked for.
    pub fn json(&self) -> bool {
        match self {
            BenchCommand::Mllp(a) => a.json,
            BenchCommand::Limits(a) => a.json,
            BenchCommand::Publish(a) => a.json,
            BenchCommand::Fanout(a) => a.json,
            BenchCommand::E2e(a) => a.json,
            BenchCommand::Destination(a) => a.json,
            BenchCommand::Fhir(a) => a.json,
            BenchCommand::Route(a) => a.json,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Report {
    /// A load mode.
    Load(Box<report::LoadReport>),
    /// `limits`.
    Limits(limits::LimitsReport),
    /// `route`.
    Route(route::RouteReport),
}

impl Report {
    /// The table, or one line of JSON.
    pub fn render(&self, json: bool) -> String {
        if json {
            let text = match self {
                Report::Load(r) => serde_json::to_string(r),
                Report::Limits(r) => serde_json::to_string(r),
                Report::Route(r) => serde_json::to_string(r),
            };
            // Plain structs of numbers and strings always serialise.
            return text.unwrap_or_default() + "\n";
        }
        match self {
            Report::Load(r) => r.table(),
            Report::Limits(r) => r.table(),
            Report::Route(r) => r.table(),
        }
    }

    /// Failed messages (0 for `limits`).
    pub fn errors(&self) -> u64 {
        match self {
            Report::Load(r) => r.errors,
            Report::Limits(_) => 0,
            Report::Route(r) => r.errors,
        }
    }
}

/// Run one mode.
pub fn run(command: &BenchCommand) -> Result<Report, BenchError> {
    match command {
        BenchCommand::Mllp(a) => mllp::run(a).map(|r| Report::Load(Box::new(r))),
        BenchCommand::Limits(a) => limits::run(a).map(Report::Limits),
        BenchCommand::Publish(a) => publish::run(a).map(|r| Report::Load(Box::new(r))),
        BenchCommand::Fanout(a) => fanout::run(a).map(|r| Report::Load(Box::new(r))),
        BenchCommand::E2e(a) => e2e::run(a).map(|r| Report::Load(Box::new(r))),
        BenchCommand::Destination(a) => destination::run(a).map(|r| Report::Load(Box::new(r))),
        BenchCommand::Fhir(a) => fhir::run(a).map(|r| Report::Load(Box::new(r))),
        BenchCommand::Route(a) => route::run(a).map(Report::Route),
    }
}
