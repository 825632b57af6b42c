//! Notifications and their text. A [`Notification`] is what the outbox stores and a receiver
//! delivers: the group it is for, the alerts that fire and those that resolved, each with
//! what the party needs to act (terminal, merchant, region, the finding, its evidence, since
//! when, the remediation, a link to the dashboard). [`markdown`] renders it in the receiver's
//! language (en or zh-CN) within a byte limit, for the robots and email.
//!
//! Every value that came from a terminal goes through [`Format::value`] (`escape.rs`) for the
//! receiver's syntax; only posmon's own text (titles, remediation, the dashboard link) stays
//! active. Times come from terminals' clocks and may be absurd (year 9999 or -9999): they are
//! formatted and subtracted with checked arithmetic, never panicking.
//!
//! Pure: no IO, no clock.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::Language;
pub use super::escape::Format;
use posmon_diagnosis::readiness::Readiness;
use posmon_diagnosis::{kind_by_code, Category, Evidence};

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
    /// From the terminal's clock: any time `time` holds, see [`any_time`].
    #[serde(with = "any_time")]
    pub since: OffsetDateTime,
    #[serde(default, with = "any_time::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// For a fleet-wide finding: how many terminal findings it explains.
    #[serde(default)]
    pub explains: u32,
    /// The terminal's dashboard page (the findings page for a fleet-wide finding).
    pub link: String,
    /// Who acknowledged it (the problem workflow): the receiver hears who took it, and an
    /// acknowledged alert is not repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// Who it is assigned to: a person's name or a party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

/// A time as RFC 3339 when it can be (years 0 to 9999), else as Unix seconds: a terminal's
/// clock may say year -9999, and such an alert must still be stored in the outbox and sent
/// (RFC 3339 alone would refuse to encode it). Reads both.
pub mod any_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Seconds(i64),
    }

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        match at.format(&Rfc3339) {
            Ok(text) => serializer.serialize_str(&text),
            Err(_) => serializer.serialize_i64(at.unix_timestamp()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        match Repr::deserialize(deserializer)? {
            Repr::Text(text) => {
                OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
            }
            Repr::Seconds(seconds) => {
                OffsetDateTime::from_unix_timestamp(seconds).map_err(serde::de::Error::custom)
            }
        }
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] OffsetDateTime);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(at)| at))
        }
    }
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
    open_for: &'static str,
    unknown: &'static str,
    acknowledged: &'static str,
    assigned: &'static str,
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
    open_for: "for",
    unknown: "unknown",
    acknowledged: "acknowledged by",
    assigned: "assigned to",
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
    open_for: "已持续",
    unknown: "未知",
    acknowledged: "确认人",
    assigned: "处理人",
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

fn kind_title(code: &str, language: Language, format: Format) -> String {
    match (kind_by_code(code), language) {
        (Some(kind), Language::En) => kind.title.en.to_string(),
        (Some(kind), Language::ZhCn) => kind.title.zh_cn.to_string(),
        // Not a code of this collector (an outbox row from another version): treat as foreign.
        (None, _) => format.value(code),
    }
}

/// A finding code: posmon's own codes as they are, anything else escaped.
fn code_text(code: &str, format: Format) -> String {
    match kind_by_code(code) {
        Some(kind) => kind.code.to_string(),
        None => format.value(code),
    }
}

fn remediation(code: &str, language: Language) -> &'static str {
    match (kind_by_code(code), language) {
        (Some(kind), Language::En) => kind.remediation.en,
        (Some(kind), Language::ZhCn) => kind.remediation.zh_cn,
        (None, _) => "",
    }
}

