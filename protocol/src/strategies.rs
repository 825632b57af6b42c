//! Proptest strategies for every wire type, for the property tests of this crate and of the
//! collector (feature `proptest`). They reach the extremes a hostile terminal can send: any
//! date `time` can represent, any integer, NaN and infinities, empty, over-long and
//! control-character strings — not only the values a well-behaved agent produces.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use time::OffsetDateTime;

use crate::report::{
    BatteryStatus, ClockStatus, ComponentVersion, DataUsage, DeviceStatus, DiskStatus, ErrorKind,
    InterfaceStatus, Intervals, Labels, LatencyStats, PeripheralStatus, ProbeResult, ProcessStatus,
    Report, ReportBatch, Section, Stage, StageResult, StageStatus, Temperature,
};
use crate::SCHEMA_VERSION;

/// A late-2026 instant, around which plausible times fall.
const NOW: i64 = 1_796_000_000;

/// Any instant the wire can carry (years 0000 to 9999), weighted towards the present and the
/// edges.
pub fn any_time(hostile: bool) -> BoxedStrategy<OffsetDateTime> {
    if !hostile {
        return (NOW - 86_400..NOW + 600)
            .prop_map(|seconds| {
                OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
            })
            .boxed();
    }
    // RFC 3339 carries years 0000 to 9999: what a terminal can send.
    let earliest = time::Date::from_calendar_date(0, time::Month::January, 1)
        .map_or(-62_167_219_200, |date| {
            OffsetDateTime::new_utc(date, time::Time::MIDNIGHT).unix_timestamp()
        });
    let latest = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT).unix_timestamp();
    prop_oneof![
        4 => NOW - 400 * 86_400..NOW + 400 * 86_400,
        2 => earliest..=latest,
        1 => Just(earliest),
        1 => Just(latest),
        1 => Just(0_i64),
    ]
    .prop_map(|seconds| {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    })
    .boxed()
}

/// Any `f64`, NaN and infinities included, with the usual values most of the time.
pub fn any_float(hostile: bool) -> BoxedStrategy<f64> {
    if !hostile {
        return (0.0..1000.0_f64).boxed();
    }
    prop_oneof![
        4 => -1000.0..100_000.0_f64,
        1 => any::<f64>(),
        1 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(1e308),
            Just(-0.0),
        ],
    ]
    .boxed()
}

/// Any `u64`, with the edges likely.
pub fn any_count(hostile: bool) -> BoxedStrategy<u64> {
    if !hostile {
        return (0..10_000_u64).boxed();
    }
    prop_oneof![
        4 => 0..10_000_u64,
        1 => any::<u64>(),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(1 << 53), Just(i64::MAX as u64 + 1)],
    ]
        .boxed()
}

/// Text: usually short and plain, sometimes long, with markup, links, control characters or
/// non-ASCII.
pub fn any_text(hostile: bool) -> BoxedStrategy<String> {
    if !hostile {
        return "[a-z0-9._:-]{1,16}".boxed();
    }
    prop_oneof![
        4 => "[a-z0-9._:-]{1,16}",
        1 => "\\PC{0,40}",
        1 => ".{0,300}",
        1 => prop_oneof![
            Just(String::new()),
            Just("[click](https://evil.example/login)".to_string()),
            Just("<img src=x onerror=alert(1)>".to_string()),
            Just("line\n## forged heading\n@all".to_string()),
            Just("收银台\u{202e}moc.live".to_string()),
            Just("x".repeat(10_000)),
        ],
    ]
    .boxed()
}

fn any_stage() -> BoxedStrategy<Stage> {
    prop_oneof![
        Just(Stage::Link),
        Just(Stage::Gateway),
        Just(Stage::Dns),
        Just(Stage::Tcp),
        Just(Stage::Tls),
        Just(Stage::Http),
        Just(Stage::Icmp),
        Just(Stage::Other),
    ]
    .boxed()
}

fn any_status() -> BoxedStrategy<StageStatus> {
    prop_oneof![
        Just(StageStatus::Ok),
        Just(StageStatus::Failed),
        Just(StageStatus::Unavailable),
    ]
    .boxed()
}

