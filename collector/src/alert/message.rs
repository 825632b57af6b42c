//! Notifications and their text. A [`Notification`] is what the outbox stores and a receiver
//! delivers: the group it is for, the alerts that fire and those that resolved, each with
//! what the party needs to act (terminal, merchant, region, the finding, its evidence, since
//! when, the remediation, a link to the dashboard). [`markdown`] renders it in the receiver's
//! language (en or zh-CN) within a byte limit, for the robots and email.
//!
//! Pure: no IO, no clock.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::Language;
use crate::diagnose::{kind_by_code, Evidence};

/// Most alerts listed in one notification (firing and resolved each); the rest are counted.
/// Keeps outbox rows and requests bounded when a whole region goes down.
pub const ALERTS_PER_NOTIFICATION_MAX: usize = 1000;

/// One finding as a notification shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertItem {
    pub finding_id: u64,
    /// Empty for a fleet-wide finding.
    #[serde(default)]
    pub terminal_id: String,
    pub code: String,
    pub category: String,
    pub party: String,
    pub severity: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub merchant: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// For a fleet-wide finding: how many terminal findings it explains.
    #[serde(default)]
    pub explains: u32,
    /// The terminal's dashboard page (the findings page for a fleet-wide finding).
    pub link: String,
}

/// One message to one receiver about one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// A reminder that the group still fires, with nothing new.
    #[serde(default)]
    pub repeat: bool,
    pub firing: Vec<AlertItem>,
    pub resolved: Vec<AlertItem>,
    /// Alerts beyond [`ALERTS_PER_NOTIFICATION_MAX`], counted only.
    #[serde(default)]
    pub more_firing: usize,
    #[serde(default)]
    pub more_resolved: usize,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Notification {
    pub fn firing_count(&self) -> usize {
        self.firing.len() + self.more_firing
    }

    pub fn resolved_count(&self) -> usize {
        self.resolved.len() + self.more_resolved
    }

    /// `firing` while anything fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.firing_count() > 0 {
            "firing"
        } else {
            "resolved"
        }
    }
}

struct Words {
    firing: &'static str,
    resolved: &'static str,
    reminder: &'static str,
    party: &'static str,
    remediation: &'static str,
    since: &'static str,
    closed: &'static str,
    merchant: &'static str,
    region: &'static str,
    carrier: &'static str,
    model: &'static str,
    terminals: &'static str,
    findings: &'static str,
    explains: &'static str,
    more: &'static str,
    dashboard: &'static str,
}

const EN: Words = Words {
    firing: "FIRING",
    resolved: "RESOLVED",
    reminder: "still firing",
    party: "Who must act",
    remediation: "What to do",
    since: "since",
    closed: "resolved at",
    merchant: "merchant",
    region: "region",
    carrier: "carrier",
    model: "model",
    terminals: "terminals",
    findings: "findings",
    explains: "terminal findings explained",
    more: "more, see the dashboard",
    dashboard: "dashboard",
};

const ZH_CN: Words = Words {
    firing: "告警",
    resolved: "已恢复",
    reminder: "仍在告警",
    party: "负责方",
    remediation: "处理建议",
    since: "开始于",
    closed: "恢复于",
    merchant: "商户",
    region: "地区",
    carrier: "运营商",
    model: "型号",
    terminals: "台终端",
    findings: "项问题",
    explains: "个终端告警被归因于此",
    more: "条未列出，请查看控制台",
    dashboard: "控制台",
};

fn words(language: Language) -> &'static Words {
    match language {
        Language::En => &EN,
        Language::ZhCn => &ZH_CN,
    }
}

fn party_name(party: &str, language: Language) -> &str {
    let zh = match party {
        "merchant" => "商户",
        "pos_vendor" => "POS 终端厂商",
        "network_provider" => "网络运营商",
        "software_vendor" => "软件供应商",
        "acquirer" => "收单机构",
        "operations" => "运维团队",
        other => other,
    };
    let en = match party {
        "merchant" => "the merchant",
        "pos_vendor" => "the POS vendor",
        "network_provider" => "the network provider",
        "software_vendor" => "the software vendor",
        "acquirer" => "the acquirer",
        "operations" => "operations",
        other => other,
    };
    match language {
        Language::En => en,
        Language::ZhCn => zh,
    }
}

fn kind_title(code: &str, language: Language) -> String {
    match (kind_by_code(code), language) {
        (Some(kind), Language::En) => kind.title.en.to_string(),
        (Some(kind), Language::ZhCn) => kind.title.zh_cn.to_string(),
        (None, _) => code.to_string(),
    }
}

