//! Builds the report a simulated terminal sends at one instant, with its active faults applied.

use posmon_protocol::*;
use time::OffsetDateTime;

use crate::fleet::{SimTerminal, OUTDATED_POS_APP};
use crate::random::unit;
use crate::scenario::{Active, Fault};

/// The hosts every simulated terminal probes.
pub const TARGETS: &[(&str, &str)] = &[
    ("payment-host", "https://pay.acquirer.example/health"),
    ("tms", "https://tms.vendor.example/ping"),
];

fn stage(kind: Stage, latency_ms: Option<f64>) -> StageResult {
    StageResult {
        stage: kind,
        status: StageStatus::Ok,
        error: None,
        detail: None,
        attempts: 1,
        successes: 1,
        latency_ms: latency_ms.map(|ms| LatencyStats {
            min: ms,
            avg: ms,
            max: ms,
            jitter: 0.0,
        }),
        http_status: None,
        tls_version: None,
        certificate_days_left: None,
    }
}

fn failed(kind: Stage, error: ErrorKind, detail: &str) -> StageResult {
    StageResult {
        status: StageStatus::Failed,
        error: Some(error),
        detail: Some(detail.to_string()),
        successes: 0,
        latency_ms: None,
        ..stage(kind, None)
    }
}

/// What one terminal observes at one instant.
pub struct Moment<'a> {
    pub seed: u64,
    pub terminal: &'a SimTerminal,
    pub sequence: u64,
    pub observed_at: OffsetDateTime,
    /// Distinguishes the random draws of successive reports.
    pub draw: u64,
    pub faults: &'a Active<'a>,
    pub dropped_reports: u64,
}

