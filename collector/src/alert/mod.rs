//! Alerting: when a finding opens, the party that must act hears of it once, with what it needs
//! to act; when it closes, it hears that too; nothing is lost when a receiver or the collector
//! is down.
//!
//! Data flows one way: fleet state → [`plan()`] (routes, groups, silences: pure) → [`outbox`]
//! (SQLite) → `delivery` (one task per receiver) → a receiver (one file each: `webhook.rs`,
//! `alertmanager.rs`, `dingtalk.rs`, `wecom.rs`, `feishu.rs`, `email.rs`). The notifier is
//! state-based: every second, and on each finding event, it compares the open findings with
//! what each receiver was told, so a lost event (the broadcast channel drops on lag) or a
//! restart loses nothing. It never alerts on replayed events (late history) and never reads or
//! changes fleet state beyond a snapshot of the open findings; it never logs a secret.

pub mod config;
mod delivery;
pub mod matchers;
pub mod message;
pub mod outbox;
pub mod plan;
pub mod receiver;
pub mod routing;
pub mod silences;

pub mod alertmanager;
pub mod dingtalk;
pub mod email;
pub mod escape;
pub mod feishu;
pub mod webhook;
pub mod wecom;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{broadcast, watch, Notify};

use self::config::AlertsConfig;
use self::message::AlertItem;
use self::outbox::{Filter, Outbox, Row};
use self::plan::{plan, Active, State};
use self::receiver::{Context, Receiver};
use self::routing::Routes;
use self::silences::{NewSilence, Silence};
use crate::fleet::{Fleet, TerminalLabels};
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::workflow::{Assignee, ProblemState, Workflow};
use posmon_diagnosis::findings::{Change, Finding, FindingEvent};
use posmon_diagnosis::localize::{parse_subject, Dimension};

/// How often the notifier compares the fleet with what was sent, without events.
const TICK: Duration = Duration::from_secs(1);
/// Close times remembered from events, for resolved messages (older ones use the time the
/// notifier noticed).
const CLOSED_AT_MAX: usize = 100_000;
/// How often finished notifications beyond `keep_notifications` are dropped.
const TRIM_EVERY_TICKS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("config key alerts.receivers {name:?}: {problem}")]
    Receiver { name: String, problem: String },
    #[error("cannot build the HTTP client for alerts: {0}")]
    Client(String),
}

pub(crate) struct ReceiverSlot {
    pub name: String,
    pub receiver: Box<dyn Receiver>,
    pub messages_per_minute: u32,
    pub wake: Arc<Notify>,
}

/// The alerting side of the collector: config, routes, receivers, the outbox and the silences.
/// What the collector says at start when no alert receiver is configured.
pub const NO_RECEIVER: &str = "No alert receiver is configured: findings open and close, but no notification will be sent. Add one under [[alerts.receivers]] in the collector's config (kind = webhook, dingtalk, wecom, feishu, email or alertmanager) and send findings to it with alerts.default_receiver or [[alerts.routes]] (see the README's Alerts section and `posmon-collector print-default-config`).";

pub struct Alerts {
    config: AlertsConfig,
    outbox: Outbox,
    routes: Routes,
    receivers: Vec<ReceiverSlot>,
    silences: RwLock<Arc<Vec<Silence>>>,
    metrics: Arc<Metrics>,
}