/// `2026-11-26 02:00:00 UTC`; a time that has no UTC rendition (its offset moves it past year
/// 9999 or before -9999) is shown as it came, with its offset.
pub fn format_time(at: OffsetDateTime) -> String {
    let (at, zone) = match at.checked_to_offset(time::UtcOffset::UTC) {
        Some(utc) => (utc, "UTC".to_string()),
        None => {
            let (hours, minutes, _) = at.offset().as_hms();
            (at, format!("{:+03}:{:02}", hours, minutes.unsigned_abs()))
        }
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {zone}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// RFC 3339, as the JSON receivers expect; `None` for a time RFC 3339 cannot express (before
/// year 0 or after 9999 in UTC).
pub fn rfc3339_checked(at: OffsetDateTime) -> Option<String> {
    at.checked_to_offset(time::UtcOffset::UTC)?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// RFC 3339, as the JSON receivers expect (empty for a time it cannot express).
pub fn rfc3339(at: OffsetDateTime) -> String {
    rfc3339_checked(at).unwrap_or_default()
}

/// The longest a finding is plausibly open; a longer (or negative) span means a terminal's
/// clock was wrong and is shown as unknown.
const OPEN_FOR_MAX_SECONDS: i64 = 100 * 366 * 86_400;

/// How long a finding has been open at `now`: `3 d 4 h`, `2 h 5 min`, `40 s`; `None` when
/// `since` is after `now` or absurdly far before it.
pub fn open_for(since: OffsetDateTime, now: OffsetDateTime) -> Option<String> {
    let seconds = now.unix_timestamp().checked_sub(since.unix_timestamp())?;
    if !(0..=OPEN_FOR_MAX_SECONDS).contains(&seconds) {
        return None;
    }
    let (days, hours, minutes) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    Some(if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {minutes} min")
    } else if minutes > 0 {
        format!("{minutes} min")
    } else {
        format!("{seconds} s")
    })
}

/// What a firing alert says about its terminal's payments. Severity follows readiness (a
/// finding is critical exactly when it stops payments), so the item's severity tells; a
/// silent terminal's is unknown.
pub fn readiness_of(item: &AlertItem) -> Readiness {
    match kind_by_code(&item.code) {
        Some(kind) if kind.category == Category::Availability => Readiness::Unknown,
        _ if item.severity == "critical" => Readiness::CannotPay,
        _ => Readiness::AtRisk,
    }
}

/// The readiness the firing alerts lead with: the most urgent.
fn firing_readiness(items: &[AlertItem]) -> Option<Readiness> {
    items.iter().map(readiness_of).min_by_key(|r| r.urgency())
}

/// The title's opening: the readiness said of payments, so a message read out of context is
/// still clear ("At risk" alone does not say what is).
fn readiness_label(readiness: Readiness, language: Language) -> &'static str {
    match (readiness, language) {
        (Readiness::AtRisk, Language::En) => "Payments at risk",
        (Readiness::AtRisk, Language::ZhCn) => "收款存在风险",
        (Readiness::Unknown, Language::En) => "Payments unknown",
        (Readiness::Unknown, Language::ZhCn) => "收款状态未知",
        (readiness, Language::En) => readiness.label().en,
        (readiness, Language::ZhCn) => readiness.label().zh_cn,
    }
}

/// The one-line title: whether the terminals can take payments first, then what is wrong:
/// `[FIRING:37] Cannot take payments: Payment host unreachable · cn-east` or
/// `【告警:37】无法收款：支付主机不可达 · cn-east` (resolved: `[RESOLVED:37] Payment host
/// unreachable`), its region escaped for `format`.
pub fn title(notification: &Notification, language: Language, format: Format) -> String {
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
        kind_title(first, language, format)
    } else {
        format!("{count} {}", words.findings)
    };
    let scope = notification
        .group_labels
        .get("region")
        .filter(|region| !region.is_empty())
        .map(|region| format!(" · {}", format.value(region)))
        .unwrap_or_default();
    let readiness = firing_readiness(&notification.firing)
        .map(|readiness| readiness_label(readiness, language));
    match (language, readiness) {
        (Language::En, Some(readiness)) => {
            format!("[{status}:{count}] {readiness}: {what}{scope}")
        }
        (Language::ZhCn, Some(readiness)) => {
            format!("【{status}:{count}】{readiness}：{what}{scope}")
        }
        (Language::En, None) => format!("[{status}:{count}] {what}{scope}"),
        (Language::ZhCn, None) => format!("【{status}:{count}】{what}{scope}"),
    }
}