fn remediation(code: &str, language: Language) -> &'static str {
    match (kind_by_code(code), language) {
        (Some(kind), Language::En) => kind.remediation.en,
        (Some(kind), Language::ZhCn) => kind.remediation.zh_cn,
        (None, _) => "",
    }
}

/// `2026-11-26 02:00:00 UTC`
pub fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// RFC 3339, as the JSON receivers expect.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The one-line title: `[FIRING:37] Host unreachable` or `【告警:37】主机不可达`.
pub fn title(notification: &Notification, language: Language) -> String {
    let words = words(language);
    let (status, count, items) = if notification.firing_count() > 0 {
        (
            words.firing,
            notification.firing_count(),
            &notification.firing,
        )
    } else {
        (
            words.resolved,
            notification.resolved_count(),
            &notification.resolved,
        )
    };
    let first = items.first().map(|item| item.code.as_str()).unwrap_or("");
    let what = if items.iter().all(|item| item.code == first) {
        kind_title(first, language)
    } else {
        format!("{count} {}", words.findings)
    };
    let scope = notification
        .group_labels
        .get("region")
        .filter(|region| !region.is_empty())
        .map(|region| format!(" · {region}"))
        .unwrap_or_default();
    match language {
        Language::En => format!("[{status}:{count}] {what}{scope}"),
        Language::ZhCn => format!("【{status}:{count}】{what}{scope}"),
    }
}

fn item_line(item: &AlertItem, language: Language, resolved: bool) -> String {
    let words = words(language);
    let mut line = String::from("- ");
    if item.terminal_id.is_empty() {
        let _ = write!(line, "**{}**", item.subject);
        if item.explains > 0 {
            let _ = write!(line, " · {} {}", item.explains, words.explains);
        }
    } else {
        let _ = write!(line, "**{}**", item.terminal_id);
        if !item.subject.is_empty() {
            let _ = write!(line, " ({})", item.subject);
        }
    }
    for (word, value) in [
        (words.merchant, &item.merchant),
        (words.region, &item.region),
        (words.carrier, &item.carrier),
        (words.model, &item.model),
    ] {
        if let Some(value) = value {
            let _ = write!(line, " · {word} {value}");
        }
    }
    let _ = write!(line, " · {} {}", words.since, format_time(item.since));
    if let (true, Some(closed)) = (resolved, item.closed_at) {
        let _ = write!(line, " · {} {}", words.closed, format_time(closed));
    }
    if !resolved && !item.evidence.is_empty() {
        let evidence: Vec<String> = item
            .evidence
            .iter()
            .map(|evidence| match &evidence.threshold {
                Some(threshold) => format!("{}={} ({threshold})", evidence.name, evidence.value),
                None => format!("{}={}", evidence.name, evidence.value),
            })
            .collect();
        let _ = write!(line, " · `{}`", evidence.join(", "));
    }
    let _ = write!(line, " · [{}]({})", words.dashboard, item.link);
    line
}

/// The blocks of one section (firing or resolved): per code, a heading with the party and
/// the remediation, then one line per alert.
fn section(items: &[AlertItem], language: Language, resolved: bool, out: &mut Vec<(String, bool)>) {
    let words = words(language);
    let mut codes: Vec<&str> = Vec::new();
    for item in items {
        if !codes.contains(&item.code.as_str()) {
            codes.push(&item.code);
        }
    }
    for code in codes {
        let of_code: Vec<&AlertItem> = items.iter().filter(|item| item.code == code).collect();
        let Some(first) = of_code.first() else {
            continue;
        };
        let status = if resolved {
            words.resolved
        } else {
            words.firing
        };
        let count = if of_code.iter().any(|item| item.terminal_id.is_empty()) {
            String::new()
        } else {
            format!(" · {} {}", of_code.len(), words.terminals)
        };
        out.push((
            format!(
                "### {status}: {} ({}, `{code}`){count}",
                kind_title(code, language),
                first.severity
            ),
            true,
        ));
        if !resolved {
            out.push((
                format!(
                    "**{}**: {}\n\n**{}**: {}",
                    words.party,
                    party_name(&first.party, language),
                    words.remediation,
                    remediation(code, language)
                ),
                true,
            ));
        }
        for item in of_code {
            out.push((item_line(item, language, resolved), false));
        }
    }
}

