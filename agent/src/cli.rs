//! The command line: parse arguments, load and check the config, run a command.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{AgentConfig, DEFAULT_CONFIG, TOKEN_ENV};
use crate::cycle::Measurer;
use crate::probe::Ladder;
use crate::render::{render, render_verdict, Lang};
use crate::report::build;
use crate::run::Agent;
use crate::status::{exit_code, verdict, Verdict};
use posmon_diagnosis::thresholds::Thresholds;
use posmon_diagnosis::{diagnose, Policy};

#[derive(Parser)]
#[command(
    name = "posmon-agent",
    version,
    about = "Watches a POS terminal's network path, software versions and device health, and reports to the posmon collector.",
    after_help = "Start with `posmon-agent print-default-config > agent.toml`, set terminal_id, collector_url and the token, check it with `posmon-agent check-config agent.toml`, then `posmon-agent run --config agent.toml`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: probe every interval and push reports to the collector.
    Run {
        /// Configuration file (TOML).
        #[arg(long, env = "POSMON_AGENT_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Measure now and print the report: the path ladder per target, versions, device and
    /// peripherals, then the diagnosis: each problem, whom to call and what to do. Sends
    /// nothing to the collector and needs no token. Exit status: 0 can take payments, 1 at
    /// risk, 2 cannot take payments, 3 the probe could not run (bad arguments or config).
    Probe {
        /// Configuration file (TOML).
        #[arg(long, env = "POSMON_AGENT_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// One cycle, then exit (without it, one cycle every report interval until Ctrl-C).
        #[arg(long)]
        once: bool,
        /// Print the raw report as JSON (as it would be sent), with the local verdict under
        /// "verdict", instead of the readable form.
        #[arg(long)]
        json: bool,
        /// The language of the diagnosis: en, zh-CN, or both (English then Chinese).
        #[arg(long, value_enum, default_value = "both", value_name = "LANG")]
        lang: Lang,
    },
    /// Fetch this terminal's token from the collector with a one-time enrollment code (an
    /// administrator creates it: POST /api/v1/enrollments) and write it to the config's
    /// token_file (mode 0640; as root, the group of its directory). The code, e.g.
    /// 7K3Q-M2XD-9RTB-04HF (case and dashes do not matter), comes from the environment
    /// variable POSMON_ENROLL_CODE or else one line of standard input — never the command
    /// line, which `ps` and the shell's history show.
    Enroll {
        /// Configuration file (TOML): terminal_id, collector_url, TLS settings, token_file.
        #[arg(long, env = "POSMON_AGENT_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Replace an existing token file.
        #[arg(long)]
        force: bool,
    },
    /// Print an example configuration, every option with a comment and its default.
    PrintDefaultConfig,
    /// Check a configuration file and report the first problem, naming its key.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
}

/// The exit status of a command that could not run: bad arguments (for every command) or,
/// for `probe`, a bad config or a failure of the probe itself. 1 and 2 are `probe`'s verdicts.
pub const EXIT_COULD_NOT_RUN: u8 = 3;

/// Runs the command line and returns the process's exit status: 0 done, 1 failed (for
/// `probe`: 0 can pay, 1 at risk, 2 cannot pay), 3 could not run. Errors are printed with their
/// chain.
pub fn run() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version print to stdout and succeed; a usage error is 3, not
            // clap's 2, which `probe` uses for "cannot take payments".
            return if error.use_stderr() {
                EXIT_COULD_NOT_RUN
            } else {
                0
            };
        }
    };
    let probing = matches!(cli.command, Command::Probe { .. });
    match command(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("posmon-agent: error: {error:#}");
            if probing {
                EXIT_COULD_NOT_RUN
            } else {
                1
            }
        }
    }
}

