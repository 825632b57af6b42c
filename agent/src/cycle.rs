//! One probe cycle's measurements: the ladder towards every target, the software inventory,
//! the device status and the NTP state. Shared by the agent's loop and `posmon-agent probe`.
//!
//! The loop's cycles are planned: each target is probed only when its schedule says so
//! ([`plan`]): the full ladder first, then every full-probe interval, at once on a trigger of
//! the passive watch, and while it fails every failing-probe interval (doubling while the
//! outcome stays the same, up to the probe interval); a cheap probe every probe interval unless
//! the watch saw the POS application's own connection working meanwhile. A failing target's
//! established connection asks for one re-probe per failure (its outcome): a working connection
//! is no recovery of a failed lookup, handshake or request, nor of a connect when it predates
//! the failure, so seeing it again asks for nothing more than the failing re-probes.

use std::time::Duration;

use posmon_protocol::{ClockStatus, Stage, StageStatus};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::device::DeviceProbe;
use crate::probe::{Ladder, Mode};
use crate::report::Cycle;
use crate::software::{inventory, ComponentSource};
use crate::system::SystemRoot;
use crate::watch::{Trigger, Watch};

/// A connection's trigger runs a target's full ladder at once, but not within this long of the
/// last probe a connection ran: a POS application retrying a broken connection would otherwise
/// climb it every second. Counted from the last triggered probe, not from any: a blackholed
/// payment's connect a few seconds after a scheduled probe is probed at once.
const TRIGGER_HOLDOFF: Duration = Duration::from_secs(10);
/// The host's failure counters run a cheap probe at once, but not within this long of the last
/// probe they ran, doubled for every such probe in a row that found the target working (another
/// application's failures move the counters too), up to `COUNTERS_HOLDOFF_MAX`. Counters quiet
/// for `COUNTERS_QUIET` make their next rise news again (the holdoff starts over), so the first
/// refused payment after a quiet minute is probed at once. Not stretched by the budget: the
/// holdoff's own doubling bounds the cost (at worst a cheap probe every 10 minutes on a host
/// whose other applications fail connects all the time, about 1 MB a month).
const COUNTERS_HOLDOFF: Duration = Duration::from_secs(5);
const COUNTERS_HOLDOFF_MAX: Duration = Duration::from_secs(600);
const COUNTERS_QUIET: Duration = Duration::from_secs(60);

/// What the schedule knows of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetState {
    /// The last active probe of any kind.
    last_probe: Option<Instant>,
    /// The last full ladder.
    last_full: Option<Instant>,
    /// The last time the path was seen working: a probe, or the watch.
    last_working: Option<Instant>,
    /// Whether the last probe found a rung failing, and which (the outcome).
    failure: Option<String>,
    /// Failing probes in a row with the same outcome: the failing re-probe's backoff.
    same_failures: u32,
    /// The failure the target last recovered from, until the recovery is confirmed.
    recovered_from: Option<String>,
    /// Whether the POS application's connection asked for a re-probe of this failure already.
    recovery_sought: bool,
    /// The last probe a connection's trigger ran, and the last the host's counters ran.
    last_connection: Option<Instant>,
    last_counters: Option<Instant>,
    /// Probes the counters ran in a row that found the target working: their holdoff's
    /// doubling. And when the counters last rose (for any target).
    counters_misses: u32,
    last_rise: Option<Instant>,
    /// Why the watch asks for a probe, until one runs.
    trigger: Option<Trigger>,
}

/// The intervals a plan is made with, stretched by the budget where they may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub probe: Duration,
    pub full: Duration,
    pub failing: Duration,
}