impl Alerts {
    /// Opens the outbox in `data_dir`'s database (migrated by the store) and builds the
    /// receivers, reading their secrets.
    pub fn open(
        config: &AlertsConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Alerts, AlertError> {
        let request_timeout = Duration::from_secs(config.request_timeout_seconds);
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("posmon-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| AlertError::Client(error.to_string()))?;
        let context = Context {
            client: &client,
            data_dir,
            request_timeout,
        };
        let mut receivers = Vec::with_capacity(config.receivers.len());
        for receiver_config in &config.receivers {
            let receiver = receiver::build(receiver_config, &context).map_err(|problem| {
                AlertError::Receiver {
                    name: receiver_config.name.clone(),
                    problem,
                }
            })?;
            receivers.push(ReceiverSlot {
                name: receiver_config.name.clone(),
                receiver,
                messages_per_minute: receiver_config.messages_per_minute(),
                wake: Arc::new(Notify::new()),
            });
        }
        let routes = Routes::from_config(config, |name| {
            receivers
                .iter()
                .find(|slot| slot.name == name)
                .and_then(|slot| slot.receiver.repeat_cap_seconds())
        });
        let outbox = Outbox::open(data_dir)?.counting_unreadable(metrics.unreadable_rows.clone());
        let names: Vec<&str> = receivers.iter().map(|slot| slot.name.as_str()).collect();
        let abandoned = outbox.abandon_unknown(&names, OffsetDateTime::now_utc())?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "Gave up pending notifications of receivers no longer configured."
            );
        }
        if receivers.is_empty() {
            tracing::warn!("{NO_RECEIVER}");
        }
        let silences = outbox.silences()?;
        metrics.alert_outbox_pending.set(outbox.pending_count()?);
        Ok(Alerts {
            config: config.clone(),
            outbox,
            routes,
            receivers,
            silences: RwLock::new(Arc::new(silences)),
            metrics,
        })
    }

    pub fn receiver_names(&self) -> Vec<&str> {
        self.receivers
            .iter()
            .map(|slot| slot.name.as_str())
            .collect()
    }

