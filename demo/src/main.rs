//! `posmon-demo`: everything on this machine, with nothing to set up. A collector, one real agent
//! probing two real local targets (the collector itself and a stand-in for a payment host that
//! the demo takes down and brings back on a schedule), a simulated fleet with scripted incidents,
//! and the URLs printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use posmon_agent::config::{AgentConfig, ComponentConfig, LabelsConfig, TargetConfig};
use posmon_agent::run::Agent;
use posmon_collector::config::{Config, VersionRule};
use posmon_collector::http::{serve, AppState};
use posmon_collector::secret::load_keyring;
use posmon_simulator::load::{LoadConfig, Sink};
use posmon_simulator::scenario::Scenario;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "posmon-demo",
    version,
    about = "Runs a posmon collector and one real agent on this machine, with a local payment-host stand-in that goes down and comes back, and prints where to look."
)]
struct Cli {
    /// Address for the collector; when it is taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the demo's state; a new temporary one when omitted.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds the payment-host stand-in stays up, then down, in turn.
    #[arg(long, default_value_t = 40)]
    outage_period_seconds: u64,
    /// Simulated terminals beside the real agent (0 for none).
    #[arg(long, default_value_t = 300)]
    simulated_terminals: u64,
    /// Seconds between two reports of one simulated terminal.
    #[arg(long, default_value_t = 10.0)]
    simulated_interval_seconds: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSMON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("posmon-demo: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = match cli.data_dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("posmon-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;

    let listener = match TcpListener::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind(SocketAddr::new(cli.listen.ip(), 0))
            .await
            .context("cannot listen on a loopback port")?,
    };
    let collector_address = listener.local_addr()?;
    let mut config = Config {
        listen: collector_address,
        data_dir: data_dir.join("collector"),
        version_policy: vec![VersionRule {
            component: "pos_app".into(),
            model: None,
            minimum: "2.4.0".into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        }],
        ..Config::default()
    };
    // The demo's terminals report every 5 to 10 s: a terminal is silent after 30 s.
    config.diagnosis.report_interval_seconds =
        cli.simulated_interval_seconds.ceil().max(1.0) as u64;
    let keyring = load_keyring(&config, None)?;
    let fleet_key = keyring.current().clone();
    let token = posmon_protocol::terminal_token(&fleet_key, "DEMO-0001");
    let state = Arc::new(AppState::open(config, keyring, None)?);
    let collector = tokio::spawn(serve(listener, state, None, std::future::pending()));

    let payment_host = TcpListener::bind("127.0.0.1:0").await?;
    let payment_address = payment_host.local_addr()?;
    tokio::spawn(flapping_host(
        payment_host,
        Duration::from_secs(cli.outage_period_seconds),
    ));

    let version_file = data_dir.join("pos_app.version");
    std::fs::write(&version_file, "version=V2.3.9_20240501\n")?;
    let agent_config = AgentConfig {
        terminal_id: "DEMO-0001".into(),
        collector_url: format!("http://{collector_address}"),
        token: Some(token.clone()),
        token_file: None,
        state_dir: data_dir.join("agent"),
        report_interval_seconds: 5,
        // The demo is on loopback, not a metered SIM card: the flapping payment host is probed
        // every 5 s (the defaults probe every 10 minutes and watch the POS app's connections).
        probe_interval_seconds: 5,
        failing_probe_interval_seconds: 5,
        probe_timeout_seconds: 2,
        labels: LabelsConfig {
            merchant: Some("Demo Coffee 示范咖啡".into()),
            model: Some("PAX-A920".into()),
            region: Some("cn-east-sh".into()),
            carrier: Some("china-mobile".into()),
            ..LabelsConfig::default()
        },
        targets: vec![
            TargetConfig {
                name: "payment-host".into(),
                address: payment_address.to_string(),
                tls: false,
                attempts: None,
                ca_file: None,
                contact: None,
            },
            TargetConfig {
                name: "collector".into(),
                address: format!("http://{collector_address}/healthz"),
                tls: false,
                attempts: None,
                ca_file: None,
                contact: None,
            },
        ],
        components: vec![ComponentConfig {
            name: "pos_app".into(),
            file: Some(version_file),
            command: None,
            properties: None,
            key: None,
            regex: Some(r"version=(\S+)".into()),
            timeout_seconds: 5,
        }],
        ..AgentConfig::example()
    };
    agent_config.validate()?;
    let agent = Agent::new(agent_config, &token)?;
    tokio::spawn(agent.run(std::future::pending()));

