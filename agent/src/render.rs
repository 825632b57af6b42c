//! The readable form of a report that `posmon-agent probe` prints for a field engineer: the
//! ladder rung by rung per target with the first failing rung marked, then versions, device and
//! peripherals; then the local verdict: each finding with its effect on payments, whom to call
//! and what to do, and the overall verdict line. Headings are in English and Simplified
//! Chinese; the verdict's texts in the language asked for (`--lang`), both by default. Pure:
//! data in, text out.

use std::fmt::Write;

use posmon_diagnosis::readiness::Readiness;
use posmon_diagnosis::Text;
use posmon_protocol::{DeviceStatus, ProbeResult, Report, StageResult, StageStatus};

use crate::status::Verdict;

/// The language of the verdict's texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    #[value(name = "en")]
    En,
    #[value(name = "zh-CN")]
    ZhCn,
    /// English, then Simplified Chinese.
    #[value(name = "both")]
    Both,
}

impl Lang {
    /// The text's lines in this language.
    fn lines(self, en: &str, zh_cn: &str) -> Vec<String> {
        match self {
            Lang::En => vec![en.to_string()],
            Lang::ZhCn => vec![zh_cn.to_string()],
            Lang::Both => vec![en.to_string(), zh_cn.to_string()],
        }
    }

    fn text(self, text: Text) -> Vec<String> {
        self.lines(text.en, text.zh_cn)
    }

    /// One line: one language, or "English / 中文".
    fn inline(self, en: &str, zh_cn: &str) -> String {
        match self {
            Lang::En => en.to_string(),
            Lang::ZhCn => zh_cn.to_string(),
            Lang::Both => format!("{en} / {zh_cn}"),
        }
    }
}

/// The local verdict as text: each finding (most urgent first) with its effect on payments,
/// the plain meaning of its failed rung and the raw error, whom to call and what to do; then
/// the verdict line.
pub fn render_verdict(verdict: &Verdict, lang: Lang) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", lang.inline("Diagnosis", "诊断"));
    if verdict.findings.is_empty() {
        let _ = writeln!(out, "  {}", lang.inline("no problem found", "未发现问题"));
    }
    for finding in &verdict.findings {
        let mark = if finding.effect == Readiness::CannotPay {
            "✗"
        } else {
            "!"
        };
        let subject = if finding.subject.is_empty() {
            String::new()
        } else {
            format!(" — {}", finding.subject)
        };
        let effect = finding.effect.label();
        let _ = writeln!(
            out,
            "  {mark} {}{subject} [{}] ({})",
            lang.inline(finding.title.en, finding.title.zh_cn),
            lang.inline(effect.en, effect.zh_cn),
            finding.code
        );
        if let Some(rung) = &finding.rung {
            for line in lang.text(rung.plain) {
                let _ = writeln!(out, "      {}: {line}", rung.stage);
            }
            if let Some(detail) = &rung.detail {
                let _ = writeln!(
                    out,
                    "      {}: {detail}",
                    lang.inline("raw error", "原始错误")
                );
            }
        }
        let contact = finding.contact.as_ref();
        let name_en = contact.map_or(finding.party_label.en, |contact| contact.name.as_str());
        let name_zh_cn = contact.map_or(finding.party_label.zh_cn, |contact| {
            contact.name_zh_cn.as_deref().unwrap_or(&contact.name)
        });
        let phone = contact
            .and_then(|contact| contact.phone.as_deref())
            .map(|phone| format!(", {phone}"))
            .unwrap_or_default();
        let who = |name: &str, label: &str| {
            if contact.is_some() {
                format!("{name} ({label}){phone}")
            } else {
                name.to_string()
            }
        };
        for line in lang.lines(
            &format!("Call: {}", who(name_en, finding.party_label.en)),
            &format!("联系: {}", who(name_zh_cn, finding.party_label.zh_cn)),
        ) {
            let _ = writeln!(out, "      {line}");
        }
        for line in lang.lines(
            &format!("What to do: {}", finding.remediation.en),
            &format!("处理办法: {}", finding.remediation.zh_cn),
        ) {
            let _ = writeln!(out, "      {line}");
        }
    }
    let label = verdict.readiness_label;
    for line in lang.lines(
        &format!(
            "Verdict: {} — {}",
            label.en.to_uppercase(),
            verdict.headline.en
        ),
        &format!("结论: {} — {}", label.zh_cn, verdict.headline.zh_cn),
    ) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The report as text, one fact per line.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let when = report
        .observed_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "posmon-agent {} — terminal {} — {when}",
        report.agent_version, report.terminal_id
    );
    let _ = writeln!(out, "\nNetwork path / 网络路径");
    if report.probes.is_empty() {
        let _ = writeln!(out, "  no targets configured / 未配置目标");
    }
    for probe in &report.probes {
        ladder(&mut out, probe);
    }
    let _ = writeln!(out, "\nSoftware / 软件版本");
    for (name, version) in &report.software {
        match (&version.version, &version.unknown_reason) {
            (Some(version), _) => {
                let _ = writeln!(out, "  {name:<12} {version}");
            }
            (None, reason) => {
                let reason = reason.as_deref().unwrap_or_default();
                let _ = writeln!(out, "  {name:<12} unknown / 未知: {reason}");
            }
        }
    }
    if let Some(device) = &report.device {
        device_lines(&mut out, device);
    }
    if let Some(clock) = &report.clock {
        let _ = writeln!(
            out,
            "\nClock / 时钟\n  offset {:+.0} ms ± {:.0} ms against the collector{}",
            clock.offset_ms,
            clock.uncertainty_ms,
            match clock.ntp_synchronized {
                Some(true) => ", NTP synchronized",
                Some(false) => ", NTP NOT synchronized",
                None => "",
            }
        );
    }
    out
}