fn any_error_kind() -> BoxedStrategy<ErrorKind> {
    prop_oneof![
        Just(ErrorKind::NoCarrier),
        Just(ErrorKind::NoAddress),
        Just(ErrorKind::NoDefaultRoute),
        Just(ErrorKind::Refused),
        Just(ErrorKind::Timeout),
        Just(ErrorKind::Unreachable),
        Just(ErrorKind::Reset),
        Just(ErrorKind::Nxdomain),
        Just(ErrorKind::NoData),
        Just(ErrorKind::Servfail),
        Just(ErrorKind::NoResolver),
        Just(ErrorKind::CertificateExpired),
        Just(ErrorKind::CertificateNotYetValid),
        Just(ErrorKind::UnknownCa),
        Just(ErrorKind::NameMismatch),
        Just(ErrorKind::HandshakeFailed),
        Just(ErrorKind::HttpStatus),
        Just(ErrorKind::ProtocolError),
        Just(ErrorKind::Other),
    ]
    .boxed()
}

/// Attempts and successes of a rung: a few, successes at most attempts, unless hostile.
fn small_or_any_u32(hostile: bool) -> BoxedStrategy<(u32, u32)> {
    if hostile {
        return (any::<u32>(), any::<u32>()).boxed();
    }
    (1..6_u32)
        .prop_flat_map(|attempts| (Just(attempts), 0..=attempts))
        .boxed()
}

fn any_latency(hostile: bool) -> BoxedStrategy<LatencyStats> {
    (
        any_float(hostile),
        any_float(hostile),
        any_float(hostile),
        any_float(hostile),
    )
        .prop_map(|(min, avg, max, jitter)| LatencyStats {
            min,
            avg,
            max,
            jitter,
        })
        .boxed()
}

/// One rung's result.
pub fn any_stage_result(hostile: bool) -> BoxedStrategy<StageResult> {
    (
        (any_stage(), any_status(), option::of(any_error_kind())),
        option::of(any_text(hostile)),
        small_or_any_u32(hostile),
        option::of(any_latency(hostile)),
        option::of(if hostile {
            any::<u16>().boxed()
        } else {
            (100..600_u16).boxed()
        }),
        option::of(any_text(hostile)),
        option::of(if hostile {
            prop_oneof![-400..400_i64, any::<i64>()].boxed()
        } else {
            (0..400_i64).boxed()
        }),
    )
        .prop_map(
            move |(
                (stage, status, error),
                detail,
                (attempts, successes),
                latency_ms,
                http_status,
                tls_version,
                certificate_days_left,
            )| StageResult {
                stage,
                status,
                // A plausible failed rung says why; a plausible passing one does not.
                error: match (hostile, status) {
                    (true, _) => error,
                    (false, StageStatus::Failed) => error.or(Some(ErrorKind::Timeout)),
                    (false, _) => None,
                },
                detail,
                attempts,
                successes,
                latency_ms,
                http_status,
                tls_version,
                certificate_days_left,
            },
        )
        .boxed()
}

/// One target's ladder.
pub fn any_probe(hostile: bool) -> BoxedStrategy<ProbeResult> {
    (
        any_text(hostile),
        any_text(hostile),
        vec(any_stage_result(hostile), 0..9),
    )
        .prop_map(|(target, address, stages)| ProbeResult {
            target,
            address,
            stages,
        })
        .boxed()
}

fn any_labels(hostile: bool) -> BoxedStrategy<Labels> {
    (
        option::of(any_text(hostile)),
        option::of(any_text(hostile)),
        option::of(any_text(hostile)),
        option::of(any_text(hostile)),
        (option::of(any_text(hostile)), option::of(any_text(hostile))),
        btree_map(label_key(hostile), any_text(hostile), 0..4),
    )
        .prop_map(
            |(merchant, model, region, carrier, (gateway, resolver), extra)| Labels {
                merchant,
                model,
                region,
                carrier,
                gateway,
                resolver,
                extra,
            },
        )
        .boxed()
}

/// An agent instance id: a few plausible ones (so that resets happen), or any text.
fn instance(hostile: bool) -> BoxedStrategy<String> {
    if hostile {
        any_text(true)
    } else {
        prop_oneof![
            Just("0f3a9c2e-77b1".to_string()),
            Just("a1b2c3d4-e5f6".to_string())
        ]
        .boxed()
    }
}

