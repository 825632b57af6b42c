//! The HTTP edge: the only part of the collector that knows HTTP and JSON. [`AppState::open`]
//! restores the state from the database; [`app`] builds the router from it; [`serve`] runs it
//! with the background work (the periodic fleet evaluation and the state writer) until
//! shutdown.

pub(crate) mod accounts;
pub(crate) mod admission;
mod alerts;
pub mod auth;
mod control;
mod credentials;
mod encoding;
mod enroll;
pub mod error;
mod history;
pub mod listener;
pub(crate) mod login;
pub(crate) mod oidc_login;
mod policy;
pub(crate) mod queries;
pub(crate) mod reports;
pub mod sessions;
pub(crate) mod views;
mod workflow;

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use posmon_protocol::Keyring;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tower_http::timeout::TimeoutLayer;

use crate::alert::{AlertError, Alerts};
use crate::config::{Config, VersionRule};
use crate::fleet::{Fleet, FleetLimits};
use crate::metrics::Metrics;
use crate::store::writer::{write_changes, Durability, Writer};
use crate::store::{Store, StoreError};
use crate::web;
use crate::web::trend::Trend;
use auth::ViewerAuth;
use posmon_diagnosis::findings::FindingEvent;

/// Finding events buffered for each subscriber; a subscriber that falls further behind
/// loses the oldest (and is told how many by the channel).
const EVENT_BUFFER: usize = 4096;