/// Runs one command; its exit status when it ran.
fn command(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(0)
        }
        Command::CheckConfig { config } => {
            let loaded = AgentConfig::from_file(&config)?;
            read_token(&loaded)?;
            // Reads every ca_file and the client certificate, so that a bad file is found now
            // rather than at run time.
            Ladder::new(&loaded)?;
            crate::run::check_delivery(&loaded)?;
            println!(
                "{}: ok (terminal {}, {} targets, {} components, reporting to {} every {} s)",
                config.display(),
                loaded.terminal_id,
                loaded.targets.len(),
                loaded.components.len(),
                loaded.collector_url,
                loaded.report_interval_seconds
            );
            Ok(0)
        }
        Command::Probe {
            config,
            once,
            json,
            lang,
        } => {
            // What the running agent probes: the file with the collector's settings kept.
            let (_, config) = crate::control::Central::open(AgentConfig::from_file(&config)?);
            probe(&config, once, json, lang)
        }
        Command::Enroll { config, force } => {
            let loaded = AgentConfig::from_file(&config)?;
            let code = {
                use std::io::IsTerminal;
                let stdin = std::io::stdin();
                // A prompt only for a person at a terminal: piped input gets none.
                let interactive = stdin.is_terminal();
                crate::enroll::read_code(
                    std::env::var_os(crate::enroll::CODE_ENV),
                    &mut stdin.lock(),
                    interactive,
                    &mut std::io::stderr(),
                )?
            };
            let enrollment = runtime()?.block_on(crate::enroll::enroll(&loaded, &code, force))?;
            println!(
                "{}",
                crate::enroll::describe(&enrollment, &loaded.collector_url)
            );
            if let Some(warning) = &enrollment.warning {
                eprintln!("{warning}");
            }
            Ok(0)
        }
        Command::Run { config } => {
            let config = AgentConfig::from_file(&config)?;
            let token = read_token(&config)?;
            init_logging();
            runtime()?.block_on(async {
                let agent = Agent::new(config, &token)?;
                let config = agent.config();
                tracing::info!(
                    terminal = %config.terminal_id,
                    collector = %config.collector_url,
                    probe_interval_seconds = config.probe_interval().as_secs(),
                    report_interval_seconds = config.report_interval_seconds,
                    targets = config.targets.len(),
                    "Started: probing every probe interval, reporting on change and every report interval."
                );
                agent.run(shutdown_signal()).await;
                tracing::info!("Stopped.");
                Ok(0)
            })
        }
    }
}

/// One thread is plenty: the agent waits on the network almost all the time.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `posmon-agent probe`: measure, build the report as it would be sent, apply the shared rules
/// to it, print both; with `once`, return the verdict's exit status.
fn probe(config: &AgentConfig, once: bool, json: bool, lang: Lang) -> anyhow::Result<u8> {
    let thresholds = Thresholds::default();
    let policy = Policy {
        versions: &[],
        thresholds: &thresholds,
        roles: &config.readiness,
    };
    runtime()?.block_on(async {
        let mut measurer = Measurer::new(config)?;
        let mut ticker = tokio::time::interval(config.report_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let cycle = measurer.measure(None).await;
            // Sequence 0: this report is never sent, so it takes no number from the agent's.
            let report = build(config, 0, cycle);
            let signals = diagnose(&report, &policy);
            let verdict = verdict(
                &report,
                &signals,
                &config.readiness,
                &config.contacts,
                &config.targets,
            );
            if json {
                let output = ProbeOutput {
                    report: &report,
                    verdict: &verdict,
                };
                println!("{}", serde_json::to_string_pretty(&output)?);
            } else {
                println!("{}", render(&report));
                println!("{}", render_verdict(&verdict, lang));
            }
            if once {
                return Ok(exit_code(verdict.readiness));
            }
        }
    })
}

/// What `probe --json` prints: the report's fields as sent, and the verdict beside them.
#[derive(serde::Serialize)]
struct ProbeOutput<'a> {
    #[serde(flatten)]
    report: &'a posmon_protocol::Report,
    verdict: &'a Verdict,
}

/// The token from the environment, the config, or the token file, in that order.
fn read_token(config: &AgentConfig) -> anyhow::Result<String> {
    let token = if let Some(token) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        token
    } else if let Some(token) = &config.token {
        token.clone()
    } else if let Some(path) = &config.token_file {
        read_token_file(path)?
    } else {
        anyhow::bail!(
            "config key token_file: one of token, token_file or the {TOKEN_ENV} environment variable must be set"
        );
    };
    let token = token.trim().to_string();
    let well_formed =
        !token.is_empty() && token.len() <= 256 && token.chars().all(|c| c.is_ascii_graphic());
    anyhow::ensure!(
        well_formed,
        "the token must be 1 to 256 printable ASCII characters"
    );
    Ok(token)
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("config key token_file: cannot read {}", path.display()))?;
    anyhow::ensure!(
        metadata.len() <= 4096,
        "config key token_file: {} is larger than 4096 bytes",
        path.display()
    );
    std::fs::read_to_string(path)
        .with_context(|| format!("config key token_file: cannot read {}", path.display()))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSMON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