fn label_key(hostile: bool) -> BoxedStrategy<String> {
    if hostile {
        any_text(true)
    } else {
        "[a-z][a-z0-9_]{0,15}".boxed()
    }
}

fn any_software(hostile: bool) -> BoxedStrategy<BTreeMap<String, ComponentVersion>> {
    let component = prop_oneof![
        Just("os".to_string()),
        Just("pos_app".to_string()),
        Just("firmware".to_string()),
        label_key(hostile),
    ];
    let version =
        (option::of(any_text(hostile)), any_text(hostile)).prop_map(move |(version, reason)| {
            match version {
                Some(version) => ComponentVersion {
                    version: Some(version),
                    unknown_reason: hostile.then_some(reason),
                },
                None => ComponentVersion::unknown(reason),
            }
        });
    btree_map(component, version, 0..5).boxed()
}

fn any_device(hostile: bool) -> BoxedStrategy<DeviceStatus> {
    let disk = (any_text(hostile), any_count(hostile), any_count(hostile)).prop_map(
        move |(mount, total_bytes, available_bytes)| DiskStatus {
            mount,
            total_bytes,
            available_bytes: if hostile {
                available_bytes
            } else {
                available_bytes.min(total_bytes)
            },
        },
    );
    let temperature = (any_text(hostile), any_float(hostile))
        .prop_map(|(sensor, celsius)| Temperature { sensor, celsius });
    let battery = (any_float(hostile), option::of(any::<bool>()))
        .prop_map(|(percent, charging)| BatteryStatus { percent, charging });
    let interface = (
        any_text(hostile),
        any::<bool>(),
        (
            any_count(hostile),
            any_count(hostile),
            any_count(hostile),
            any_count(hostile),
        ),
        option::of(if hostile {
            any::<i32>().boxed()
        } else {
            (-90..-30_i32).boxed()
        }),
    )
        .prop_map(
            |(name, up, (rx_errors, tx_errors, rx_dropped, tx_dropped), wifi_signal_dbm)| {
                InterfaceStatus {
                    name,
                    up,
                    rx_errors,
                    tx_errors,
                    rx_dropped,
                    tx_dropped,
                    wifi_signal_dbm,
                }
            },
        );
    let process = (any_text(hostile), any::<bool>())
        .prop_map(|(name, running)| ProcessStatus { name, running });
    let peripheral = (
        any_text(hostile),
        any::<bool>(),
        option::of(any_text(hostile)),
    )
        .prop_map(|(name, present, detail)| PeripheralStatus {
            name,
            present,
            detail,
        });
    (
        (
            option::of(any_float(hostile)),
            option::of(any_float(hostile)),
            option::of(any_count(hostile)),
            option::of(any_count(hostile)),
            option::of(any_count(hostile)),
            option::of(any_count(hostile)),
            option::of(any_count(hostile)),
        ),
        (vec(disk, 0..3), vec(temperature, 0..3), option::of(battery)),
        (
            vec(interface, 0..3),
            vec(process, 0..3),
            vec(peripheral, 0..3),
        ),
    )
        .prop_map(
            |(
                (
                    cpu_percent,
                    load_average_1m,
                    memory_total_bytes,
                    memory_available_bytes,
                    swap_total_bytes,
                    swap_used_bytes,
                    uptime_seconds,
                ),
                (disks, temperatures, battery),
                (interfaces, processes, peripherals),
            )| DeviceStatus {
                cpu_percent,
                load_average_1m,
                memory_total_bytes,
                memory_available_bytes,
                swap_total_bytes,
                swap_used_bytes,
                uptime_seconds,
                disks,
                temperatures,
                battery,
                interfaces,
                processes,
                peripherals,
            },
        )
        .boxed()
}

fn any_clock(hostile: bool) -> BoxedStrategy<ClockStatus> {
    (
        any_float(hostile),
        any_float(hostile),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(offset_ms, uncertainty_ms, ntp_synchronized)| ClockStatus {
                offset_ms,
                uncertainty_ms,
                ntp_synchronized,
            },
        )
        .boxed()
}