/// How `state`'s target is probed at `now`, if at all.
pub fn plan(state: &TargetState, schedule: &Schedule, now: Instant) -> Option<Mode> {
    let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
    let (Some(since_probe), Some(since_full)) = (since(state.last_probe), since(state.last_full))
    else {
        return Some(Mode::Full);
    };
    match &state.trigger {
        // A failing target's trigger is its recovery: seen as its failure would be re-probed.
        Some(Trigger::Connection(_))
            if since(state.last_connection).is_none_or(|since| since >= TRIGGER_HOLDOFF) =>
        {
            return Some(state.failure.as_deref().map_or(Mode::Full, recheck_mode));
        }
        Some(Trigger::Counters)
            if since(state.last_counters).is_none_or(|since| since >= state.counters_holdoff()) =>
        {
            return Some(Mode::Cheap)
        }
        _ => {}
    }
    if let Some(failure) = &state.failure {
        if failure.starts_with("link:") || failure.starts_with("gateway:") {
            // The terminal's own link or router: every cycle, so that the failure stays shown
            // and its end is seen at once. It costs nothing on the metered link: nothing is
            // sent while the link or neighbour table fails, and nothing passes a dead router.
            return Some(Mode::Cheap);
        }
        let backoff = 2u32.saturating_pow(state.same_failures.min(16));
        let wait = schedule
            .failing
            .saturating_mul(backoff)
            .min(schedule.probe.max(schedule.failing));
        return (since_probe >= wait).then_some(recheck_mode(failure));
    }
    if since_full >= schedule.full {
        return Some(Mode::Full);
    }
    let since_working = since(state.last_working).unwrap_or(since_probe);
    (since_working >= schedule.probe).then_some(Mode::Cheap)
}

/// How a target failing at `failure` (`rung:error`) is probed again: a failed link, router,
/// lookup or connect is seen recovering by a cheap probe (which climbs the full ladder when it
/// fails again with an answer); a failure above them needs the full ladder.
fn recheck_mode(failure: &str) -> Mode {
    let below_tls = ["link:", "gateway:", "dns:", "tcp:"];
    if below_tls.iter().any(|rung| failure.starts_with(rung)) {
        Mode::Cheap
    } else {
        Mode::Full
    }
}

impl TargetState {
    /// How long after the last probe the counters ran they may run another.
    fn counters_holdoff(&self) -> Duration {
        COUNTERS_HOLDOFF
            .saturating_mul(2u32.saturating_pow(self.counters_misses.min(16)))
            .min(COUNTERS_HOLDOFF_MAX)
    }

    /// How a change found on this target is confirmed: a failure with the full ladder (to name
    /// its cause over the attempts), a recovery as its failure was re-probed (a working
    /// connection after a failed connect needs no TLS handshake to show it) unless the target's
    /// TLS or HTTP rung, which came back from memory, was climbed a probe interval ago or more
    /// (`above_tcp_age`): a host back with an expired certificate must not show healthy on a
    /// measurement hours old. A path flapping every few minutes pays one TLS handshake per
    /// (stretched) probe interval for it, not one per flap; the re-probes stay cheap.
    fn confirm_mode(&self, above_tcp_age: Option<Duration>, probe: Duration) -> Mode {
        match (&self.failure, self.recovered_from.as_deref()) {
            (None, Some(failure)) if above_tcp_age.is_none_or(|age| age < probe) => {
                recheck_mode(failure)
            }
            _ => Mode::Full,
        }
    }

    /// After a probe in `mode` at `now` that found `failure` (the first failing rung).
    fn probed(&mut self, mode: Mode, failure: Option<String>, now: Instant) {
        self.last_probe = Some(now);
        match self.trigger {
            Some(Trigger::Connection(_)) => self.last_connection = Some(now),
            Some(Trigger::Counters) => {
                self.last_counters = Some(now);
                self.counters_misses = if failure.is_none() {
                    self.counters_misses.saturating_add(1)
                } else {
                    0
                };
            }
            None => {}
        }
        if failure != self.failure {
            // Another failure, or none: a working connection may be news again.
            self.recovery_sought = false;
        }
        if mode == Mode::Full {
            self.last_full = Some(now);
        }
        if failure.is_none() {
            self.last_working = Some(now);
        }
        if failure.is_none() && self.failure.is_some() {
            self.recovered_from = self.failure.clone();
        } else if failure.is_some() {
            self.recovered_from = None;
        }
        self.same_failures = match (&failure, &self.failure) {
            (Some(now_failing), Some(before)) if now_failing == before => {
                self.same_failures.saturating_add(1)
            }
            _ => 0,
        };
        self.failure = failure;
        self.trigger = None;
    }