fn item_line(item: &AlertItem, style: Style, resolved: bool, now: OffsetDateTime) -> String {
    let Style { language, format } = style;
    let words = words(language);
    let mut line = String::from("- ");
    if item.terminal_id.is_empty() {
        let _ = write!(line, "**{}**", format.value(&item.subject));
        if item.explains > 0 {
            let _ = write!(line, " · {} {}", item.explains, words.explains);
        }
    } else {
        let _ = write!(line, "**{}**", format.value(&item.terminal_id));
        if !item.subject.is_empty() {
            let _ = write!(line, " ({})", format.value(&item.subject));
        }
    }
    for (word, value) in [
        (words.merchant, &item.merchant),
        (words.region, &item.region),
        (words.carrier, &item.carrier),
        (words.model, &item.model),
    ] {
        if let Some(value) = value {
            let _ = write!(line, " · {word} {}", format.value(value));
        }
    }
    let _ = write!(line, " · {} {}", words.since, format_time(item.since));
    if !resolved {
        let open = open_for(item.since, now);
        let _ = write!(
            line,
            " ({} {})",
            words.open_for,
            open.as_deref().unwrap_or(words.unknown)
        );
    }
    if let (true, Some(closed)) = (resolved, item.closed_at) {
        let _ = write!(line, " · {} {}", words.closed, format_time(closed));
    }
    if !resolved && !item.evidence.is_empty() {
        let evidence: Vec<String> = item
            .evidence
            .iter()
            .map(|evidence| {
                let (name, value) = (format.value(&evidence.name), format.value(&evidence.value));
                match &evidence.threshold {
                    Some(threshold) => format!("{name}={value} ({})", format.value(threshold)),
                    None => format!("{name}={value}"),
                }
            })
            .collect();
        let _ = write!(line, " · `{}`", evidence.join(", "));
    }
    if !resolved {
        if let Some(by) = &item.acknowledged_by {
            let _ = write!(line, " · {} {}", words.acknowledged, format.value(by));
        }
        if let Some(assignee) = &item.assignee {
            let _ = write!(line, " · {} {}", words.assigned, format.value(assignee));
        }
    }
    let _ = write!(line, " · [{}]({})", words.dashboard, item.link);
    line
}

/// The blocks of one section (firing or resolved): per code, a heading with the party and
/// the remediation, then one line per alert.
fn section(
    items: &[AlertItem],
    style: Style,
    resolved: bool,
    now: OffsetDateTime,
    out: &mut Vec<(String, bool)>,
) {
    let Style { language, format } = style;
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
                "### {status}: {} ({}, `{}`){count}",
                kind_title(code, language, format),
                format.value(&first.severity),
                code_text(code, format)
            ),
            true,
        ));
        if !resolved {
            out.push((
                format!(
                    "**{}**: {}\n\n**{}**: {}",
                    words.party,
                    format.value(party_name(&first.party, language)),
                    words.remediation,
                    remediation(code, language)
                ),
                true,
            ));
        }
        for item in of_code {
            out.push((item_line(item, style, resolved, now), false));
        }
    }
}

/// How a message is written: its language and the syntax untrusted values are escaped for.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub language: Language,
    pub format: Format,
}