fn ladder(out: &mut String, probe: &ProbeResult) {
    let _ = writeln!(out, "  {} ({})", probe.target, probe.address);
    let first_failure = probe.stages.iter().position(|stage| {
        stage.status == StageStatus::Failed && stage.stage != posmon_protocol::Stage::Icmp
    });
    for (index, stage) in probe.stages.iter().enumerate() {
        let _ = write!(out, "    {}", rung(stage));
        if Some(index) == first_failure {
            let _ = write!(out, "   <== first failure / 首个故障");
        }
        out.push('\n');
    }
    match first_failure.and_then(|index| probe.stages.get(index)) {
        Some(failed) => {
            let _ = writeln!(
                out,
                "    => FAILED at {} ({}) / 故障环节: {}",
                failed.stage.as_str(),
                failed.error.map_or("other", |error| error.as_str()),
                failed.stage.as_str()
            );
        }
        None => {
            let _ = writeln!(out, "    => ok / 正常");
        }
    }
}

fn rung(stage: &StageResult) -> String {
    let mark = match stage.status {
        StageStatus::Ok => "✓",
        StageStatus::Failed => "✗",
        StageStatus::Unavailable => "–",
    };
    let mut line = format!("{mark} {:<8}", stage.stage.as_str());
    match (stage.status, stage.error) {
        (StageStatus::Failed, Some(error)) => {
            let _ = write!(line, " {}", error.as_str());
        }
        (StageStatus::Unavailable, _) => line.push_str(" unavailable"),
        _ => {}
    }
    if stage.attempts > 1 || stage.successes != u32::from(stage.status == StageStatus::Ok) {
        let _ = write!(
            line,
            " {}/{} ok ({:.0}% loss)",
            stage.successes,
            stage.attempts,
            stage.loss_ratio() * 100.0
        );
    }
    if let Some(latency) = &stage.latency_ms {
        let _ = write!(
            line,
            " {:.1} ms (min {:.1}, max {:.1}, jitter {:.1})",
            latency.avg, latency.min, latency.max, latency.jitter
        );
    }
    if let Some(status) = stage.http_status {
        let _ = write!(line, " HTTP {status}");
    }
    if let Some(version) = &stage.tls_version {
        let _ = write!(line, " {version}");
    }
    if let Some(days) = stage.certificate_days_left {
        let _ = write!(line, " certificate expires in {days} days");
    }
    if let Some(detail) = &stage.detail {
        let _ = write!(line, " — {detail}");
    }
    line
}