    /// After the watch saw the target (`working`, `trigger`) at `now`.
    fn sighted(&mut self, working: bool, connected: bool, trigger: Option<Trigger>, now: Instant) {
        if working {
            self.last_working = Some(now);
            // A connection in TIME_WAIT may be from before the failure; one established now
            // is not. Once per failure: an idle connection from before a failed connect, or
            // one beside a failed lookup, handshake or request, stays established through it.
            if self.failure.is_some() && connected && !self.recovery_sought {
                // The POS application reaches a target the ladder found failing: confirm.
                self.recovery_sought = true;
                self.trigger = Some(Trigger::Connection(
                    "the POS application's connection works again".into(),
                ));
            }
        }
        // A failing target is re-probed on its own schedule: its trouble is known. A
        // connection in trouble is news even beside one that works (a full accept queue, a
        // lost SYN); the host's counters are not, and a connection's trigger outranks theirs.
        if trigger == Some(Trigger::Counters) {
            let quiet = self
                .last_rise
                .is_none_or(|at| now.saturating_duration_since(at) >= COUNTERS_QUIET);
            if quiet {
                self.counters_misses = 0;
            }
            self.last_rise = Some(now);
        }
        match trigger {
            Some(Trigger::Connection(why)) if self.failure.is_none() => {
                self.trigger = Some(Trigger::Connection(why));
            }
            Some(Trigger::Counters)
                if !connected && self.failure.is_none() && self.trigger.is_none() =>
            {
                self.trigger = Some(Trigger::Counters);
            }
            _ => {}
        }
    }
}

/// What a cycle needs, prepared once.
pub struct Measurer {
    ladder: Ladder,
    sources: Vec<ComponentSource>,
    device: DeviceProbe,
    root: SystemRoot,
    watch: Watch,
    states: Vec<TargetState>,
}

impl Measurer {
    pub fn new(config: &AgentConfig) -> anyhow::Result<Self> {
        let sources = config
            .components
            .iter()
            .map(ComponentSource::new)
            .collect::<Result<Vec<_>, _>>()?;
        let ladder = Ladder::new(config)?;
        let states = vec![TargetState::default(); ladder.target_names().count()];
        Ok(Measurer {
            ladder,
            sources,
            device: DeviceProbe::new(config),
            root: SystemRoot::new(&config.system_root),
            watch: Watch::new(SystemRoot::new(&config.system_root)),
            states,
        })
    }

    /// Reads the socket table (no traffic) and notes what it shows of each target; whether a
    /// target's probe is due now because of it.
    pub fn watch(&mut self, schedule: &Schedule, now: Instant) -> bool {
        let sightings = self.watch.observe(&self.ladder.addresses(), now);
        let mut due = false;
        for ((state, sighting), name) in self
            .states
            .iter_mut()
            .zip(sightings)
            .zip(self.ladder.target_names())
        {
            let before = state.trigger.clone();
            state.sighted(sighting.working, sighting.connected, sighting.trigger, now);
            if state.trigger != before {
                tracing::debug!(target = name, trigger = ?state.trigger, "The watch asks for a probe.");
            }
            due |= state.trigger.is_some() && plan(state, schedule, now).is_some();
        }
        due
    }

    /// Forgets the rise of the host's failure counters so far (after the agent's own
    /// deliveries, which move them too).
    pub fn rebaseline_watch(&mut self) {
        self.watch.rebaseline();
    }

    /// Each target's plan at `now`; the targets named in `confirm` climb the full ladder.
    pub fn plans(
        &self,
        schedule: &Schedule,
        now: Instant,
        confirm: &[String],
    ) -> Vec<Option<Mode>> {
        self.states
            .iter()
            .zip(self.ladder.target_names())
            .zip(self.ladder.above_tcp_ages())
            .map(|((state, name), above_tcp_age)| {
                if confirm.iter().any(|confirmed| confirmed == name) {
                    Some(state.confirm_mode(above_tcp_age, schedule.probe))
                } else {
                    plan(state, schedule, now)
                }
            })
            .collect()
    }

    /// Measures everything once, every target's full ladder. `clock` is the offset from the
    /// latest exchange with the collector, if any; the local NTP state is added to it.
    pub async fn measure(&mut self, clock: Option<ClockStatus>) -> Cycle {
        let plans = vec![Some(Mode::Full); self.states.len()];
        self.measure_planned(clock, &plans).await
    }

