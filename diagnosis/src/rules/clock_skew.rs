//! Clock skew: the terminal's clock is off from the collector's by more than the allowed
//! offset, beyond the uncertainty of the measurement. Card payments and TLS need a right clock.

use posmon_protocol::{ErrorKind, Report, StageResult};

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Severity, Signal, Text};

pub static CLOCK_SKEW: FindingKind = FindingKind {
    code: "env.clock_skew",
    category: Category::Environment,
    party: Party::Operations,
    title: Text {
        en: "Terminal clock is wrong",
        zh_cn: "终端时钟不准",
    },
    remediation: Text {
        en: "The terminal's clock is off. The terminal's operations team enables time synchronisation (NTP) on the terminal and checks that it can reach its time server; a wrong clock breaks TLS and transaction timestamps.",
        zh_cn: "终端时钟偏差过大。请终端运维团队在终端上启用时间同步（NTP）并确认能访问时间服务器；时钟错误会导致 TLS 失败和交易时间戳错误。",
    },
    hysteresis: Hysteresis::new(2, 2),
};

pub static CLOCK_BREAKS_TLS: FindingKind = FindingKind {
    code: "env.clock_breaks_tls",
    category: Category::Environment,
    party: Party::Operations,
    title: Text {
        en: "The terminal's wrong clock breaks TLS",
        zh_cn: "终端时钟错误导致 TLS 失败",
    },
    remediation: Text {
        en: "The terminal rejects the host's certificate as expired or not yet valid only because its own clock is off; the certificate is fine. The terminal's operations team sets the clock right and enables time synchronisation (NTP) on the terminal.",
        zh_cn: "终端因自身时钟错误而将主机证书判为过期或尚未生效，证书本身正常。请终端运维团队校正终端时钟并启用时间同步（NTP）。",
    },
    hysteresis: Hysteresis::new(2, 2),
};

/// A time before which a terminal's clock is certainly wrong: no posmon agent ran before it.
/// A clock reset to 1970 (a flat RTC battery) or to a firmware's build date lands before it, and
/// then every certificate looks "not valid yet" or is judged against the wrong day. Raise it
/// only to a date already past when the release ships.
pub const CLOCK_FLOOR: time::OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

/// Whether the report's own time (the terminal's clock) is before [`CLOCK_FLOOR`].
pub fn clock_before_floor(report: &Report) -> bool {
    report.observed_at < CLOCK_FLOOR
}

/// Whether a rung failed for a certificate's validity dates.
pub fn validity_error(failed: &StageResult) -> bool {
    matches!(
        failed.error,
        Some(ErrorKind::CertificateExpired | ErrorKind::CertificateNotYetValid)
    )
}

/// A day: the agent reports a certificate's days left rounded down.
const DAY_SECONDS: f64 = 86_400.0;

/// Whether the terminal's clock explains a failed TLS rung: the certificate is rejected for
/// its validity dates, the clock is off beyond the allowed offset (beyond the measurement's
/// uncertainty) in the direction that explains the rejection (ahead: "expired"; behind: "not
/// yet valid"), and, for "expired", the certificate is still valid by the collector's clock
/// (its days left, corrected by the offset, with a day of rounding).
///
/// Without a measurement of the clock (the agent offline, `posmon-agent probe`), a clock before
/// [`CLOCK_FLOOR`] explains a rejection for validity dates on its own.
pub fn breaks_tls(report: &Report, failed: &StageResult, policy: &Policy<'_>) -> bool {
    let Some(clock) = &report.clock else {
        return clock_before_floor(report) && validity_error(failed);
    };
    let allowed_ms = policy.thresholds.clock_skew_seconds * 1000.0;
    if clock.offset_ms.abs() - clock.uncertainty_ms <= allowed_ms {
        return false;
    }
    let ahead = clock.offset_ms > 0.0;
    match failed.error {
        Some(ErrorKind::CertificateExpired) if ahead => {
            failed.certificate_days_left.is_none_or(|days| {
                days as f64 * DAY_SECONDS + clock.offset_ms / 1000.0 + DAY_SECONDS >= 0.0
            })
        }
        Some(ErrorKind::CertificateNotYetValid) => !ahead,
        _ => false,
    }
}

/// An offset this many times the allowed one is critical: certificates and payment messages
/// start to be refused.
const CRITICAL_FACTOR: f64 = 10.0;

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(clock) = &report.clock else {
        return;
    };
    let allowed_ms = policy.thresholds.clock_skew_seconds * 1000.0;
    // Only the part of the offset the measurement is sure of counts.
    let certain_ms = clock.offset_ms.abs() - clock.uncertainty_ms;
    if certain_ms <= allowed_ms {
        return;
    }
    let severity = if certain_ms > allowed_ms * CRITICAL_FACTOR {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let mut evidence =
        vec![
            Evidence::new("offset_seconds", format!("{:.1}", clock.offset_ms / 1000.0))
                .with_threshold(format!(
                    "within ±{} (±{:.1} uncertainty)",
                    policy.thresholds.clock_skew_seconds,
                    clock.uncertainty_ms / 1000.0
                )),
        ];
    if let Some(synchronized) = clock.ntp_synchronized {
        evidence.push(Evidence::new("ntp_synchronized", synchronized.to_string()));
    }
    signals.push(Signal {
        kind: &CLOCK_SKEW,
        severity,
        subject: String::new(),
        evidence,
    });
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{ClockStatus, Report};

    fn offset(offset_ms: f64, uncertainty_ms: f64) -> Report {
        with(move |report| {
            report.clock = Some(ClockStatus {
                offset_ms,
                uncertainty_ms,
                ntp_synchronized: Some(false),
            })
        })
    }

    #[test]
    fn clock_skew_table() {
        let (skewed, right) = (|| offset(-120_000.0, 50.0), || offset(300.0, 50.0));
        check_code(
            CodeCase {
                code: "env.clock_skew",
                opens: vec![right(), skewed(), skewed()],
                must_not_open: vec![
                    vec![skewed(), right(), skewed(), right()],
                    // The offset is within the uncertainty of a slow exchange.
                    vec![offset(65_000.0, 10_000.0); 3],
                    vec![offset(59_000.0, 0.0); 3],
                ],
                closes: vec![right(), right()],
            },
            &[],
        );
    }
}
