//! The command line: parse arguments, merge config file → environment → flags, run a command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::http::auth::Role;
use crate::http::auth::{ViewerAuth, VIEWER_TOKEN_ENV};
use crate::http::{serve, AppState};
use crate::secret::{
    load_admin_token, load_existing_keyring, load_keyring, ADMIN_TOKEN_ENV, SECRET_ENV,
};

#[derive(Parser)]
#[command(
    name = "posmon-collector",
    version,
    about = "Collects health reports from POS terminals, diagnoses why a terminal cannot take payments, and serves the API and Prometheus metrics.",
    after_help = "Start with `posmon-collector print-default-config > collector.toml`, edit it, then `posmon-collector serve --config collector.toml`. Give each terminal's agent the token printed by `posmon-collector token TERMINAL_ID`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: accept reports, diagnose terminals, serve the API and /metrics.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port) [config: listen].
        #[arg(long, env = "POSMON_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Print the default configuration, every option with a comment, to standard output.
    PrintDefaultConfig,
    /// Print the token a terminal's agent authenticates with: under the current fleet key, at
    /// the terminal's current generation (raised by `POST /api/v1/terminals/{id}/revoke`). Reads
    /// the fleet secret and the state database of the collector's data directory (read-only);
    /// never creates a secret.
    Token {
        #[command(flatten)]
        common: Common,
        /// The terminal's id, exactly as its agent reports it.
        #[arg(value_name = "TERMINAL_ID")]
        terminal_id: String,
    },
    /// Manage the user accounts in the data directory's state database; a running collector
    /// sees the change at its next request. A password is read from the environment variable
    /// POSMON_PASSWORD or else from the first line of standard input — never from the command
    /// line, where other users of the machine could see it.
    User {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user: `user add li --role operator` (roles: viewer, operator, admin).
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List the users, their roles and whether they are disabled.
    List,
    /// Change a user's role.
    SetRole {
        name: String,
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Disable a user: no sign-in, no API token of theirs works, their sessions end.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Set a new password (ends the user's sessions).
    Reset { name: String },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| "must be viewer, operator or admin".to_string())
}

/// The environment variable a new password may come from.
pub const PASSWORD_ENV: &str = "POSMON_PASSWORD";

/// A password from `POSMON_PASSWORD`, else the first line of standard input.
fn read_password() -> anyhow::Result<crate::users::Password> {
    let text = match std::env::var(PASSWORD_ENV) {
        Ok(text) => text,
        Err(_) => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("Password (shown as you type; or set {PASSWORD_ENV}): ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    Ok(crate::users::Password::new(text)?)
}

fn run_user(common: &Common, action: UserAction) -> anyhow::Result<()> {
    let config = common.load()?;
    let users = crate::users::Users::open(&config.data_dir).with_context(|| {
        format!(
            "cannot open the user accounts in the data directory {}",
            config.data_dir.display()
        )
    })?;
    let show = |user: &crate::users::User| {
        println!(
            "{}\t{}\t{}",
            user.name,
            user.role.as_str(),
            if user.disabled { "disabled" } else { "enabled" }
        );
    };
    match action {
        UserAction::Add { name, role } => {
            crate::users::check_name(&name)?;
            let password = read_password()?;
            let user = users.add(&name, role, &password, time::OffsetDateTime::now_utc())?;
            eprintln!("Added {} with the {} role.", user.name, user.role.as_str());
        }
        UserAction::List => {
            for user in users.list()? {
                show(&user);
            }
        }
        UserAction::SetRole { name, role } => show(&users.set_role(&name, role)?),
        UserAction::Disable { name } => show(&users.set_disabled(&name, true)?),
        UserAction::Enable { name } => show(&users.set_disabled(&name, false)?),
        UserAction::Reset { name } => {
            if users.get(&name)?.is_none() {
                anyhow::bail!("no user named {name}");
            }
            let password = read_password()?;
            show(&users.reset_password(&name, &password)?);
        }
    }
    Ok(())
}

#[derive(Args)]
struct Common {
    /// Configuration file (TOML); defaults apply when omitted.
    #[arg(long, env = "POSMON_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Directory for the fleet secret and state [config: data_dir].
    #[arg(long, env = "POSMON_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        Ok(config)
    }
}

fn env_secret() -> Option<String> {
    std::env::var(SECRET_ENV).ok()
}

/// Runs the command line; the binary maps the error to an exit code.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Token {
            common,
            terminal_id,
        } => {
            posmon_protocol::validate::check_terminal_id(&terminal_id, "TERMINAL_ID")?;
            let config = common.load()?;
            let (keyring, source) = load_existing_keyring(&config, env_secret())?;
            let generation = crate::revocation::stored_minimum(&config.data_dir, &terminal_id)
                .with_context(|| {
                    format!(
                        "cannot read the revoked tokens from the data directory {}",
                        config.data_dir.display()
                    )
                })?;
            // Which collector's tokens these are, on stderr: stdout holds only the token.
            eprintln!(
                "Data directory {}; fleet secret from {source}, key {}; terminal {terminal_id} is at token generation {generation}.",
                absolute(&config.data_dir).display(),
                keyring.current().id(),
            );
            println!(
                "{}",
                posmon_protocol::terminal_token_at(keyring.current(), &terminal_id, generation)
            );
            Ok(())
        }
        Command::User { common, action } => run_user(&common, action),
        Command::Serve { common, listen } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run_server(config))
        }
    }
}