/// The message as markdown, at most `max_bytes` long (UTF-8): alert lines that do not fit are
/// left out and counted in a last line that points to the dashboard.
pub fn markdown(notification: &Notification, language: Language, max_bytes: usize) -> String {
    let words = words(language);
    let mut blocks: Vec<(String, bool)> = Vec::new();
    let mut heading = format!("## {}", title(notification, language));
    if notification.repeat {
        let _ = write!(heading, " ({})", words.reminder);
    }
    blocks.push((heading, true));
    if !notification.group_labels.is_empty() {
        let labels: Vec<String> = notification
            .group_labels
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        blocks.push((format!("`{}`", labels.join(", ")), true));
    }
    section(&notification.firing, language, false, &mut blocks);
    section(&notification.resolved, language, true, &mut blocks);
    let mut omitted = notification.more_firing + notification.more_resolved;
    // Room for the last line, which counts what was left out.
    let reserve = 120;
    let mut text = String::new();
    for (block, is_heading) in blocks {
        let needed = block.len() + 2;
        if text.len() + needed + reserve > max_bytes {
            if !is_heading {
                omitted += 1;
            }
            continue;
        }
        if !text.is_empty() {
            text.push_str(if is_heading { "\n\n" } else { "\n" });
        }
        text.push_str(&block);
    }
    if omitted > 0 {
        let _ = write!(text, "\n\n… {omitted} {}", words.more);
    }
    truncate_to(&mut text, max_bytes);
    text
}

/// Cuts `text` to at most `max_bytes`, at a character boundary.
pub fn truncate_to(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub fn item(terminal: &str, code: &str, region: &str) -> AlertItem {
        AlertItem {
            finding_id: 1,
            terminal_id: terminal.into(),
            code: code.into(),
            category: "environment".into(),
            party: "network_provider".into(),
            severity: "critical".into(),
            subject: "payment-host".into(),
            merchant: Some("M-7".into()),
            region: Some(region.into()),
            carrier: Some("carrier-x".into()),
            model: None,
            evidence: vec![Evidence::new("error", "refused")],
            since: datetime!(2026-11-26 02:00 UTC),
            closed_at: None,
            explains: 0,
            link: format!("http://dash/#/terminal/{terminal}"),
        }
    }

    pub fn notification(firing: usize) -> Notification {
        Notification {
            receiver: "ops".into(),
            group_key: "code=env.network.host_unreachable,region=cn-east".into(),
            group_labels: [
                (
                    "code".to_string(),
                    "env.network.host_unreachable".to_string(),
                ),
                ("region".to_string(), "cn-east".to_string()),
            ]
            .into(),
            repeat: false,
            firing: (0..firing)
                .map(|index| {
                    item(
                        &format!("T-{index:03}"),
                        "env.network.host_unreachable",
                        "cn-east",
                    )
                })
                .collect(),
            resolved: vec![],
            more_firing: 0,
            more_resolved: 0,
            created_at: datetime!(2026-11-26 02:01 UTC),
        }
    }

    fn check(notification: &Notification, language: Language, max_bytes: usize, expected: &[&str]) {
        let text = markdown(notification, language, max_bytes);
        assert!(text.len() <= max_bytes, "{} > {max_bytes}", text.len());
        for part in expected {
            assert!(text.contains(part), "{part:?} not in:\n{text}");
        }
    }

    #[test]
    fn messages_carry_what_the_party_needs_in_its_language() {
        let one = notification(1);
        check(
            &one,
            Language::En,
            4096,
            &[
                "## [FIRING:1] Payment host unreachable · cn-east",
                "**Who must act**: the network provider",
                "**What to do**: ",
                "**T-000** (payment-host) · merchant M-7 · region cn-east · carrier carrier-x · since 2026-11-26 02:00:00 UTC · `error=refused` · [dashboard](http://dash/#/terminal/T-000)",
            ],
        );
        check(
            &one,
            Language::ZhCn,
            4096,
            &[
                "【告警:1】",
                "**负责方**: 网络运营商",
                "**处理建议**: ",
                "商户 M-7",
                "地区 cn-east",
                "开始于 2026-11-26 02:00:00 UTC",
            ],
        );
        let mut resolved = notification(0);
        let mut closed = item("T-9", "env.network.host_unreachable", "cn-east");
        closed.closed_at = Some(datetime!(2026-11-26 03:00 UTC));
        resolved.resolved.push(closed);
        check(
            &resolved,
            Language::En,
            4096,
            &["## [RESOLVED:1]", "resolved at 2026-11-26 03:00:00 UTC"],
        );
    }

    #[test]
    fn a_large_group_fits_the_limit_and_counts_what_is_left_out() {
        let big = notification(100);
        let text = markdown(&big, Language::ZhCn, 4096);
        assert!(text.len() <= 4096);
        assert!(text.contains("【告警:100】"), "{text}");
        assert!(text.contains("条未列出"), "{text}");
        let all = markdown(&big, Language::En, 100_000);
        assert!(all.contains("T-099") && !all.contains("more, see the dashboard"));
    }
}