/// The message as markdown, at most `max_bytes` long (UTF-8): alert lines that do not fit are
/// left out and counted in a last line that points to the dashboard. Untrusted values are
/// escaped for `format`; durations are measured at the notification's creation.
pub fn markdown(
    notification: &Notification,
    language: Language,
    format: Format,
    max_bytes: usize,
) -> String {
    let style = Style { language, format };
    let now = notification.created_at;
    let words = words(language);
    let mut blocks: Vec<(String, bool)> = Vec::new();
    let mut heading = format!("## {}", title(notification, language, format));
    if notification.repeat {
        let _ = write!(heading, " ({})", words.reminder);
    }
    blocks.push((heading, true));
    if !notification.group_labels.is_empty() {
        let labels: Vec<String> = notification
            .group_labels
            .iter()
            .map(|(name, value)| {
                let value = if name == "code" {
                    code_text(value, format)
                } else {
                    format.value(value)
                };
                format!("{}={value}", format.value(name))
            })
            .collect();
        blocks.push((format!("`{}`", labels.join(", ")), true));
    }
    section(&notification.firing, style, false, now, &mut blocks);
    section(&notification.resolved, style, true, now, &mut blocks);
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
            acknowledged_by: None,
            assignee: None,
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
        let text = markdown(notification, language, Format::WeCom, max_bytes);
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
                "## [FIRING:1] Cannot take payments: Payment host unreachable · cn-east",
                "**Who must act**: the network provider",
                "**What to do**: ",
                "**T-000** (payment-host) · merchant M-7 · region cn-east · carrier carrier-x · since 2026-11-26 02:00:00 UTC (for 1 min) · `error=refused` · [dashboard](http://dash/#/terminal/T-000)",
            ],
        );
        check(
            &one,
            Language::ZhCn,
            4096,
            &[
                "【告警:1】无法收款：支付主机不可达 · cn-east",
                "**负责方**: 网络运营商",
                "**处理建议**: ",
                "商户 M-7",
                "地区 cn-east",
                "开始于 2026-11-26 02:00:00 UTC (已持续 1 min)",
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
            &[
                "## [RESOLVED:1] Payment host unreachable",
                "resolved at 2026-11-26 03:00:00 UTC",
            ],
        );
    }

    /// The title says first whether the terminals can take payments: an outdated app is a
    /// risk, not a stop; silence is unknown; the worst firing alert leads.
    #[test]
    fn the_title_leads_with_payment_readiness() {
        let mut outdated = item("T-1", "outdated.pos_app", "cn-east");
        outdated.severity = "warning".into();
        outdated.subject = "pos_app".into();
        let mut silent = item("T-2", "terminal.silent", "cn-east");
        silent.severity = "warning".into();
        let down = item("T-3", "env.network.host_unreachable", "cn-east");
        let cases: [(Vec<AlertItem>, &str, &str); 4] = [
            (
                vec![outdated.clone()],
                "[FIRING:1] Payments at risk: POS application outdated",
                "【告警:1】收款存在风险：",
            ),
            (
                vec![silent.clone()],
                "[FIRING:1] Payments unknown: ",
                "【告警:1】收款状态未知：",
            ),
            (
                vec![outdated.clone(), down.clone()],
                "[FIRING:2] Cannot take payments: 2 findings",
                "【告警:2】无法收款：2 项问题",
            ),
            (
                vec![silent, outdated],
                "[FIRING:2] Payments at risk: ",
                "【告警:2】收款存在风险：",
            ),
        ];
        for (firing, en, zh) in cases {
            let mut group = notification(0);
            group.group_labels.remove("region");
            group.firing = firing;
            let got = title(&group, Language::En, Format::Webhook);
            assert!(got.starts_with(en), "{got:?} does not start with {en:?}");
            let got = title(&group, Language::ZhCn, Format::Webhook);
            assert!(got.starts_with(zh), "{got:?} does not start with {zh:?}");
        }
    }

    #[test]
    fn a_large_group_fits_the_limit_and_counts_what_is_left_out() {
        let big = notification(100);
        let text = markdown(&big, Language::ZhCn, Format::WeCom, 4096);
        assert!(text.len() <= 4096);
        assert!(text.contains("【告警:100】"), "{text}");
        assert!(text.contains("条未列出"), "{text}");
        let all = markdown(&big, Language::En, Format::DingTalk, 100_000);
        assert!(all.contains("T-099") && !all.contains("more, see the dashboard"));
    }

    /// An alert whose every terminal-controlled value is hostile.
    fn hostile_item(payload: &str) -> AlertItem {
        AlertItem {
            terminal_id: "evil.example".into(),
            subject: payload.into(),
            merchant: Some(payload.into()),
            region: Some(payload.into()),
            carrier: Some(payload.into()),
            model: Some(payload.into()),
            evidence: vec![
                Evidence::new("error", payload),
                Evidence::new(payload, "1").with_threshold(payload),
            ],
            acknowledged_by: Some(payload.into()),
            assignee: Some(payload.into()),
            ..item("x", "env.network.host_unreachable", "r")
        }
    }

    const HOSTILE: &[&str] = &[
        "[Call support](https://evil.example)",
        "https://evil.example",
        "<a href=\"https://evil.example\">pay here</a>",
        "![x](https://evil.example/i.png)",
        "@all call 400-000",
        "@所有人 请立即拨打",
        "<at id=all></at>",
        "x\n## [FIRING:1] forged\n- **T-1** · [dashboard](https://evil.example)",
        "商户\r\n【告警:9】伪造 www.evil.example",
    ];

    #[test]
    fn hostile_values_render_inert_for_every_receiver_in_both_languages() {
        for format in [
            Format::DingTalk,
            Format::WeCom,
            Format::Feishu,
            Format::Email,
            Format::Webhook,
        ] {
            for language in [Language::En, Language::ZhCn] {
                for payload in HOSTILE {
                    let mut hostile = notification(0);
                    hostile.firing.push(hostile_item(payload));
                    let mut closed = hostile_item(payload);
                    closed.closed_at = Some(datetime!(2026-11-26 03:00 UTC));
                    hostile.resolved.push(closed);
                    hostile
                        .group_labels
                        .insert("region".into(), (*payload).to_string());
                    let text = markdown(&hostile, language, format, 64 * 1024);
                    let title = title(&hostile, language, format);
                    let case = format!("{format:?} {language:?} {payload:?}");
                    for forbidden in [
                        "https://evil",
                        "evil.example",
                        "www.evil",
                        "@all",
                        "@所有人",
                        "<a ",
                        "<at",
                        "](https://evil",
                        "![",
                    ] {
                        if format == Format::Email && forbidden == "![" {
                            continue; // markdown image syntax is inert in a plain-text mail
                        }
                        assert!(
                            !text.contains(forbidden),
                            "{case}: {forbidden:?} in\n{text}"
                        );
                        assert!(
                            !title.contains(forbidden),
                            "{case}: {forbidden:?} in {title}"
                        );
                    }
                    assert!(!title.contains('\n'), "{case}: {title}");
                    // Only posmon's own lines start a line: headings, its bold labels, alerts.
                    for line in text.lines().filter(|line| !line.is_empty()) {
                        let own = line.starts_with("## ")
                            || line.starts_with("### ")
                            || line.starts_with("**")
                            || line.starts_with("- **")
                            || line.starts_with("`");
                        assert!(own, "{case}: injected line {line:?} in\n{text}");
                    }
                    // Exactly posmon's own headings: none forged.
                    let headings = text.lines().filter(|line| line.starts_with('#')).count();
                    assert_eq!(headings, 3, "{case}:\n{text}");
                    // The one dashboard link per alert is posmon's own.
                    // (A plain-text mail renders no markdown: a defanged `[x](hxxps…)` is text.)
                    if format != Format::Email {
                        assert_eq!(text.matches("](").count(), 2, "{case}:\n{text}");
                    }
                    assert_eq!(text.matches("](http").count(), 2, "{case}:\n{text}");
                    assert_eq!(text.matches("](http://dash/").count(), 2, "{case}:\n{text}");
                }
            }
        }
    }

    #[test]
    fn absurd_times_render_without_panicking() {
        let plus = time::UtcOffset::from_hms(14, 0, 0).unwrap_or(time::UtcOffset::UTC);
        let minus = time::UtcOffset::from_hms(-14, 0, 0).unwrap_or(time::UtcOffset::UTC);
        let cases: &[(OffsetDateTime, &str, &str)] = &[
            (
                datetime!(9999-12-31 23:59:59 UTC),
                "9999-12-31 23:59:59 UTC",
                "(for unknown)",
            ),
            (
                datetime!(9999-12-31 23:59:59 UTC).replace_offset(minus),
                "9999-12-31 23:59:59 -14:00",
                "(for unknown)",
            ),
            (
                datetime!(-9999-01-01 00:00 UTC),
                "-9999-01-01 00:00:00 UTC",
                "(for unknown)",
            ),
            (
                datetime!(-9999-01-01 00:00 UTC).replace_offset(plus),
                "-9999-01-01 00:00:00 +14:00",
                "(for unknown)",
            ),
            (
                datetime!(2026-11-26 01:00:30 UTC),
                "2026-11-26 01:00:30 UTC",
                "(for 1 h 0 min)",
            ),
            (
                datetime!(2026-11-24 00:00 UTC),
                "2026-11-24 00:00:00 UTC",
                "(for 2 d 2 h)",
            ),
            (
                datetime!(2026-11-26 02:00:50 UTC),
                "2026-11-26 02:00:50 UTC",
                "(for 10 s)",
            ),
            (
                datetime!(2026-11-26 02:05 UTC),
                "2026-11-26 02:05:00 UTC",
                "(for unknown)",
            ),
        ];
        for (since, shown, open) in cases {
            let mut one = notification(1);
            one.firing[0].since = *since;
            let mut closed = item("T-2", "env.network.host_unreachable", "cn-east");
            closed.since = *since;
            closed.closed_at = Some(*since);
            one.resolved.push(closed);
            for format in [Format::DingTalk, Format::Email] {
                let text = markdown(&one, Language::En, format, 64 * 1024);
                assert!(text.contains(shown), "{shown} not in\n{text}");
                assert!(text.contains(open), "{open} not in\n{text}");
                let zh = markdown(&one, Language::ZhCn, format, 64 * 1024);
                assert!(zh.contains(shown), "{shown} not in\n{zh}");
            }
            let alert = super::super::alertmanager::alert(&one.firing[0], false);
            let resolved = super::super::alertmanager::alert(&one.resolved[0], true);
            assert!(resolved.get("endsAt").is_some(), "{resolved}");
            let _ = alert;
        }
        assert_eq!(rfc3339_checked(datetime!(-9999-01-01 00:00 UTC)), None);
        assert_eq!(rfc3339(datetime!(-9999-01-01 00:00 UTC)), "");
        assert_eq!(
            open_for(
                datetime!(-9999-01-01 00:00 UTC),
                datetime!(9999-12-31 0:00 UTC)
            ),
            None
        );
    }

    #[test]
    fn alerts_with_any_time_are_stored_and_read_back() {
        let cases = [
            datetime!(2026-11-26 02:00 UTC),
            datetime!(9999-12-31 23:59:59 -10:00),
            datetime!(-9999-01-01 00:00 UTC),
            datetime!(0000-01-01 00:00 UTC),
        ];
        for since in cases {
            let mut one = item("T-1", "env.network.host_unreachable", "cn-east");
            one.since = since;
            one.closed_at = Some(since);
            let text =
                serde_json::to_string(&one).unwrap_or_else(|error| panic!("{since}: {error}"));
            let back: AlertItem =
                serde_json::from_str(&text).unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(back.since, since, "{text}");
            assert_eq!(back.closed_at, Some(since), "{text}");
        }
        // Rows written before: RFC 3339 strings, no closed_at.
        let old = r#"{"finding_id":1,"code":"c","category":"x","party":"p","severity":"s","since":"2026-11-26T02:00:00Z","link":"l"}"#;
        let back: AlertItem = serde_json::from_str(old).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            (back.since, back.closed_at),
            (datetime!(2026-11-26 02:00 UTC), None)
        );
        let null = old.replace(r#""link""#, r#""closed_at":null,"link""#);
        assert!(serde_json::from_str::<AlertItem>(&null).is_ok_and(|item| item.closed_at.is_none()));
    }
}
