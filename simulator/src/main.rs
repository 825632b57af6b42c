//! `posmon-simulator run`: see `--help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use posmon_protocol::FleetKey;
use posmon_simulator::eval;
use posmon_simulator::load::{run, LoadConfig, Sink};
use posmon_simulator::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "posmon-simulator",
    version,
    about = "Plays a fleet of POS terminals against a posmon collector, with scripted faults, and reports the rate it achieved and its errors.",
    after_help = "Example: posmon-simulator run --collector http://127.0.0.1:8080 --secret-file posmon-data/fleet-secret --terminals 10000 --rate 2000 --duration-seconds 60 --scenario simulator/examples/incidents.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send reports from N simulated terminals at a set rate for a set time.
    Run(RunArgs),
    /// Evaluate the diagnosis: play each incident type against a fresh collector and score the
    /// causes it localizes and the parties it calls (see simulator/eval/incidents.toml).
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The posmon-collector binary each case starts.
    #[arg(long, value_name = "FILE")]
    collector_binary: PathBuf,
    /// The incident types and their right answers.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "simulator/eval/incidents.toml"
    )]
    cases: PathBuf,
    /// Only the cases whose name contains one of these (repeatable).
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// Cases run at once (each is a collector and a fleet); default: the CPUs.
    #[arg(long)]
    parallel: Option<usize>,
    /// Seed of every simulated value.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the collectors keep their data and logs (kept after the run); a new temporary
    /// directory, removed at the end, when omitted.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Print the cases and totals as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Base URL of the collector (or of the store --sink names).
    #[arg(long, value_name = "URL")]
    collector: String,
    /// Where to send: a posmon collector, or, for side-by-side benchmarks, the same reports as
    /// Prometheus samples to a Pushgateway or VictoriaMetrics.
    #[arg(long, value_enum, default_value = "posmon")]
    sink: Sink,
    /// File holding the collector's fleet secret (its data_dir/fleet-secret); or set
    /// POSMON_FLEET_SECRET.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Id of the collector's current fleet key.
    #[arg(long, default_value = "k1")]
    key_id: String,
    /// Number of distinct terminals.
    #[arg(long, default_value_t = 1000)]
    terminals: u64,
    /// Reports per second over the whole fleet; 0 for as fast as the collector answers.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to run; until Ctrl-C when omitted.
    #[arg(long)]
    duration_seconds: Option<f64>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seed of every simulated value: the same seed plays the same fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prefix of the terminal ids (SIM-0000001, …).
    #[arg(long, default_value = "SIM-")]
    id_prefix: String,
    /// Scenario file with scripted incidents (see simulator/examples/incidents.toml).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 10.0)]
    request_timeout_seconds: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match main_result() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("posmon-simulator: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_result() -> anyhow::Result<ExitCode> {
    let args = match Cli::parse().command {
        Command::Run(args) => args,
        Command::Eval(args) => return evaluate(args),
    };
    let secret = match (&args.secret_file, std::env::var("POSMON_FLEET_SECRET")) {
        (_, Ok(secret)) if !secret.trim().is_empty() => secret,
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the fleet secret from {}", path.display()))?,
        // Stores other than posmon take no token; the key is then never used.
        (None, _) if args.sink != Sink::Posmon => "unused-fleet-secret".to_string(),
        (None, _) => anyhow::bail!("give --secret-file or set POSMON_FLEET_SECRET"),
    };
    let key = FleetKey::new(&args.key_id, secret.trim().as_bytes().to_vec())?;
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    let positive = |value: f64, name: &str| -> anyhow::Result<Duration> {
        anyhow::ensure!(value.is_finite() && value > 0.0, "--{name} must be above 0");
        Ok(Duration::from_secs_f64(value))
    };
    anyhow::ensure!(
        args.rate.is_finite() && args.rate >= 0.0,
        "--rate must be 0 or more"
    );
    let config = LoadConfig {
        collector_url: args.collector,
        sink: args.sink,
        key,
        terminals: args.terminals,
        rate_per_second: args.rate,
        duration: args
            .duration_seconds
            .map(|seconds| positive(seconds, "duration-seconds"))
            .transpose()?,
        concurrency: args.concurrency,
        seed: args.seed,
        id_prefix: args.id_prefix,
        scenario,
        request_timeout: positive(args.request_timeout_seconds, "request-timeout-seconds")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(run(config, async {
        let _ = tokio::signal::ctrl_c().await;
    }))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.render());
    }
    Ok(if summary.reports_accepted > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn evaluate(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let mut cases = eval::cases::from_file(&args.cases)?;
    if !args.only.is_empty() {
        cases.retain(|case| {
            args.only
                .iter()
                .any(|only| case.name.contains(only.as_str()))
        });
    }
    anyhow::ensure!(!cases.is_empty(), "no case to run");
    let parallel = args.parallel.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    anyhow::ensure!(parallel > 0, "--parallel must be above 0");
    let (work_dir, temporary) = match args.work_dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("posmon-eval-{}", std::process::id())),
            true,
        ),
    };
    let settings = eval::runner::Settings {
        collector_binary: args.collector_binary,
        work_dir: work_dir.clone(),
        parallel,
        seed: args.seed,
        poll_interval: Duration::from_secs(1),
    };
    let names: Vec<String> = cases.iter().map(|case| case.name.clone()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = std::time::Instant::now();
    // Interrupted, the cases' tasks are dropped, and with them their collectors (killed).
    let runs = runtime.block_on(async {
        tokio::select! {
            runs = eval::runner::run_all(settings, cases) => Some(runs),
            () = interrupted() => None,
        }
    });
    drop(runtime);
    let Some(runs) = runs else {
        if temporary {
            let _ = std::fs::remove_dir_all(&work_dir);
        }
        anyhow::bail!("interrupted");
    };
    let wall_seconds = started.elapsed().as_secs_f64();
    if temporary {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let totals = eval::totals(&runs);
    if args.json {
        let cases: Vec<serde_json::Value> = names
            .iter()
            .zip(&runs)
            .map(|(name, run)| match run {
                Ok(run) => serde_json::to_value(run).unwrap_or_default(),
                Err(error) => serde_json::json!({ "name": name, "error": error.to_string() }),
            })
            .collect();
        let body = serde_json::json!({
            "cases": cases,
            "totals": totals,
            "wall_seconds": wall_seconds,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", eval::render(&names, &runs, &totals, wall_seconds));
    }
    Ok(if totals.failed_cases == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