    pub fn silences(&self) -> Arc<Vec<Silence>> {
        Arc::clone(&self.silences.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stores a new silence. The inner error names the field at fault.
    pub fn add_silence(
        &self,
        new: NewSilence,
        now: OffsetDateTime,
    ) -> Result<Result<Silence, (String, String)>, StoreError> {
        let active = self
            .silences()
            .iter()
            .filter(|silence| silence.state(now) != "expired")
            .count();
        if active >= silences::ACTIVE_MAX {
            return Ok(Err((
                "matchers".into(),
                format!(
                    "at most {} silences may be active or pending",
                    silences::ACTIVE_MAX
                ),
            )));
        }
        let added = self.outbox.add_silence(|id| new.into_silence(id, now))?;
        self.reload_silences()?;
        Ok(added)
    }

    /// The open findings (as alerts, explained ones left out) each silence not yet over
    /// matches: what it hides while it holds. By silence id, at most `limit` alerts each,
    /// with the count of all.
    pub fn matched_by_silences(
        &self,
        fleet: &Fleet,
        now: OffsetDateTime,
        limit: usize,
    ) -> HashMap<u64, (usize, Vec<AlertItem>)> {
        let silences: Vec<Silence> = self
            .silences()
            .iter()
            .filter(|silence| silence.state(now) != "expired")
            .cloned()
            .collect();
        let mut matched: HashMap<u64, (usize, Vec<AlertItem>)> = HashMap::new();
        if silences.is_empty() {
            return matched;
        }
        for alert in active_alerts(fleet, &HashMap::new(), &self.config.dashboard_url) {
            if alert.suppressed {
                continue;
            }
            let facts = routing::facts(&alert.item);
            for silence in &silences {
                if silence.matchers.matches(&facts) {
                    let (count, items) = matched.entry(silence.id).or_default();
                    *count += 1;
                    if items.len() < limit {
                        items.push(alert.item.clone());
                    }
                }
            }
        }
        matched
    }

    /// Ends a silence now; `None` when there is none with this id.
    pub fn expire_silence(
        &self,
        id: u64,
        now: OffsetDateTime,
    ) -> Result<Option<Silence>, StoreError> {
        let expired = self.outbox.expire_silence(id, now)?;
        self.reload_silences()?;
        Ok(expired)
    }

    fn reload_silences(&self) -> Result<(), StoreError> {
        let silences = self.outbox.silences()?;
        *self
            .silences
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(silences);
        Ok(())
    }

    /// Notifications, newest first.
    pub fn notifications(&self, filter: &Filter) -> Result<Vec<Row>, StoreError> {
        self.outbox.list(filter)
    }

    /// Starts the notifier and one delivery task per receiver.
    pub fn start(
        self: &Arc<Self>,
        fleet: Arc<Fleet>,
        workflow: Arc<Workflow>,
        events: broadcast::Receiver<FindingEvent>,
    ) -> Result<Running, StoreError> {
        let state = self.outbox.load_state()?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(notify(
            Arc::clone(self),
            fleet,
            workflow,
            events,
            state,
            stopped.clone(),
        ))];
        for index in 0..self.receivers.len() {
            tasks.push(tokio::spawn(delivery::run(
                Arc::clone(self),
                index,
                stopped.clone(),
            )));
        }
        Ok(Running { stop, tasks })
    }

    /// One comparison of the fleet with what was sent, queueing what is due. Returns the
    /// state to keep.
    fn reconcile(
        &self,
        fleet: &Fleet,
        problems: &HashMap<u64, ProblemState>,
        mut state: State,
        closed_at: &HashMap<u64, OffsetDateTime>,
        now: OffsetDateTime,
    ) -> State {
        let active = active_alerts(fleet, problems, &self.config.dashboard_url);
        let silences = self.silences();
        for planned in plan(&active, &self.routes, &silences, &mut state, closed_at, now) {
            match self.outbox.enqueue(&planned) {
                Ok(inserted) => {
                    state.apply(&planned);
                    if inserted {
                        tracing::info!(receiver = %planned.notification.receiver, group = %planned.notification.group_key, firing = planned.notification.firing_count(), resolved = planned.notification.resolved_count(), "Queued a notification.");
                    }
                    if let Some(slot) = self
                        .receivers
                        .iter()
                        .find(|slot| slot.name == planned.notification.receiver)
                    {
                        slot.wake.notify_one();
                    }
                }
                Err(error) => {
                    // Nothing was recorded: the next tick plans it again.
                    tracing::error!(%error, "Cannot queue a notification; retrying at the next tick.");
                    break;
                }
            }
        }
        match self.outbox.pending_count() {
            Ok(pending) => self.metrics.alert_outbox_pending.set(pending),
            Err(error) => tracing::warn!(%error, "Cannot count the pending notifications."),
        }
        state
    }
}

/// The running notifier and delivery tasks.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Lets deliveries in progress finish and record their outcome, then stops (abandoning
    /// what has not finished after `grace`).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|task| task.abort_handle()).collect();
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("Alert deliveries did not finish in time; stopping them.");
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// The notifier loop: reconcile every tick and soon after each finding event.
async fn notify(
    alerts: Arc<Alerts>,
    fleet: Arc<Fleet>,
    workflow: Arc<Workflow>,
    mut events: broadcast::Receiver<FindingEvent>,
    mut state: State,
    mut stop: watch::Receiver<bool>,
) {
    let mut closed_at: HashMap<u64, OffsetDateTime> = HashMap::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks_since_trim = 0u32;
    // Once the collector drops its sender the ticks alone drive the loop (and the stop signal
    // is still heard).
    let mut events_open = true;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            event = events.recv(), if events_open => {
                match event {
                    Ok(event) => {
                        if event.replayed {
                            continue;
                        }
                        if event.change == Change::Closed {
                            if closed_at.len() >= CLOSED_AT_MAX {
                                closed_at.clear();
                            }
                            if let Some(at) = event.finding.closed_at {
                                closed_at.insert(event.finding.id, at);
                            }
                        }
                        // Let a burst of events (one fleet evaluation) settle first.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while let Ok(event) = events.try_recv() {
                            if let (Change::Closed, false, Some(at)) = (event.change, event.replayed, event.finding.closed_at) {
                                closed_at.insert(event.finding.id, at);
                            }
                        }
                    }
                    // Missed events change nothing: the fleet state is compared in full.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                }
            }
            _ = stop.changed() => return,
        }
        let worker = Arc::clone(&alerts);
        let fleet_ref = Arc::clone(&fleet);
        let problems = workflow.states();
        let closed = closed_at.clone();
        let now = OffsetDateTime::now_utc();
        let trim = ticks_since_trim >= TRIM_EVERY_TICKS;
        ticks_since_trim = if trim { 0 } else { ticks_since_trim + 1 };
        let kept = std::mem::take(&mut state);
        match tokio::task::spawn_blocking(move || {
            let mut state = worker.reconcile(&fleet_ref, &problems, kept, &closed, now);
            if trim {
                if let Err(error) = worker.outbox.trim(worker.config.keep_notifications) {
                    tracing::warn!(%error, "Cannot drop old notifications.");
                }
                let quiet = state.quiet_groups(now, worker.routes.longest_group_interval());
                if !quiet.is_empty() {
                    match worker.outbox.forget_groups(&quiet) {
                        Ok(()) => state.forget(&quiet),
                        Err(error) => tracing::warn!(%error, "Cannot forget quiet alert groups."),
                    }
                }
            }
            state
        })
        .await
        {
            Ok(next) => state = next,
            Err(error) => {
                tracing::error!(%error, "The alert notifier failed; reloading what was sent.");
                match alerts.outbox.load_state() {
                    Ok(loaded) => state = loaded,
                    Err(error) => tracing::error!(%error, "Cannot reload what was sent."),
                }
            }
        }
        // Close times of findings long resolved are no longer needed.
        let horizon = now - time::Duration::minutes(10);
        closed_at.retain(|_, at| *at > horizon);
    }
}