    /// Measures everything once, each target as planned (see [`Measurer::plans`]).
    pub async fn measure_planned(
        &mut self,
        clock: Option<ClockStatus>,
        plans: &[Option<Mode>],
    ) -> Cycle {
        let observed_at = OffsetDateTime::now_utc();
        let measured = self.ladder.probe(plans).await;
        let now = Instant::now();
        for ((state, plan), probe) in self.states.iter_mut().zip(plans).zip(&measured.probes) {
            if let Some(mode) = plan {
                // An echo that goes unanswered is no failure of the path: many networks drop
                // ICMP.
                let failure = probe
                    .stages
                    .iter()
                    .find(|stage| stage.status == StageStatus::Failed && stage.stage != Stage::Icmp)
                    .map(|stage| {
                        format!(
                            "{}:{}",
                            stage.stage.as_str(),
                            stage.error.map_or("", |error| error.as_str())
                        )
                    });
                state.probed(*mode, failure, now);
            }
        }
        if plans.iter().any(Option::is_some) {
            // The probes' own refused connects and resets are no trigger.
            self.watch.rebaseline();
        }
        let software = inventory(&self.sources).await;
        let device = self.device.measure().await;
        let clock = match clock {
            Some(clock) => Some(ClockStatus {
                ntp_synchronized: crate::clock::ntp_synchronized(&self.root).await,
                ..clock
            }),
            None => None,
        };
        Cycle {
            observed_at,
            probes: measured.probes,
            network: measured.network,
            software,
            device,
            clock,
        }
    }