fn device_lines(out: &mut String, device: &DeviceStatus) {
    let _ = writeln!(out, "\nDevice / 设备");
    let mut summary = Vec::new();
    if let Some(cpu) = device.cpu_percent {
        summary.push(format!("cpu {cpu:.0}%"));
    }
    if let Some(load) = device.load_average_1m {
        summary.push(format!("load {load:.2}"));
    }
    if let (Some(total), Some(available)) =
        (device.memory_total_bytes, device.memory_available_bytes)
    {
        summary.push(format!(
            "memory {} free of {}",
            size(available),
            size(total)
        ));
    }
    if let (Some(total), Some(used)) = (device.swap_total_bytes, device.swap_used_bytes) {
        summary.push(format!("swap {} used of {}", size(used), size(total)));
    }
    if let Some(uptime) = device.uptime_seconds {
        summary.push(format!(
            "up {}d {}h",
            uptime / 86_400,
            uptime % 86_400 / 3600
        ));
    }
    let _ = writeln!(out, "  {}", summary.join(", "));
    for disk in &device.disks {
        let _ = writeln!(
            out,
            "  disk {} {} free of {}",
            disk.mount,
            size(disk.available_bytes),
            size(disk.total_bytes)
        );
    }
    for temperature in &device.temperatures {
        let _ = writeln!(
            out,
            "  temperature {} {:.1} °C",
            temperature.sensor, temperature.celsius
        );
    }
    if let Some(battery) = &device.battery {
        let charging = match battery.charging {
            Some(true) => ", charging",
            Some(false) => ", not charging",
            None => "",
        };
        let _ = writeln!(out, "  battery {:.0}%{charging}", battery.percent);
    }
    for interface in &device.interfaces {
        let _ = write!(
            out,
            "  interface {} {} — rx errors {} dropped {}, tx errors {} dropped {}",
            interface.name,
            if interface.up { "up" } else { "down" },
            interface.rx_errors,
            interface.rx_dropped,
            interface.tx_errors,
            interface.tx_dropped
        );
        if let Some(signal) = interface.wifi_signal_dbm {
            let _ = write!(out, ", Wi-Fi {signal} dBm");
        }
        out.push('\n');
    }
    for process in &device.processes {
        let state = if process.running {
            "✓ running / 运行中"
        } else {
            "✗ NOT RUNNING / 未运行"
        };
        let _ = writeln!(out, "  process {} {state}", process.name);
    }
    if !device.peripherals.is_empty() {
        let _ = writeln!(out, "\nPeripherals / 外设");
    }
    for peripheral in &device.peripherals {
        let state = if peripheral.present {
            "✓ present / 已连接"
        } else {
            "✗ MISSING / 未连接"
        };
        let detail = peripheral.detail.as_deref().unwrap_or_default();
        let _ = writeln!(out, "  {} {state} — {detail}", peripheral.name);
    }
}

/// Bytes in binary units, one decimal.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_protocol::{ErrorKind, Stage};

    fn check(stage: StageResult, expected: &str) {
        assert_eq!(rung(&stage), expected);
    }

    fn result(kind: Stage, status: StageStatus, error: Option<ErrorKind>) -> StageResult {
        StageResult {
            error,
            ..crate::probe::stage(kind, status)
        }
    }

    #[test]
    fn rungs_read_as_one_line_each() {
        check(result(Stage::Link, StageStatus::Ok, None), "✓ link    ");
        check(
            StageResult {
                detail: Some("127.0.0.1:9: Connection refused".into()),
                attempts: 3,
                ..result(Stage::Tcp, StageStatus::Failed, Some(ErrorKind::Refused))
            },
            "✗ tcp      refused 0/3 ok (100% loss) — 127.0.0.1:9: Connection refused",
        );
        check(
            StageResult {
                tls_version: Some("TLSv1.3".into()),
                certificate_days_left: Some(-3),
                ..result(
                    Stage::Tls,
                    StageStatus::Failed,
                    Some(ErrorKind::CertificateExpired),
                )
            },
            "✗ tls      certificate_expired TLSv1.3 certificate expires in -3 days",
        );
        check(
            result(Stage::Icmp, StageStatus::Unavailable, None),
            "– icmp     unavailable",
        );
    }

    #[test]
    fn sizes_are_in_binary_units() {
        assert_eq!(size(512), "512.0 B");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
