//! The `medbus` command line: `serve` runs the broker; the other subcommands
//! are operator tools. Exit codes: 0 success, 1 the operation ran but failed
//! (a NAK, a failed check), 2 bad usage or bad config.

use anyhow::Context as _;

/// The broker allocates and frees many small buffers per message (records,
/// headers, frames, FHIR values); mimalloc spends markedly less time on that than
/// the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use medbus::cli;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "medbus",
    version,
    about = "A self-hosted HL7 v2 / FHIR integration broker"
)]
struct Args {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=medbus=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (with the embedded default config unless --config is given).
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file; errors as file:line:col: key: message, exit 2.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Send HL7 files over MLLP; exit 1 unless every message got AA or CA.
    Send {
        /// Listener address.
        #[arg(long, default_value = "127.0.0.1:2575")]
        to: String,
        /// Seconds to wait for each ACK.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print every message's outcome.
        #[arg(long, short)]
        verbose: bool,
        /// Files of one or many messages, MLLP-framed or not, any separator.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Convert HL7 v2 files to FHIR R4 Bundles (JSON, one per line); exit 1 if any message fails.
    Convert {
        /// Pretty-print each Bundle.
        #[arg(long)]
        pretty: bool,
        /// Take the [mapping] settings (id namespace, time zone) from this config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Files of one or many messages, MLLP-framed or not, any separator.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the topics of a stopped broker's data directory, or of a running
    /// broker over the binary protocol (--server).
    Topics {
        /// Data directory (offline).
        #[arg(long, required_unless_present = "server", conflicts_with = "server")]
        data_dir: Option<PathBuf>,
        /// Protocol address of a running broker, host:port.
        #[arg(long)]
        server: Option<String>,
        /// Client token (--server; empty for a development broker).
        #[arg(long, default_value = "")]
        token: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow a topic over the binary protocol, printing JSON lines like dump.
    Tail {
        /// Topic name.
        topic: String,
        /// Where to start: earliest, latest, an offset, or @TIMESTAMP_MS.
        #[arg(long, default_value = "latest", value_parser = cli::remote::parse_start)]
        from: medbus_protocol::StartAt,
        /// Consumer group: resume where the group left off; records are acked once printed.
        #[arg(long)]
        group: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
        /// Protocol address, host:port.
        #[arg(long, default_value = "127.0.0.1:7575")]
        server: String,
        /// Client token (empty for a development broker).
        #[arg(long, default_value = "")]
        token: String,
    },
    /// Publish one file (or stdin) as one record; prints its offset once durable.
    Publish {
        /// Topic name.
        topic: String,
        /// File to publish; - or nothing: stdin.
        file: Option<PathBuf>,
        /// Protocol address, host:port.
        #[arg(long, default_value = "127.0.0.1:7575")]
        server: String,
        /// Client token (empty for a development broker).
        #[arg(long, default_value = "")]
        token: String,
    },
    /// Forget a consumer group on a topic (running broker; admin): its committed offset goes, and it no longer holds retention back.
    DeleteGroup {
        /// The consumer group.
        group: String,
        /// The topic it reads.
        #[arg(long)]
        topic: String,
        /// Protocol address, host:port.
        #[arg(long, default_value = "127.0.0.1:7575")]
        server: String,
        /// Client token (with `admin = true`; empty for a development broker).
        #[arg(long, default_value = "")]
        token: String,
    },
    /// Run a route, or a destination, again over a range of its source topic (running broker).
    Replay {
        /// The route to replay.
        #[arg(
            long,
            conflicts_with = "destination",
            required_unless_present = "destination"
        )]
        route: Option<String>,
        /// The destination to send the range to again.
        #[arg(long)]
        destination: Option<String>,
        /// First source offset.
        #[arg(long)]
        from: u64,
        /// Last source offset (default: the end of the topic).
        #[arg(long)]
        to: Option<u64>,
        /// The broker's binary-protocol address (the admin request goes there).
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        server: Option<String>,
        /// Client token (with `admin = true`; empty for a development broker).
        #[arg(long, default_value = "")]
        token: String,
        /// Or: the running broker's data directory (the request goes to its
        /// loopback HTTP endpoint).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write a consistent snapshot of a data directory (running broker or not) to a file.
    Backup {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Backup file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new, empty data directory.
    Restore {
        /// Backup file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print a stopped broker's topic as JSON lines.
    Dump {
        /// Topic name.
        topic: String,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// First offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most records to print.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Load generator: drive a broker (or --spawn one) and report throughput and latency.
    Bench {
        #[command(subcommand)]
        mode: medbus::bench::BenchCommand,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("medbus: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text
/// the message already holds (most of ours embed their source).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, data_dir } => serve(config, data_dir),
        Command::CheckConfig { file } => match medbus_config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Send {
            to,
            timeout,
            verbose,
            files,
        } => {
            let summary = cli::send::run(&cli::send::SendOptions {
                to: to.clone(),
                files,
                timeout: Duration::from_secs(timeout.max(1)),
                max_ack: 1 << 20,
                verbose,
            })?;
            println!(
                "sent {} messages to {to}: {}",
                summary.sent,
                summary.describe()
            );
            Ok(if summary.all_accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::DeleteGroup {
            group,
            topic,
            server,
            token,
        } => {
            let remote = cli::remote::Remote { server, token };
            admin_answer(
                "delete-group",
                cli::remote::delete_group(&remote, &group, &topic),
                |()| println!("group {group:?} on {topic:?} deleted"),
            )
        }
        Command::Replay {
            route,
            destination,
            from,
            to,
            server,
            token,
            data_dir,
        } => {
            let (kind, name) = match (route, destination) {
                (Some(r), _) => ("route", r),
                (None, Some(d)) => ("destination", d),
                (None, None) => return Ok(ExitCode::from(2)),
            };
            if let Some(server) = server {
                let remote = cli::remote::Remote { server, token };
                return admin_answer(
                    "replay",
                    cli::remote::replay(&remote, kind == "destination", &name, from, to),
                    |summary| println!("{summary}"),
                );
            }
            let Some(data_dir) = data_dir else {
                return Ok(ExitCode::from(2));
            };
            let http = cli::admin::broker_http(&data_dir)?;
            let mut path = format!("/api/replay/{kind}/{name}?from={from}");
            if let Some(to) = to {
                path.push_str(&format!("&to={to}"));
            }
            match cli::admin::request(&http, "POST", &path) {
                Ok(body) => {
                    println!("{}", body.trim());
                    Ok(ExitCode::SUCCESS)
                }
                Err(cli::admin::AdminError::Refused { status: 400, body }) => {
                    eprintln!("medbus replay: {body}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Backup { data_dir, out } => {
            let s = cli::backup::backup(&data_dir, &out)?;
            println!(
                "backup {}: {} entries, {} bytes",
                out.display(),
                s.entries,
                s.bytes
            );
            if s.damaged > 0 {
                eprintln!(
                    "medbus backup: {} records damaged on disk were left out (see the log for their topics and offsets)",
                    s.damaged
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { input, data_dir } => {
            let s = cli::backup::restore(&input, &data_dir)?;
            println!(
                "restored {} into {}: {} trees, {} entries",
                input.display(),
                data_dir.display(),
                s.trees,
                s.entries
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert {
            pretty,
            config,
            files,
        } => {
            let config = match &config {
                Some(p) => match medbus_config::load(p) {
                    Ok(c) => c,
                    Err(errors) => {
                        eprintln!("{errors}");
                        return Ok(ExitCode::from(2));
                    }
                },
                None => medbus_config::embedded_default(),
            };
            let opts = medbus::server::convert_options(&config);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary =
                cli::convert::run(&files, pretty, &opts, &mut out, &mut std::io::stderr())?;
            std::io::Write::flush(&mut out)?;
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Topics {
            data_dir,
            server,
            token,
            json,
        } => {
            let topics = match (server, data_dir) {
                (Some(server), _) => cli::remote::topics(&cli::remote::Remote { server, token })?,
                (None, Some(dir)) => cli::topics::run(&dir)?,
                (None, None) => anyhow::bail!("give --data-dir or --server"),
            };
            if json {
                println!("{}", serde_json::to_string(&topics)?);
            } else {
                print!("{}", cli::topics::render(&topics));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            topic,
            from,
            group,
            count,
            server,
            token,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::LineWriter::new(stdout.lock());
            let remote = cli::remote::Remote { server, token };
            let options = cli::remote::TailOptions {
                topic,
                start: from,
                group,
                count,
            };
            cli::remote::tail(&remote, &options, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            topic,
            file,
            server,
            token,
        } => {
            let remote = cli::remote::Remote { server, token };
            let offset = cli::remote::publish(&remote, &topic, file.as_deref())?;
            println!("{offset}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump {
            topic,
            data_dir,
            from,
            count,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            cli::dump::run(&data_dir, &topic, from, count, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { mode } => match medbus::bench::run(&mode) {
            Ok(report) => {
                print!("{}", report.render(mode.json()));
                Ok(if report.errors() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Err(e) => {
                eprintln!("medbus bench: {e}");
                Ok(ExitCode::from(e.exit_code()))
            }
        },
    }
}

fn serve(config_path: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match &config_path {
        Some(p) => match medbus_config::load(p) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::from(2));
            }
        },
        None => medbus_config::embedded_default(),
    };
    // The text the running config came from: a reload compares against it
    // to name the changes it does not apply.
    let running_text = config_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(&config.data_dir));
    raise_open_files_limit(*config.storage.max_topics.get_ref());
    let system = actix::System::new();
    let outcome = system.block_on(async {
        let endpoint = medbus::server::start_endpoint(&config).context("cannot start")?;
        println!("http endpoint on {}", endpoint.addr);
        let started = tokio::select! {
            s = medbus::server::start(&config, &data_dir, &endpoint) => Some(s.context("cannot start")?),
            s = wait_for_shutdown_signal() => { s?; None }
        };
        let Some(server) = started else {
            return Ok::<_, anyhow::Error>(None);
        };
        println!(
            "medbus {} serving; data dir {} (durability {})",
            env!("CARGO_PKG_VERSION"),
            data_dir.display(),
            config.storage.durability.as_str()
        );
        for l in &server.listeners {
            println!("mllp listener {:?} on {} -> topic {}", l.name, l.addr, l.topic);
        }
        if let Some(addr) = server.protocol {
            println!("protocol listener on {addr}");
        }
        if let Some(addr) = server.fhir {
            println!("fhir gateway on {addr}");
        }
        for r in server.route_names() {
            println!("route {r:?} running");
        }
        for d in server.destination_names() {
            println!("destination {d:?} running");
        }
        let broker_file = data_dir.join(cli::backup::BROKER_FILE);
        let _ = std::fs::write(
            &broker_file,
            serde_json::json!({"pid": std::process::id(), "http": endpoint.addr.to_string()}).to_string(),
        );
        println!("ready");
        tracing::info!("ready");
        let mut server = server;
        loop {
            match wait_for_signal().await? {
                Signal::Stop => break,
                Signal::Reload => {
                    if let Some(config) =
                        reload(config_path.as_deref(), running_text.as_deref(), &mut server).await
                    {
                        if let Some(view) = endpoint.state.broker.get() {
                            if let Ok(mut c) = view.config.write() {
                                *c = std::sync::Arc::new(config);
                            }
                        }
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&broker_file);
        // Not ready first, so load balancers stop sending, while everything
        // (MLLP, the FHIR gateway, routes) still serves for the grace.
        endpoint.state.health.started.store(false, std::sync::atomic::Ordering::Release);
        let grace = config.http.shutdown_grace.0;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: /readyz now answers 503");
        tokio::time::sleep(grace).await;
        // Then MLLP: no new connections, each open one closed once the
        // message it is handling is answered.
        server
            .drain_listeners(config.storage.commit_timeout.0 + Duration::from_secs(1))
            .await;
        server.stop_routes().await;
        endpoint.handle.stop(true).await;
        Ok(Some(server))
    });
    let server = outcome?;
    // Stop actors, then let the committer finish and sync what is queued.
    actix::System::current().stop();
    drop(system);
    if let Some(server) = server {
        server.store.close();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Raise the soft limit on open files to the hard one: every topic keeps
/// two files open, and every connection one socket. Warn when even the
/// hard limit leaves too little room for `max_topics` topics.
fn raise_open_files_limit(max_topics: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Two files per topic, plus room for connections and the stores.
    let wanted = (max_topics as u64).saturating_mul(2).saturating_add(1024);
    if limit < wanted {
        tracing::warn!(
            open_files_limit = limit,
            max_topics,
            "the open-files limit may be reached before storage.max_topics: raise it (ulimit -n, LimitNOFILE) or lower max_topics"
        );
    }
}

/// The exit of an admin request over the protocol: `shown` prints its
/// answer; a request the broker refuses as invalid (unknown name, a group
/// still in use …) is a usage error (exit 2) with the broker's message.
fn admin_answer<T>(
    command: &str,
    answer: Result<T, cli::remote::RemoteError>,
    shown: impl FnOnce(T),
) -> anyhow::Result<ExitCode> {
    match answer {
        Ok(v) => {
            shown(v);
            Ok(ExitCode::SUCCESS)
        }
        Err(cli::remote::RemoteError::Client(medbus_protocol::client::ClientError::Server {
            code,
            message,
        })) if code == medbus_protocol::ErrorCode::InvalidRequest.as_u16() => {
            eprintln!("medbus {command}: {message}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM / SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

async fn wait_for_signal() -> anyhow::Result<Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    tokio::select! {
        s = wait_for_shutdown_signal() => { s?; Ok(Signal::Stop) }
        _ = hup.recv() => Ok(Signal::Reload),
    }
}

/// SIGHUP: re-read the config file; if it is valid, replace the routes;
/// otherwise keep the running ones and log every problem.
async fn reload(
    config_path: Option<&std::path::Path>,
    running_text: Option<&str>,
    server: &mut medbus::server::Server,
) -> Option<medbus_config::Config> {
    let Some(path) = config_path else {
        tracing::warn!("SIGHUP ignored: running on the embedded default config, nothing to reload");
        return None;
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match medbus_config::load(path) {
        Ok(config) => {
            server.reload_routes(&config).await;
            println!("reloaded routes from {}", path.display());
            // What a reload does not apply is said, not silently ignored.
            let pending = medbus_config::restart_needed(running_text.unwrap_or_default(), &text);
            if !pending.is_empty() {
                tracing::warn!(
                    changed = ?pending,
                    "changes outside routes, destinations and [mapping] take effect at the next restart"
                );
                eprintln!(
                    "medbus: {} changed: restart to apply (a reload applies routes, destinations and [mapping] only)",
                    pending.join(", ")
                );
            }
            Some(config)
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!("config reload refused: keeping the running routes");
            eprintln!("{errors}");
            None
        }
    }
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