    /// The IP bytes spent since the last call: (probes, anything else). Everything the
    /// measurer sends is a probe; the local checks cost nothing.
    pub fn take_traffic(&mut self) -> (u64, u64) {
        (self.ladder.take_traffic(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule = Schedule {
        probe: Duration::from_secs(600),
        full: Duration::from_secs(6 * 3600),
        failing: Duration::from_secs(60),
    };

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn targets_are_probed_fully_first_then_cheaply_unless_seen_working() {
        let start = Instant::now();
        let mut state = TargetState::default();
        assert_eq!(plan(&state, &SCHEDULE, start), Some(Mode::Full));
        state.probed(Mode::Full, None, start);
        assert_eq!(plan(&state, &SCHEDULE, at(start, 599)), None);
        assert_eq!(plan(&state, &SCHEDULE, at(start, 600)), Some(Mode::Cheap));
        // The POS application's connection worked at 500 s: no probe until 1,100 s.
        state.sighted(true, true, None, at(start, 500));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 1099)), None);
        assert_eq!(plan(&state, &SCHEDULE, at(start, 1100)), Some(Mode::Cheap));
        state.probed(Mode::Cheap, None, at(start, 1100));
        // The full ladder comes every six hours, working connection or not.
        state.sighted(true, true, None, at(start, 21_590));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 21_600)), Some(Mode::Full));
    }

    #[test]
    fn a_trigger_climbs_at_once_but_not_twice_within_the_holdoff() {
        let start = Instant::now();
        let mut state = TargetState::default();
        state.probed(Mode::Full, None, start);
        let waits = || Some(Trigger::Connection("a connect waits".into()));
        // Seconds after a scheduled probe: at once.
        state.sighted(false, false, waits(), at(start, 2));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 2)), Some(Mode::Full));
        state.probed(Mode::Full, None, at(start, 2));
        state.sighted(false, false, waits(), at(start, 5));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 5)), None, "held off");
        assert_eq!(plan(&state, &SCHEDULE, at(start, 12)), Some(Mode::Full));
        state.probed(Mode::Full, None, at(start, 12));
        assert_eq!(
            plan(&state, &SCHEDULE, at(start, 30)),
            None,
            "the trigger is spent"
        );
        // The host's counters ask for a cheap probe at once (a refused payment, seconds after
        // the last probe); each that finds the target working doubles their holdoff (5 s,
        // 10 s, 20 s, …): another application's failures.
        state.sighted(false, false, Some(Trigger::Counters), at(start, 12));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 12)), Some(Mode::Cheap));
        state.probed(Mode::Cheap, None, at(start, 12));
        state.sighted(false, false, Some(Trigger::Counters), at(start, 13));
        assert_eq!(
            plan(&state, &SCHEDULE, at(start, 21)),
            None,
            "10 s after one miss"
        );
        assert_eq!(plan(&state, &SCHEDULE, at(start, 22)), Some(Mode::Cheap));
        state.probed(Mode::Cheap, None, at(start, 22));
        state.sighted(false, false, Some(Trigger::Counters), at(start, 30));
        assert_eq!(
            plan(&state, &SCHEDULE, at(start, 41)),
            None,
            "20 s after two"
        );
        // Counters quiet for a minute: their next rise is news at once.
        state.sighted(false, false, Some(Trigger::Counters), at(start, 91));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 91)), Some(Mode::Cheap));
        // A connection's trouble outranks them.
        state.sighted(false, false, waits(), at(start, 92));
        state.sighted(false, false, Some(Trigger::Counters), at(start, 92));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 92)), Some(Mode::Full));
        state.probed(Mode::Full, None, at(start, 92));
        // Only an established connection shows connects are taken: one closing (a good
        // payment's TIME_WAIT) does not hide the counters' rise.
        state.sighted(true, false, Some(Trigger::Counters), at(start, 140));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 140)), Some(Mode::Cheap));
        let mut connected = TargetState::default();
        connected.probed(Mode::Full, None, start);
        connected.sighted(true, true, Some(Trigger::Counters), at(start, 140));
        assert_eq!(plan(&connected, &SCHEDULE, at(start, 140)), None);
    }

    /// A failing target's established connection asks for one re-probe per failure: one
    /// beside a failed handshake (or from before a failed connect) stays established, and
    /// must not climb the full ladder every holdoff for as long as the failure lasts.
    #[test]
    fn a_working_connection_asks_once_per_failure() {
        let start = Instant::now();
        let mut state = TargetState::default();
        let expired = || Some("tls:certificate_expired".to_string());
        state.probed(Mode::Full, expired(), start);
        state.sighted(true, true, None, at(start, 5));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 10)), Some(Mode::Full));
        state.probed(Mode::Full, expired(), at(start, 10));
        for second in 11..130 {
            state.sighted(true, true, None, at(start, second));
            assert_eq!(
                plan(&state, &SCHEDULE, at(start, second)),
                None,
                "{second} s"
            );
        }
        // The failing re-probes go on as before, doubling: 120 s, then 240 s.
        assert_eq!(plan(&state, &SCHEDULE, at(start, 130)), Some(Mode::Full));
        state.probed(Mode::Full, expired(), at(start, 130));
        state.sighted(true, true, None, at(start, 150));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 369)), None);
        // Another failure: a working connection is news again.
        state.probed(Mode::Full, Some("tcp:refused".into()), at(start, 370));
        state.sighted(true, true, None, at(start, 375));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 380)), Some(Mode::Cheap));
    }

    #[test]
    fn a_failing_target_is_re_probed_with_backoff_until_it_recovers() {
        let start = Instant::now();
        let mut state = TargetState::default();
        state.probed(Mode::Full, Some("tcp:refused".into()), start);
        assert_eq!(plan(&state, &SCHEDULE, at(start, 59)), None);
        assert_eq!(plan(&state, &SCHEDULE, at(start, 60)), Some(Mode::Cheap));
        state.probed(Mode::Cheap, Some("tcp:refused".into()), at(start, 60));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 179)), None, "120 s now");
        assert_eq!(plan(&state, &SCHEDULE, at(start, 180)), Some(Mode::Cheap));
        for _ in 0..10 {
            state.probed(Mode::Full, Some("tcp:refused".into()), at(start, 180));
        }
        assert_eq!(
            plan(&state, &SCHEDULE, at(start, 780)),
            Some(Mode::Cheap),
            "never rarer than the probe interval"
        );
        // The terminal's own router: every cycle.
        let mut router = TargetState::default();
        router.probed(Mode::Full, Some("gateway:unreachable".into()), start);
        assert_eq!(plan(&router, &SCHEDULE, at(start, 1)), Some(Mode::Cheap));
        // Another failure starts the backoff again; one above TCP needs the full ladder.
        state.probed(
            Mode::Full,
            Some("tls:certificate_expired".into()),
            at(start, 780),
        );
        assert_eq!(plan(&state, &SCHEDULE, at(start, 840)), Some(Mode::Full));
        // The watch's failing connects are no news; the POS application's working connection
        // is: it is confirmed at once.
        state.sighted(
            false,
            false,
            Some(Trigger::Connection("a connect waits".into())),
            at(start, 800),
        );
        assert_eq!(state.trigger, None);
        state.sighted(true, true, None, at(start, 800));
        assert_eq!(
            plan(&state, &SCHEDULE, at(start, 800)),
            Some(Mode::Full),
            "a TLS failure needs the full ladder to be seen gone"
        );
        state.probed(Mode::Full, None, at(start, 800));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 860)), None, "recovered");
        assert_eq!(state.confirm_mode(None, SCHEDULE.probe), Mode::Full);
        // A connect that failed is seen working again by a cheap probe, and confirmed by one.
        state.probed(Mode::Full, Some("tcp:timeout".into()), at(start, 900));
        assert_eq!(
            state.confirm_mode(None, SCHEDULE.probe),
            Mode::Full,
            "a failure is named fully"
        );
        state.sighted(true, true, None, at(start, 950));
        assert_eq!(plan(&state, &SCHEDULE, at(start, 950)), Some(Mode::Cheap));
        state.probed(Mode::Cheap, None, at(start, 950));
        assert_eq!(state.confirm_mode(None, SCHEDULE.probe), Mode::Cheap);
        // A target with TLS or HTTP rungs: those are measured again when their memory is a
        // probe interval old (a flapping path pays a handshake per interval, not per flap).
        let age = |seconds: u64| Some(Duration::from_secs(seconds));
        assert_eq!(state.confirm_mode(age(599), SCHEDULE.probe), Mode::Cheap);
        assert_eq!(state.confirm_mode(age(600), SCHEDULE.probe), Mode::Full);
        assert_eq!(state.confirm_mode(age(43_200), SCHEDULE.probe), Mode::Full);
    }

    /// The watch over the test process's own sockets (`/proc/self/net`, linked into a fake
    /// root): a connection to the target spares its cheap probe; a connect the target leaves
    /// unanswered (its accept queue is full, so the kernel drops the SYN) runs its full ladder.
    #[tokio::test]
    async fn the_watch_sees_the_applications_own_connections() {
        use socket2::{Domain, Socket, Type};
        let tree = crate::system::tests::FakeTree::new(&crate::system::tests::HEALTHY_NETWORK);
        let root = tree.root();
        for table in ["tcp", "tcp6", "snmp"] {
            std::os::unix::fs::symlink(
                std::path::Path::new("/proc/self/net").join(table),
                root.path("proc/net").join(table),
            )
            .unwrap_or_else(|error| panic!("{error}"));
        }
        // A listener that never accepts, with room for one connection in its queue.
        let listener =
            Socket::new(Domain::IPV4, Type::STREAM, None).unwrap_or_else(|e| panic!("{e}"));
        listener
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap_or_else(|error| panic!("{error}"));
        listener.listen(0).unwrap_or_else(|error| panic!("{error}"));
        let address = listener
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .unwrap_or_else(|| panic!("no address"));
        let mut config = AgentConfig::example();
        config.system_root = root.path("");
        config.icmp = false;
        config.attempts = 1;
        config.probe_timeout_seconds = 1;
        config.targets = vec![crate::config::TargetConfig {
            name: "pay".into(),
            address: address.to_string(),
            tls: false,
            attempts: None,
            ca_file: None,
            contact: None,
        }];
        let mut measurer = Measurer::new(&config).unwrap_or_else(|error| panic!("{error}"));
        let start = Instant::now();
        let cycle = measurer.measure(None).await;
        assert!(
            cycle.probes[0]
                .stages
                .iter()
                .all(|stage| stage.status != StageStatus::Failed),
            "{:?}",
            cycle.probes
        );
        // One connect and its reset, no name to look up, no echo under a stand-in root.
        assert_eq!(measurer.take_traffic(), (60 + 60 + 52 + 52, 0));
        let later = |seconds: u64| start + Duration::from_secs(seconds);
        // The probe's connection leaves the queue; the POS application's takes its place
        // (established by the kernel, never accepted).
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|error| panic!("{error}"));
        while listener.accept().is_ok() {}
        let application = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(!measurer.watch(&SCHEDULE, later(300)));
        assert_eq!(measurer.plans(&SCHEDULE, later(700), &[]), vec![None]);
        // Another connect finds the queue full: its SYN goes unanswered.
        let waiting = tokio::spawn(tokio::net::TcpStream::connect(address));
        tokio::time::sleep(Duration::from_millis(200)).await;
        measurer.watch(&SCHEDULE, later(710));
        assert!(
            measurer.watch(&SCHEDULE, later(712)),
            "a connect waiting 2 s"
        );
        assert_eq!(
            measurer.plans(&SCHEDULE, later(712), &[]),
            vec![Some(Mode::Full)]
        );
        waiting.abort();
        drop(application);
    }
}