/// Every open finding, terminal and fleet-wide, as alerts, with what the operations team did
/// about it (`problems`, by finding id).
fn active_alerts(
    fleet: &Fleet,
    problems: &HashMap<u64, ProblemState>,
    dashboard_url: &str,
) -> Vec<Active> {
    let dashboard = dashboard_url.trim_end_matches('/');
    let mut active = Vec::new();
    let with_workflow = |mut item: AlertItem| {
        if let Some(problem) = problems.get(&item.finding_id) {
            item.acknowledged_by = problem.acknowledged_by.clone();
            item.assignee = problem.assignee.as_ref().map(|assignee| match assignee {
                Assignee::Person(name) => name.clone(),
                Assignee::Party(party) => party.as_str().to_string(),
            });
        }
        item
    };
    fleet.for_each_terminal(|terminal| {
        for finding in terminal.findings.findings() {
            active.push(Active {
                item: with_workflow(item_of(finding, &terminal.labels, dashboard)),
                suppressed: finding.suppressed_by.is_some(),
            });
        }
    });
    for finding in fleet.fleet_wide_findings() {
        // A shared cause's scope (a carrier in a region, a model, a merchant…): route it like
        // the terminals inside.
        let mut labels = TerminalLabels::default();
        if let Some((scope, _)) = parse_subject(&finding.subject) {
            for (dimension, value) in scope.0 {
                let label = match dimension {
                    Dimension::Carrier => &mut labels.carrier,
                    Dimension::Region => &mut labels.region,
                    Dimension::Model => &mut labels.model,
                    Dimension::Merchant => &mut labels.merchant,
                    Dimension::Gateway => &mut labels.gateway,
                    Dimension::Resolver => &mut labels.resolver,
                    Dimension::Firmware | Dimension::PosApp => continue,
                };
                *label = Some(value);
            }
        }
        active.push(Active {
            item: with_workflow(item_of(&finding, &labels, dashboard)),
            suppressed: false,
        });
    }
    active
}

/// A terminal id as one URL path segment: validated ids pass unchanged; anything else (a
/// stored id from before validation) is percent-encoded, so it can never end the link in a
/// message and start another.
fn path_segment(text: &str) -> String {
    let mut segment = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-') {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

pub(crate) fn item_of(finding: &Finding, labels: &TerminalLabels, dashboard: &str) -> AlertItem {
    let link = if finding.terminal_id.is_empty() {
        format!("{dashboard}/#/findings")
    } else {
        format!(
            "{dashboard}/#/terminal/{}",
            path_segment(&finding.terminal_id)
        )
    };
    let text = |value: &Option<Arc<str>>| value.as_deref().map(str::to_string);
    AlertItem {
        finding_id: finding.id,
        terminal_id: finding.terminal_id.to_string(),
        code: finding.kind.code.to_string(),
        category: finding.kind.category.as_str().to_string(),
        party: finding.kind.party.as_str().to_string(),
        severity: finding.severity.as_str().to_string(),
        subject: finding.subject.clone(),
        merchant: text(&labels.merchant),
        region: text(&labels.region),
        carrier: text(&labels.carrier),
        model: text(&labels.model),
        evidence: finding.evidence.clone(),
        since: finding.since,
        closed_at: None,
        explains: finding.explains,
        link,
        acknowledged_by: None,
        assignee: None,
    }
}