/// `path` made absolute against the working directory, for messages (unchanged if that fails).
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn init_logging() {
    // The HTTP libraries log a peer's protocol misbehaviour (a reset flood, a bad frame) as
    // warnings: anybody could fill the disk with them. The collector counts and answers such
    // peers itself; their own lines only from `POSMON_LOG=h2=debug` and the like.
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSMON_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,h2=error,hyper=error,hyper_util=error,rustls=error",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Raises the open-file limit and keeps `limits.max_connections` below what it leaves usable.
fn fit_connections_to_open_files(config: &mut Config) {
    use crate::http::listener::{raise_open_file_limit, usable_connections, FD_RESERVE};
    let soft = match raise_open_file_limit() {
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "Open-file limits in force.");
            soft
        }
        Err(error) => {
            tracing::warn!(%error, "Cannot read or raise the open-file limit; assuming 1024.");
            1024
        }
    };
    let requested = config.limits.max_connections;
    let (usable, lowered) = usable_connections(requested, soft);
    if lowered {
        tracing::warn!(
            requested,
            usable,
            open_file_limit = soft,
            reserved = FD_RESERVE,
            "limits.max_connections is above what the open-file limit leaves usable; it is lowered (raise the hard limit, e.g. LimitNOFILE= in the systemd unit)."
        );
        config.limits.max_connections = usable;
    }
}

async fn run_server(mut config: Config) -> anyhow::Result<()> {
    fit_connections_to_open_files(&mut config);
    let keyring = load_keyring(&config, env_secret())?;
    let tls = config
        .tls
        .files()
        .map(|(cert_file, key_file)| crate::tls::server_config(cert_file, key_file, &config.tls))
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the listening address")?;
    // Report datagrams on the same address and port number, unless configured otherwise; a
    // failure to bind leaves HTTP(S) alone.
    let datagram_socket = match config.datagram.address(address) {
        Some(datagram_address) => crate::datagram::bind(datagram_address).await,
        None => None,
    };
    let admin_token = load_admin_token(&config, std::env::var(ADMIN_TOKEN_ENV).ok())?;
    let viewer = ViewerAuth::load(&config, std::env::var(VIEWER_TOKEN_ENV).ok())
        .context("cannot load the viewer credentials")?;
    let oidc = crate::oidc::Oidc::load(&config).context("cannot start OpenID Connect sign-in")?;
    let state = Arc::new(
        AppState::open(config, keyring, admin_token)
            .context("cannot start the collector")?
            .with_viewer_auth(viewer)
            .with_oidc(oidc),
    );
    log_access(&state)?;
    // One line on standard output that scripts and tests read to find the port.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "posmon-collector listening on {scheme}://{address}")
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    tracing::info!(%address, "Serving the dashboard at {scheme}://{address}/, the API at {scheme}://{address}/api/v1/terminals and metrics at {scheme}://{address}/metrics.");
    let datagrams = datagram_socket
        .map(|socket| tokio::spawn(crate::datagram::serve(socket, Arc::clone(&state))));
    let served = serve(listener, state, tls, shutdown_signal()).await;
    if let Some(datagrams) = datagrams {
        datagrams.abort();
    }
    served.context("the HTTP server failed")?;
    tracing::info!("Stopped.");
    Ok(())
}

/// Says at start who may read and who may change what.
fn log_access(state: &AppState) -> anyhow::Result<()> {
    let users = state
        .accounts
        .users
        .list()
        .context("cannot read the user accounts")?;
    let enabled = users.iter().filter(|user| !user.disabled);
    let admins = enabled
        .clone()
        .filter(|user| user.role == Role::Admin)
        .count();
    let admin_token = state.admin_token.is_some();
    if users.is_empty() && state.viewer.is_none() {
        tracing::warn!(
            admin_token,
            "No user account and no viewer credential exist: the dashboard and the read API are open to everyone who can reach this address, and only the admin token (if configured) can change anything. Create the first admin with `posmon-collector user add NAME --role admin` (password on standard input)."
        );
    } else {
        tracing::info!(
            users = enabled.count(),
            admins,
            viewer_credential = state.viewer.is_some(),
            admin_token,
            "Sign-in required: users sign in at /login; scripts send an API token, the viewer token or the admin token."
        );
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down.");
}