    if cli.simulated_terminals > 0 {
        anyhow::ensure!(
            cli.simulated_interval_seconds.is_finite() && cli.simulated_interval_seconds > 0.0,
            "--simulated-interval-seconds must be above 0"
        );
        let scenario = demo_scenario().context("the demo's incident script is invalid")?;
        let load = LoadConfig {
            collector_url: format!("http://{collector_address}"),
            sink: Sink::Posmon,
            key: fleet_key,
            terminals: cli.simulated_terminals,
            rate_per_second: cli.simulated_terminals as f64 / cli.simulated_interval_seconds,
            duration: None,
            concurrency: 8,
            seed: 1,
            id_prefix: "SIM-".into(),
            scenario,
            request_timeout: Duration::from_secs(10),
        };
        tokio::spawn(async move {
            match posmon_simulator::load::run(load, std::future::pending()).await {
                Ok(summary) => println!("[demo] the simulated fleet stopped: {}", summary.render()),
                Err(error) => println!("[demo] the simulated fleet could not start: {error}"),
            }
        });
    }

    let base = format!("http://{collector_address}");
    println!("posmon demo is running (state in {}).", data_dir.display());
    println!();
    println!("  Dashboard:   {base}/");
    println!("  Terminals:   {base}/api/v1/terminals");
    println!(
        "  Terminal:    {base}/#/terminal/DEMO-0001   (API: {base}/api/v1/terminals/DEMO-0001)"
    );
    println!("  Findings:    {base}/api/v1/findings");
    println!("  Metrics:     {base}/metrics");
    println!();
    println!("One agent (terminal DEMO-0001) reports every 5 s. Its POS app (V2.3.9) is below the");
    println!(
        "policy minimum 2.4.0, so outdated.pos_app is open; the payment host at {payment_address}"
    );
    println!(
        "goes down for {0} s every {0} s, opening and closing env.network.host_refused.",
        cli.outage_period_seconds
    );
    if cli.simulated_terminals > 0 {
        println!(
            "{} simulated terminals (SIM-0000000 …) report every {} s with scripted incidents that",
            cli.simulated_terminals, cli.simulated_interval_seconds
        );
        println!("repeat every five minutes: a regional payment-host outage, broken routers, DNS");
        println!(
            "failures, latency, loss, old apps, overheating, full disks, missing card readers,"
        );
        println!("silent terminals and late backfills. The regional outage is one banner on the");
        println!(
            "overview naming the region and the acquirer, its terminal findings folded under it."
        );
    }
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        result = collector => {
            result.context("the collector task failed")?.context("the collector stopped")?;
        }
        _ = tokio::signal::ctrl_c() => println!("Stopped."),
    }
    Ok(())
}

/// Accepts connections for `period`, then refuses them (listener closed) for `period`, forever.
async fn flapping_host(listener: TcpListener, period: Duration) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    loop {
        if let Some(open) = listener.take() {
            let _ = tokio::time::timeout(period, async {
                loop {
                    let _ = open.accept().await;
                }
            })
            .await;
        }
        println!(
            "[demo] payment host {address} is DOWN for {} s",
            period.as_secs()
        );
        tokio::time::sleep(period).await;
        match TcpListener::bind(address).await {
            Ok(open) => {
                println!("[demo] payment host {address} is UP again");
                listener = Some(open);
            }
            Err(error) => println!("[demo] cannot reopen the payment host {address}: {error}"),
        }
    }
}

fn demo_scenario() -> anyhow::Result<Scenario> {
    let scenario: Scenario = toml::from_str(include_str!("incidents.toml"))?;
    scenario.validate()?;
    Ok(scenario)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_script_is_valid() {
        let scenario = super::demo_scenario().unwrap();
        assert!(scenario.incidents.len() >= 10);
    }
}