impl Moment<'_> {
    fn random(&self, salt: u64) -> f64 {
        unit(&[self.seed, self.terminal.index, self.draw, salt])
    }

    fn ladder(&self, target_index: usize, name: &str, address: &str) -> ProbeResult {
        let salt = 100 * target_index as u64;
        let faults = self.faults;
        if faults.has(Fault::LinkDown) {
            let link = failed(Stage::Link, ErrorKind::NoCarrier, "wwan0: no carrier");
            return finish(name, address, vec![link]);
        }
        let mut stages = vec![stage(Stage::Link, None)];
        let gateway_ms = 2.0 + 8.0 * self.random(salt + 1);
        if faults.has(Fault::GatewayDown) {
            stages.push(failed(
                Stage::Gateway,
                ErrorKind::Timeout,
                &format!(
                    "no ARP reply from {}",
                    gateway_address(&self.terminal.gateway)
                ),
            ));
            return finish(name, address, stages);
        }
        stages.push(stage(Stage::Gateway, Some(gateway_ms)));
        let resolver = &self.terminal.resolver;
        if faults.has(Fault::DnsFailure) {
            let detail = format!("SERVFAIL from {resolver}");
            stages.push(failed(Stage::Dns, ErrorKind::Servfail, &detail));
            return finish(name, address, stages);
        }
        if faults.has(Fault::DnsTimeout) {
            let detail = format!("no answer from {resolver} within 5s");
            stages.push(failed(Stage::Dns, ErrorKind::Timeout, &detail));
            return finish(name, address, stages);
        }
        stages.push(stage(Stage::Dns, Some(15.0 + 30.0 * self.random(salt + 2))));
        let refused = (Fault::HostRefuses, ErrorKind::Refused, "connection refused");
        let timeout = (
            Fault::HostOutage,
            ErrorKind::Timeout,
            "connect timed out after 5s",
        );
        for (fault, error, detail) in [timeout, refused] {
            if faults.hits(fault, name) {
                stages.push(failed(Stage::Tcp, error, detail));
                return finish(name, address, stages);
            }
        }
        let slow = faults.hits(Fault::HighLatency, name);
        let round_trip = if slow {
            1500.0 + 1500.0 * self.random(salt + 3)
        } else {
            30.0 + 60.0 * self.random(salt + 3)
        };
        let mut tcp = stage(Stage::Tcp, Some(round_trip));
        // Three tries, as the agent makes by default, each lost with the path's loss share; a
        // lossy path still gets one try through (the fault is loss, not an outage).
        let loss = faults.loss(name);
        tcp.attempts = TCP_ATTEMPTS;
        let lost = (0..u64::from(TCP_ATTEMPTS))
            .filter(|attempt| self.random(salt + 40 + attempt) < loss)
            .count();
        tcp.successes = TCP_ATTEMPTS
            .saturating_sub(u32::try_from(lost).unwrap_or(TCP_ATTEMPTS))
            .max(1);
        stages.push(tcp);
        let clock_ahead = faults.has(Fault::ClockAhead);
        let tls_failure = if faults.hits(Fault::HostResets, name) {
            Some((
                ErrorKind::Reset,
                "connection reset by peer during the handshake",
                None,
            ))
        } else if faults.hits(Fault::TlsAlert, name) {
            Some((
                ErrorKind::HandshakeFailed,
                "received fatal alert: handshake_failure",
                None,
            ))
        } else if faults.hits(Fault::CertificateExpired, name) {
            Some((
                ErrorKind::CertificateExpired,
                "certificate expired",
                Some(-3),
            ))
        } else if clock_ahead {
            // Seen from a clock a year ahead, a certificate valid for 180 more days expired.
            let days_left = 180 - CLOCK_AHEAD_DAYS;
            Some((
                ErrorKind::CertificateExpired,
                "certificate expired",
                Some(days_left),
            ))
        } else {
            None
        };
        if let Some((error, detail, days_left)) = tls_failure {
            stages.push(StageResult {
                certificate_days_left: days_left,
                ..failed(Stage::Tls, error, detail)
            });
            return finish(name, address, stages);
        }
        stages.push(StageResult {
            tls_version: Some("TLSv1.3".into()),
            certificate_days_left: Some(180),
            ..stage(Stage::Tls, Some(round_trip * 2.0))
        });
        stages.push(StageResult {
            http_status: Some(200),
            ..stage(Stage::Http, Some(round_trip * 1.5))
        });
        finish(name, address, stages)
    }

    fn device(&self) -> DeviceStatus {
        let terminal = self.terminal;
        let gib = 1024 * 1024 * 1024;
        let disk_total = 8 * gib;
        let disk_available = if self.faults.has(Fault::DiskFull) {
            disk_total / 100
        } else {
            disk_total / 2 + (self.random(11) * (disk_total / 4) as f64) as u64
        };
        let celsius = if self.faults.has(Fault::Overheat) {
            85.0 + 10.0 * self.random(12)
        } else {
            42.0 + 12.0 * self.random(12)
        };
        let has_battery = matches!(terminal.model, "PAX-A920" | "Sunmi-P2");
        let peripheral = |name: &str, present: bool| PeripheralStatus {
            name: name.to_string(),
            present,
            detail: None,
        };
        DeviceStatus {
            cpu_percent: Some(5.0 + 30.0 * self.random(13)),
            load_average_1m: Some(0.2 + self.random(14)),
            memory_total_bytes: Some(2 * gib),
            memory_available_bytes: Some(gib / 2 + (self.random(15) * gib as f64) as u64),
            swap_total_bytes: Some(0),
            swap_used_bytes: Some(0),
            uptime_seconds: Some(86_400 + terminal.index % 100_000),
            disks: vec![DiskStatus {
                mount: "/data".into(),
                total_bytes: disk_total,
                available_bytes: disk_available,
            }],
            temperatures: vec![Temperature {
                sensor: "cpu_thermal".into(),
                celsius,
            }],
            battery: has_battery.then(|| BatteryStatus {
                percent: 40.0 + 60.0 * self.random(16),
                charging: Some(true),
            }),
            interfaces: vec![InterfaceStatus {
                name: "wwan0".into(),
                up: true,
                ..InterfaceStatus::default()
            }],
            processes: vec![ProcessStatus {
                name: "posapp".into(),
                running: !self.faults.has(Fault::AppNotRunning),
            }],
            peripherals: vec![
                peripheral("card_reader", !self.faults.has(Fault::CardReaderMissing)),
                peripheral("printer", true),
                peripheral("pin_pad", !self.faults.has(Fault::PinPadMissing)),
            ],
        }
    }

    /// The full report.
    pub fn report(&self) -> Report {
        let terminal = self.terminal;
        let pos_app = if self.faults.has(Fault::OutdatedApp) {
            OUTDATED_POS_APP
        } else {
            terminal.pos_app
        };
        let software = [
            ("os", "PayOS 7.1"),
            ("kernel", "4.19.157"),
            ("agent", env!("CARGO_PKG_VERSION")),
            ("pos_app", pos_app),
            ("firmware", terminal.firmware),
        ]
        .into_iter()
        .map(|(name, version)| (name.to_string(), ComponentVersion::known(version)))
        .collect();
        let clock_ahead = self.faults.has(Fault::ClockAhead);
        let ahead = if clock_ahead {
            time::Duration::days(CLOCK_AHEAD_DAYS)
        } else {
            time::Duration::ZERO
        };
        let offset_ms = 40.0 * (self.random(17) - 0.5) + ahead.as_seconds_f64() * 1000.0;
        Report {
            schema_version: SCHEMA_VERSION,
            terminal_id: terminal.id.clone(),
            sequence: self.sequence,
            // The terminal stamps its reports with its own clock.
            observed_at: self.observed_at.saturating_add(ahead),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            labels: terminal.labels(),
            probes: TARGETS
                .iter()
                .enumerate()
                .map(|(index, (name, address))| self.ladder(index, name, address))
                .collect(),
            software,
            device: Some(self.device()),
            clock: Some(ClockStatus {
                offset_ms,
                uncertainty_ms: 20.0 + 30.0 * self.random(18),
                ntp_synchronized: Some(!clock_ahead),
            }),
            dropped_reports: self.dropped_reports,
            unchanged: Vec::new(),
            agent_instance: None,
            intervals: None,
            data_usage: None,
            config: None,
            probe_request: None,
        }
    }
}