fn any_section() -> BoxedStrategy<Section> {
    prop_oneof![
        Just(Section::Labels),
        Just(Section::Software),
        Just(Section::Measurements),
        Just(Section::Other)
    ]
    .boxed()
}

/// A report of `terminal_id` with every other field arbitrary.
pub fn any_report_of(terminal_id: String, hostile: bool) -> BoxedStrategy<Report> {
    (
        (
            if hostile {
                prop_oneof![9 => Just(SCHEMA_VERSION), 1 => any::<u32>()].boxed()
            } else {
                Just(SCHEMA_VERSION).boxed()
            },
            any_count(hostile),
            any_time(hostile),
            any_text(hostile),
        ),
        (
            any_labels(hostile),
            vec(any_probe(hostile), 0..4),
            any_software(hostile),
        ),
        (
            option::of(any_device(hostile)),
            option::of(any_clock(hostile)),
            any_count(hostile),
            vec(any_section(), 0..3),
            option::of(instance(hostile)),
            option::of(any_intervals(hostile)),
            option::of(any_data_usage(hostile)),
        ),
    )
        .prop_map(
            move |(
                (schema_version, sequence, observed_at, agent_version),
                (labels, probes, software),
                (device, clock, dropped_reports, unchanged, agent_instance, intervals, data_usage),
            )| {
                let heartbeat = unchanged.contains(&Section::Measurements);
                // An agent's heartbeat carries no measurements; a hostile one may.
                let (probes, device, clock) = if heartbeat && !hostile {
                    (Vec::new(), None, None)
                } else {
                    (probes, device, clock)
                };
                Report {
                    schema_version,
                    terminal_id: terminal_id.clone(),
                    sequence,
                    observed_at,
                    agent_version,
                    labels,
                    probes,
                    software,
                    device,
                    clock,
                    dropped_reports,
                    unchanged,
                    agent_instance,
                    intervals,
                    data_usage,
                    config: None,
                    probe_request: None,
                }
            },
        )
        .boxed()
}

/// An agent's schedule: plausible, or any numbers at all.
fn any_intervals(hostile: bool) -> BoxedStrategy<Intervals> {
    let seconds = if hostile {
        any::<u32>().boxed()
    } else {
        (1u32..=3600).boxed()
    };
    (seconds.clone(), seconds.clone(), seconds)
        .prop_map(
            |(probe_seconds, report_seconds, retry_max_seconds)| Intervals {
                probe_seconds,
                report_seconds,
                retry_max_seconds,
            },
        )
        .boxed()
}

/// A month's data usage: what an agent reports, or any numbers at all.
fn any_data_usage(hostile: bool) -> BoxedStrategy<DataUsage> {
    let (month, bytes, budget, stretch) = if hostile {
        (
            any::<u32>().boxed(),
            any_count(true),
            any_count(true),
            prop_oneof![any::<u32>(), 99u32..=101, Just(10_000u32), Just(10_001u32)].boxed(),
        )
    } else {
        (
            (24_320u32..24_330).boxed(),
            (0u64..20 << 20).boxed(),
            (1u64..20 << 20).boxed(),
            (100u32..=1000).boxed(),
        )
    };
    (
        month,
        (bytes.clone(), bytes.clone(), bytes),
        option::of(budget),
        stretch,
    )
        .prop_map(
            |(month, (report_bytes, probe_bytes, other_bytes), budget_bytes, stretch_percent)| {
                DataUsage {
                    month,
                    report_bytes,
                    probe_bytes,
                    other_bytes,
                    budget_bytes,
                    stretch_percent,
                }
            },
        )
        .boxed()
}

/// A report with every field arbitrary, the terminal id included: half of them plausible
/// (what an agent sends, so that the accepting paths run too), half hostile.
pub fn any_report() -> BoxedStrategy<Report> {
    (
        prop_oneof![4 => Just("T-0001".to_string()), 1 => any_text(true)],
        any::<bool>(),
    )
        .prop_flat_map(|(terminal_id, hostile)| any_report_of(terminal_id, hostile))
        .boxed()
}

/// A batch of up to four arbitrary reports.
pub fn any_batch() -> BoxedStrategy<ReportBatch> {
    vec(any_report(), 0..4)
        .prop_map(|reports| ReportBatch { reports })
        .boxed()
}