/// Why the collector cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alerts(#[from] AlertError),
    #[error(transparent)]
    Revocations(#[from] crate::revocation::RevocationError),
    #[error(transparent)]
    Enrollments(#[from] crate::enroll::EnrollError),
    #[error(transparent)]
    Users(#[from] crate::users::UserError),
}

/// Everything a request handler can reach.
pub struct AppState {
    pub config: Config,
    /// The fleet keys and the revoked token generations (`revocation.rs`).
    pub keyring: crate::revocation::Credentials,
    /// The legacy admin token (an admin actor named `admin-token`); `None`: none.
    pub(crate) admin_token: Option<String>,
    /// The user accounts, their sessions and the sign-in rate limit (`auth.rs`).
    pub(crate) accounts: sessions::Accounts,
    pub fleet: Arc<Fleet>,
    store: Arc<Store>,
    /// The version policy in force: the stored one, else the config's.
    policy: RwLock<Arc<Vec<VersionRule>>>,
    pub metrics: Arc<Metrics>,
    events: broadcast::Sender<FindingEvent>,
    /// One permit per report request in flight (`limits.max_concurrent_ingest`), taken by a
    /// request that named its terminal, once its token is checked.
    ingest_permits: Arc<tokio::sync::Semaphore>,
    /// The pool of report requests without the terminal header
    /// (`limits.max_concurrent_unidentified_ingest`).
    unidentified_permits: Arc<tokio::sync::Semaphore>,
    /// Requests in flight and the request rate of each authenticated terminal.
    pub(crate) fairness: Arc<admission::Fairness>,
    /// The same limits for each terminal's report datagrams, counted apart: datagrams (a
    /// replayed capture among them) never spend the terminal's HTTPS share.
    pub(crate) datagram_fairness: Arc<admission::Fairness>,
    /// The one-time enrollment codes (`enroll.rs`).
    enrollments: crate::enroll::Enrollments,
    /// Enrollment redemptions in flight (`http/enroll.rs`).
    redemption_permits: Arc<tokio::sync::Semaphore>,
    /// The failed redemptions of all senders (`enroll.rs`).
    failed_redemptions: crate::enroll::FailedRedemptions,
    /// Tickets for durable acknowledgements (`state.durable_acknowledgements`).
    durability: Arc<Durability>,
    /// Receivers, routes, the notification outbox and the silences.
    pub alerts: Arc<Alerts>,
    /// The fleet trend the dashboard draws.
    pub trend: Trend,
    /// History that lasts (`history/`): series, readiness changes, the trend, on disk.
    pub history: Arc<crate::history::History>,
    /// The legacy viewer credentials (token, basic-auth user); `None`: none.
    pub(crate) viewer: Option<ViewerAuth>,
    /// OpenID Connect sign-in (`[web.oidc]`); `None`: off.
    pub(crate) oidc: Option<Arc<crate::oidc::Oidc>>,
    /// When the collector last listened on this data before this run (since, until), as the
    /// store recorded it.
    previous_listening: Option<(OffsetDateTime, OffsetDateTime)>,
    /// Fleet control: configuration profiles, the agents' settings states, probe requests and
    /// the held long-polls (`control/`).
    pub control: Arc<crate::control::Control>,
    /// The per-terminal limits of the agents' control requests (long-poll, settings fetch),
    /// counted apart from their reports.
    pub(crate) control_fairness: Arc<admission::Fairness>,
    /// The problem workflow: acknowledgements, assignees, comments, the audit log
    /// (`workflow/`).
    pub workflow: Arc<crate::workflow::Workflow>,
}

impl AppState {
    /// Opens the state database in the data directory and restores the fleet from it.
    pub fn open(
        config: Config,
        keyring: Keyring,
        admin_token: Option<String>,
    ) -> Result<Self, StartError> {
        let metrics = Metrics::with_label_bounds(
            config.metrics.per_terminal_series,
            config.metrics.max_label_values,
            config.metrics.max_label_values_per_terminal,
        )?;
        let store = Store::open(&config.data_dir)?;
        let revocations = crate::revocation::Revocations::open(&config.data_dir)?;
        let enrollments = crate::enroll::Enrollments::open(&config.data_dir)?;
        let accounts =
            sessions::Accounts::new(crate::users::Users::open(&config.data_dir)?, &config.web);
        let (control, unreadable_profiles) = crate::control::Control::open(
            &config.data_dir,
            config.control.clone(),
            metrics.control.clone(),
        )?;
        for (table, _) in &unreadable_profiles {
            metrics.unreadable_rows.with_label_values(&[table]).inc();
        }
        let (mut restored, stored_policy) = store.load(config.limits.max_history_findings)?;
        // Workflow states and audit rows are written at once, findings a second later: after a
        // crash, ids the workflow saw are never given to new findings.
        let workflow = crate::workflow::Workflow::open(&config.data_dir)?;
        restored.next_finding_id = restored.next_finding_id.max(
            workflow
                .highest_finding_id()?
                .min(crate::store::FINDING_ID_MAX),
        );
        let previous_listening = store.last_listening();
        for (table, _) in &restored.unreadable {
            metrics.unreadable_rows.with_label_values(&[table]).inc();
        }
        let restored_terminals = restored.terminals.len();
        let fleet = Fleet::restore_with_limits(restored, FleetLimits::from_config(&config));
        if restored_terminals > 0 {
            tracing::info!(
                terminals = restored_terminals,
                "Restored the fleet state from the database."
            );
        }
        let policy = stored_policy.unwrap_or_else(|| config.version_policy.clone());
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        // tokio bounds a semaphore's permits; a larger configured number means "no limit".
        let permits = |wanted: usize| {
            Arc::new(tokio::sync::Semaphore::new(
                wanted.min(tokio::sync::Semaphore::MAX_PERMITS),
            ))
        };
        let ingest_permits = permits(config.limits.max_concurrent_ingest);
        let unidentified_permits = permits(config.limits.max_concurrent_unidentified_ingest);
        let fairness = Arc::new(admission::Fairness::new(
            config.limits.max_concurrent_ingest_per_terminal,
            config.limits.terminal_requests_per_minute,
            config.limits.terminal_request_burst,
        ));
        let datagram_fairness = Arc::new(admission::Fairness::new(
            config.limits.max_concurrent_ingest_per_terminal,
            config.limits.terminal_requests_per_minute,
            config.limits.terminal_request_burst,
        ));
        let control_fairness = Arc::new(admission::Fairness::new(
            config.limits.max_concurrent_ingest_per_terminal,
            config.limits.terminal_requests_per_minute,
            config.limits.terminal_request_burst,
        ));
        let metrics = Arc::new(metrics);
        let alerts = Alerts::open(&config.alerts, &config.data_dir, Arc::clone(&metrics))?;
        let history = crate::history::History::open(
            &config.data_dir,
            &config.history,
            metrics.history.clone(),
        )?;
        // The in-memory trend starts from the stored one: a restart keeps the last day.
        let trend = Trend::new(config.web.trend_points);
        for point in history.recent_trend(config.web.trend_points)? {
            trend.push(point);
        }
        Ok(AppState {
            ingest_permits,
            unidentified_permits,
            fairness,
            datagram_fairness,
            enrollments,
            redemption_permits: Arc::new(tokio::sync::Semaphore::new(
                enroll::REDEMPTIONS_IN_FLIGHT_MAX,
            )),
            failed_redemptions: crate::enroll::FailedRedemptions::new(
                crate::enroll::FAILED_REDEMPTIONS_BURST,
                crate::enroll::FAILED_REDEMPTIONS_PER_MINUTE,
                std::time::Instant::now(),
            ),
            durability: Arc::new(Durability::default()),
            config,
            keyring: crate::revocation::Credentials::new(keyring, revocations),
            admin_token,
            accounts,
            fleet: Arc::new(fleet),
            store: Arc::new(store),
            policy: RwLock::new(Arc::new(policy)),
            trend,
            history: Arc::new(history),
            metrics,
            events,
            alerts: Arc::new(alerts),
            viewer: None,
            oidc: None,
            previous_listening,
            control: Arc::new(control),
            control_fairness,
            workflow: Arc::new(workflow),
        })
    }

    /// Accepts the legacy `viewer` credentials (and closes the open reads).
    pub fn with_viewer_auth(mut self, viewer: Option<ViewerAuth>) -> Self {
        self.viewer = viewer;
        self
    }

    /// Accepts sign-ins with the OpenID Connect provider (and closes the open reads).
    pub fn with_oidc(mut self, oidc: Option<crate::oidc::Oidc>) -> Self {
        self.oidc = oidc.map(Arc::new);
        self
    }

    pub fn viewer_auth(&self) -> Option<&ViewerAuth> {
        self.viewer.as_ref()
    }

    /// Every finding change from now on: what a notifier subscribes to.
    pub fn subscribe(&self) -> broadcast::Receiver<FindingEvent> {
        self.events.subscribe()
    }

    fn publish(&self, events: Vec<FindingEvent>) {
        for event in events {
            self.metrics
                .finding_events
                .with_label_values(&[event.change.as_str()])
                .inc();
            // No subscriber is not an error: nobody is listening yet.
            let _ = self.events.send(event);
        }
    }

    pub fn version_policy(&self) -> Arc<Vec<VersionRule>> {
        Arc::clone(&self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stores and applies a new version policy, and re-judges every terminal's versions under
    /// it at once: its outdated findings follow the policy, not each terminal's next report.
    /// Returns how many findings opened and closed.
    fn set_version_policy(&self, rules: Vec<VersionRule>) -> Result<usize, StoreError> {
        self.store.save_policy(&rules)?;
        let rules = Arc::new(rules);
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&rules);
        let policy = posmon_diagnosis::Policy {
            versions: &rules,
            thresholds: &self.config.diagnosis,
            roles: &self.config.readiness,
        };
        let events =
            self.fleet
                .rejudge_versions(&policy, OffsetDateTime::now_utc(), &self.config.diagnosis);
        let changed = events.len();
        self.publish(events);
        Ok(changed)
    }

    /// One evaluation of the fleet at `now`: silence and upstream outages. The server runs it
    /// every `diagnosis.evaluation_interval_seconds`.
    pub fn evaluate(&self, now: OffsetDateTime) {
        let started = std::time::Instant::now();
        let events = self.fleet.evaluate(now, &self.config.diagnosis);
        self.metrics
            .evaluation_duration
            .observe(started.elapsed().as_secs_f64());
        self.publish(events);
    }

    /// Writes the changed state to the database now (the server's writer does it every
    /// second). Returns whether it succeeded.
    pub fn write_state(&self) -> bool {
        write_changes(
            &self.fleet,
            &self.store,
            &self.metrics,
            self.config.limits.max_history_findings,
            &mut None,
        )
    }
}

/// How long the remote writer may take to send its queue at shutdown.
const REMOTE_WRITE_STOP_GRACE: Duration = Duration::from_secs(5);

/// How long deliveries in progress may take to finish at shutdown.
const ALERT_STOP_GRACE: Duration = Duration::from_secs(5);

/// A request that takes longer than this is answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn app(state: Arc<AppState>) -> Router {
    // The agents' long-poll is held for up to `control.max_hold_seconds`: outside the request
    // timeout; and outside the security headers, which mean nothing to an agent and would
    // cost a SIM card's plan some 350 bytes an answer. Authenticated by the terminal's token.
    let long_poll = Router::new().route(
        posmon_protocol::control::CONTROL_PATH,
        get(control::agent_poll),
    );
    Router::new()
        .route(posmon_protocol::REPORTS_PATH, post(reports::post_reports))
        .route("/api/v1/terminals", get(queries::list_terminals))
        .route(
            "/api/v1/terminals/{terminal_id}",
            get(queries::get_terminal),
        )
        .route("/api/v1/findings", get(queries::list_findings))
        .route("/api/v1/fleet", get(queries::fleet))
        .merge(login::router())
        .merge(accounts::router())
        .merge(history::router())
        .merge(oidc_login::router())
        .merge(credentials::router())
        .merge(enroll::router())
        .route(
            "/api/v1/policy/versions",
            get(policy::get_versions).put(policy::put_versions),
        )
        .route(
            "/api/v1/alerts/notifications",
            get(alerts::list_notifications),
        )
        .route(
            "/api/v1/alerts/silences",
            get(alerts::list_silences).post(alerts::create_silence),
        )
        .route(
            "/api/v1/alerts/silences/{id}",
            get(alerts::get_silence).delete(alerts::expire_silence),
        )
        .merge(control::router())
        .merge(workflow::router())
        .route("/metrics", get(queries::metrics))
        .route("/healthz", get(queries::healthz))
        .merge(web::router())
        .fallback(queries::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_reader,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Outermost, so that every answer carries them, a timeout's 408 included.
        .layer(middleware::from_fn(web::headers::security_headers))
        .merge(long_poll)
        .with_state(state)
}

/// Serves the API on `listener` (over TLS when `tls` is given) until `shutdown` completes,
/// with the periodic fleet evaluation and the state writer running beside it; then finishes
/// in-flight requests and writes what is left.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let writer = Writer::start(
        Arc::clone(&state.fleet),
        Arc::clone(&state.store),
        Arc::clone(&state.metrics),
        state.config.limits.max_history_findings,
        Arc::clone(&state.durability),
    )?;
    // Silence is judged only over time the collector listens: from now on.
    let now = OffsetDateTime::now_utc();
    state.fleet.listen_from(now);
    if let Some((_, until)) = state.previous_listening {
        let seconds = (now - until).whole_seconds().max(0);
        tracing::info!(
            not_listening_since = %until,
            seconds,
            "Listening again: nothing was heard for {seconds} s, which is nobody's silence; each terminal gets its report interval plus its retry cap to come back."
        );
    }
    let evaluator = tokio::spawn(evaluate_periodically(Arc::clone(&state)));
    let notifier = state
        .alerts
        .start(
            Arc::clone(&state.fleet),
            Arc::clone(&state.workflow),
            state.subscribe(),
        )
        .map_err(std::io::Error::other)?;
    let trend = tokio::spawn(web::trend::sample_periodically(Arc::clone(&state)));
    let workflow = tokio::spawn(forget_closed_problems(Arc::clone(&state)));
    let remote_write = state
        .history
        .take_remote_sender()
        .map(|sender| tokio::spawn(sender.run()));
    let limits = listener::ConnectionLimits::from_config(&state.config.limits);
    let metrics = Arc::clone(&state.metrics);
    // Held long-polls end (answered empty) as the shutdown begins: the graceful wait is for
    // requests at work, not for agents waiting on news.
    let control = Arc::clone(&state.control);
    let shutdown = async move {
        shutdown.await;
        control.close();
    };
    let history = Arc::clone(&state.history);
    let router = app(state);
    let served = listener::accept_loop(listener, router, tls, limits, metrics, shutdown).await;
    evaluator.abort();
    trend.abort();
    workflow.abort();
    notifier.stop(ALERT_STOP_GRACE).await;
    if tokio::task::spawn_blocking(move || history.stop())
        .await
        .is_err()
    {
        tracing::error!("The history writer did not stop cleanly.");
    }
    // The writer's end closed the remote writer's queue: it sends what is left, for a while.
    if let Some(task) = remote_write {
        if tokio::time::timeout(REMOTE_WRITE_STOP_GRACE, task)
            .await
            .is_err()
        {
            tracing::warn!("Stopped before the remote writer sent all of its queue.");
        }
    }
    if tokio::task::spawn_blocking(move || writer.stop())
        .await
        .is_err()
    {
        tracing::error!("The state writer did not stop cleanly.");
    }
    served
}

async fn evaluate_periodically(state: Arc<AppState>) {
    let period = Duration::from_secs(state.config.diagnosis.evaluation_interval_seconds);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let state = Arc::clone(&state);
        // A pass over every terminal: off the async workers.
        let evaluated =
            tokio::task::spawn_blocking(move || state.evaluate(OffsetDateTime::now_utc())).await;
        if let Err(error) = evaluated {
            tracing::error!(%error, "The fleet evaluation failed.");
        }
    }
}

/// How often the workflow states of findings that closed are dropped.
const WORKFLOW_PRUNE_PERIOD: Duration = Duration::from_secs(60);

async fn forget_closed_problems(state: Arc<AppState>) {
    let mut ticks = tokio::time::interval(WORKFLOW_PRUNE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let state = Arc::clone(&state);
        let pruned = tokio::task::spawn_blocking(move || {
            state
                .workflow
                .retain_open(|terminal_id, id| state.fleet.is_open(terminal_id, id))
        })
        .await;
        match pruned {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Cannot drop the workflow states of closed findings.")
            }
            Err(error) => {
                tracing::error!(%error, "Dropping the workflow states of closed findings failed.")
            }
        }
    }
}