/// Tries per cycle on the TCP rung (the agent's default `attempts`).
pub const TCP_ATTEMPTS: u32 = 3;
/// How far ahead a `clock_ahead` fault sets the terminal's clock.
pub const CLOCK_AHEAD_DAYS: i64 = 365;

/// The router's address in a gateway subnet (`10.0.7.0/24` → `10.0.7.1`).
fn gateway_address(subnet: &str) -> String {
    let network = subnet.split('/').next().unwrap_or(subnet);
    match network.rsplit_once('.') {
        Some((prefix, _)) => format!("{prefix}.1"),
        None => network.to_string(),
    }
}

fn finish(name: &str, address: &str, stages: Vec<StageResult>) -> ProbeResult {
    ProbeResult {
        target: name.to_string(),
        address: address.to_string(),
        stages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::DEFAULT_TARGET;

    fn report(faults: Vec<(Fault, &'static str)>) -> Report {
        let terminal = SimTerminal::new(1, "SIM-", 5);
        let loss = faults
            .iter()
            .filter(|(fault, _)| *fault == Fault::PacketLoss)
            .map(|(_, target)| (*target, 0.6))
            .collect();
        let active = Active { faults, loss };
        Moment {
            seed: 1,
            terminal: &terminal,
            sequence: 7,
            observed_at: OffsetDateTime::UNIX_EPOCH,
            draw: 7,
            faults: &active,
            dropped_reports: 0,
        }
        .report()
    }

    fn first_failure(report: &Report, target: usize) -> Option<(Stage, Option<ErrorKind>)> {
        report.probes[target]
            .first_failure()
            .map(|stage| (stage.stage, stage.error))
    }

    #[test]
    fn every_report_is_valid_and_faults_show_where_they_should() {
        let healthy = report(vec![]);
        validate_report(&healthy, "report").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(first_failure(&healthy, 0), None);

        let outage = report(vec![(Fault::HostOutage, DEFAULT_TARGET)]);
        assert_eq!(
            first_failure(&outage, 0),
            Some((Stage::Tcp, Some(ErrorKind::Timeout)))
        );
        assert_eq!(first_failure(&outage, 1), None, "only the named target");

        let router = report(vec![(Fault::GatewayDown, DEFAULT_TARGET)]);
        assert_eq!(
            first_failure(&router, 1),
            Some((Stage::Gateway, Some(ErrorKind::Timeout)))
        );

        let everything = report(vec![
            (Fault::DnsFailure, DEFAULT_TARGET),
            (Fault::OutdatedApp, DEFAULT_TARGET),
            (Fault::Overheat, DEFAULT_TARGET),
            (Fault::DiskFull, DEFAULT_TARGET),
            (Fault::CardReaderMissing, DEFAULT_TARGET),
        ]);
        validate_report(&everything, "report").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            first_failure(&everything, 0),
            Some((Stage::Dns, Some(ErrorKind::Servfail)))
        );
        assert_eq!(
            everything.software["pos_app"].version.as_deref(),
            Some(OUTDATED_POS_APP)
        );
        let device = everything.device.unwrap_or_default();
        assert!(device.temperatures[0].celsius >= 85.0);
        assert!(device.disks[0].available_bytes * 100 <= device.disks[0].total_bytes);
        assert!(!device.peripherals[0].present);

        let lossy = report(vec![(Fault::PacketLoss, DEFAULT_TARGET)]);
        let tcp = &lossy.probes[0].stages[3];
        assert_eq!((tcp.stage, tcp.status), (Stage::Tcp, StageStatus::Ok));
        assert_eq!(lossy.probes[1].stages[3].loss_ratio(), 0.0);

        let rungs =
            |faults: Vec<(Fault, &'static str)>| -> Vec<Option<(Stage, Option<ErrorKind>)>> {
                let report = report(faults);
                validate_report(&report, "report").unwrap_or_else(|error| panic!("{error}"));
                (0..2)
                    .map(|target| first_failure(&report, target))
                    .collect()
            };
        use ErrorKind::*;
        let at = |stage, error| Some((stage, Some(error)));
        assert_eq!(
            rungs(vec![(Fault::LinkDown, DEFAULT_TARGET)]),
            vec![at(Stage::Link, NoCarrier); 2]
        );
        assert_eq!(
            rungs(vec![(Fault::DnsTimeout, DEFAULT_TARGET)]),
            vec![at(Stage::Dns, Timeout); 2]
        );
        assert_eq!(
            rungs(vec![(Fault::HostRefuses, DEFAULT_TARGET)]),
            vec![at(Stage::Tcp, Refused), None]
        );
        assert_eq!(
            rungs(vec![(Fault::HostResets, "tms")]),
            vec![None, at(Stage::Tls, Reset)]
        );
        assert_eq!(
            rungs(vec![(Fault::TlsAlert, DEFAULT_TARGET)]),
            vec![at(Stage::Tls, HandshakeFailed), None]
        );
        assert_eq!(
            rungs(vec![(Fault::CertificateExpired, DEFAULT_TARGET)]),
            vec![at(Stage::Tls, CertificateExpired), None]
        );
        assert_eq!(
            rungs(vec![(Fault::HostOutage, "*")]),
            vec![at(Stage::Tcp, Timeout); 2]
        );
        let skewed = report(vec![(Fault::ClockAhead, DEFAULT_TARGET)]);
        assert_eq!(
            first_failure(&skewed, 1),
            at(Stage::Tls, CertificateExpired)
        );
        let clock = skewed.clock.unwrap_or_else(|| panic!("a clock"));
        assert!(clock.offset_ms > 300.0 * 86_400_000.0 && clock.ntp_synchronized == Some(false));
        assert!(skewed.observed_at.year() == 1971);
        let device = report(vec![
            (Fault::AppNotRunning, DEFAULT_TARGET),
            (Fault::PinPadMissing, DEFAULT_TARGET),
        ])
        .device
        .unwrap_or_default();
        assert!(!device.processes[0].running && !device.peripherals[2].present);
        let slow = report(vec![(Fault::HighLatency, DEFAULT_TARGET)]);
        assert!(slow.probes[0].stages[3]
            .latency_ms
            .is_some_and(|l| l.avg >= 1500.0));
    }
}
