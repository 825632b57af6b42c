//! Plain language for the person standing at the terminal: what a failed rung means ("the host
//! does not speak TLS on this port" rather than the TLS library's "received corrupt message of
//! type InvalidContentType"), who each party is, what kind of problem a finding is, and the
//! one-line headline a POS application shows ("Network problem — call China Mobile: 400-…").
//! English and Simplified Chinese; the raw error stays beside the text as detail.
//!
//! Pure, like the rest of the crate: the agent renders it, the collector may show it too.

use posmon_protocol::{ErrorKind, Stage};

use crate::readiness::Readiness;
use crate::{FindingKind, Party, Text};

const fn text(en: &'static str, zh_cn: &'static str) -> Text {
    Text { en, zh_cn }
}

/// What a failed `stage` with `error` means, in plain words. Every combination has a text:
/// the pairs the agent produces have their own, any other falls back to the error kind alone,
/// then to the rung.
pub fn rung_error(stage: Stage, error: ErrorKind) -> Text {
    use ErrorKind as E;
    match (stage, error) {
        // The terminal's own link.
        (Stage::Link, E::NoCarrier) => text(
            "no network connection: no cable plugged in, or no Wi-Fi or mobile signal",
            "没有网络连接：未插网线，或没有 Wi-Fi 或移动信号",
        ),
        (Stage::Link, E::NoAddress) => text(
            "the terminal got no IP address from the network (DHCP)",
            "终端未从网络获得 IP 地址（DHCP）",
        ),
        (Stage::Link, E::NoDefaultRoute) => text(
            "the terminal has no default route: it does not know where to send traffic",
            "终端没有默认路由：不知道把数据发往何处",
        ),
        (Stage::Link, _) => text(
            "the terminal's network connection does not work",
            "终端的网络连接不可用",
        ),
        // The shop's router.
        (Stage::Gateway, E::NoDefaultRoute) => text(
            "the terminal has no default route: it does not know where to send traffic",
            "终端没有默认路由：不知道把数据发往何处",
        ),
        (Stage::Gateway, _) => text("the shop's router does not answer", "门店的路由器没有响应"),
        // Name resolution.
        (Stage::Dns, E::Nxdomain) => text(
            "the host name does not exist (the DNS server says so)",
            "主机名不存在（DNS 服务器如此答复）",
        ),
        (Stage::Dns, E::NoData) => text(
            "the host name exists but has no address record",
            "主机名存在，但没有地址记录",
        ),
        (Stage::Dns, E::Servfail) => text(
            "the DNS server failed to look up the host name",
            "DNS 服务器查询主机名失败",
        ),
        (Stage::Dns, E::Timeout) => text(
            "the DNS server did not answer in time",
            "DNS 服务器未及时响应",
        ),
        (Stage::Dns, E::NoResolver) => text(
            "no DNS server is configured on the terminal",
            "终端未配置 DNS 服务器",
        ),
        (Stage::Dns, E::Refused) => text("the DNS server refused to answer", "DNS 服务器拒绝应答"),
        (Stage::Dns, E::Unreachable) => {
            text("the DNS server cannot be reached", "无法连接 DNS 服务器")
        }
        (Stage::Dns, _) => text("the host name could not be looked up", "无法解析主机名"),
        // The connection.
        (Stage::Tcp, E::Refused) => text(
            "the host refused the connection: nothing accepts connections on this port",
            "主机拒绝连接：该端口上没有服务在接受连接",
        ),
        (Stage::Tcp, E::Timeout) => text(
            "the host did not answer in time: packets are lost on the way or at the host",
            "主机未及时响应：数据包在途中或在主机处丢失",
        ),
        (Stage::Tcp, E::Unreachable) => text("there is no route to the host", "没有通往主机的路由"),
        (Stage::Tcp, E::Reset) => text("the host reset the connection", "主机重置了连接"),
        (Stage::Tcp, _) => text("the connection to the host failed", "与主机的连接失败"),
        // TLS.
        (Stage::Tls, E::ProtocolError) => text(
            "the host does not speak TLS on this port",
            "主机在该端口上不支持 TLS（不是加密服务）",
        ),
        (Stage::Tls, E::CertificateExpired) => text(
            "the host's certificate has expired (or the terminal's clock is wrong)",
            "主机的证书已过期（或终端时钟不正确）",
        ),
        (Stage::Tls, E::CertificateNotYetValid) => text(
            "the host's certificate is not valid yet (or the terminal's clock is wrong)",
            "主机的证书尚未生效（或终端时钟不正确）",
        ),
        (Stage::Tls, E::UnknownCa) => text(
            "the host's certificate is not signed by an authority the terminal trusts",
            "主机的证书不是由终端信任的机构签发的",
        ),
        (Stage::Tls, E::NameMismatch) => text(
            "the host's certificate is for another name",
            "主机的证书属于另一个域名",
        ),
        (Stage::Tls, E::Timeout) => text(
            "the host did not complete the secure (TLS) handshake in time",
            "主机未及时完成安全（TLS）握手",
        ),
        (Stage::Tls, E::Reset) => text(
            "the host closed the connection during the secure (TLS) handshake",
            "主机在安全（TLS）握手期间关闭了连接",
        ),
        (Stage::Tls, _) => text(
            "the secure (TLS) handshake with the host failed",
            "与主机的安全（TLS）握手失败",
        ),
        // The request.
        (Stage::Http, E::HttpStatus) => text(
            "the host answered with an error status: its service is failing",
            "主机返回错误状态码：其服务异常",
        ),
        (Stage::Http, E::ProtocolError) => text(
            "the host's answer is not valid HTTP",
            "主机的应答不是有效的 HTTP",
        ),
        (Stage::Http, E::Timeout) => text(
            "the host did not answer the request in time",
            "主机未及时应答请求",
        ),
        (Stage::Http, E::Reset) => text(
            "the host closed the connection before answering",
            "主机在应答前关闭了连接",
        ),
        (Stage::Http, _) => text(
            "the host's service did not answer the request properly",
            "主机的服务未能正常应答请求",
        ),
        (Stage::Icmp, _) => text(
            "the host does not answer ping (many networks drop it; not a fault by itself)",
            "主机不响应 ping（许多网络会丢弃 ping，本身不算故障）",
        ),
        (Stage::Other, _) => text("a network check failed", "一项网络检查失败"),
    }
}

impl Party {
    /// Who the party is, for a person: "the network provider".
    pub fn label(self) -> Text {
        match self {
            Party::Merchant => text("the shop (merchant)", "商户"),
            Party::PosVendor => text("the terminal's maker", "终端厂商"),
            Party::NetworkProvider => text("the network provider", "网络运营商"),
            Party::SoftwareVendor => text("the POS software vendor", "收银软件厂商"),
            Party::Acquirer => text("the acquirer, who runs the payment host", "收单机构"),
            Party::Operations => text("the terminal operations team", "终端运维团队"),
        }
    }
}

impl Party {
    /// Who the party is for a finding about a target: the acquirer runs the payment host, but a
    /// target payments do not need (a TMS, an update server) is run by its own operator.
    pub fn label_for_target(self, payment_target: bool) -> Text {
        match self {
            Party::Acquirer if !payment_target => text("the server's operator", "服务器运营方"),
            party => party.label(),
        }
    }
}

/// What kind of problem a finding is, for a headline: "Network problem". `payment_target`:
/// whether its subject is a target payments need (a TMS or an update server is a "server", not
/// the payment host).
pub fn problem(kind: &FindingKind, payment_target: bool) -> Text {
    let code = kind.code;
    if code.starts_with("env.network.") && kind.party == Party::Acquirer {
        // The path works and the host does not: not the shop's or the carrier's network.
        if payment_target {
            text("Payment host problem", "支付主机故障")
        } else {
            text("Server problem", "服务器故障")
        }
    } else if code.starts_with("env.network.") {
        text("Network problem", "网络故障")
    } else if code.starts_with("env.hardware.") {
        text("Device problem", "设备故障")
    } else if code.starts_with("env.software.") || code.starts_with("outdated.") {
        text("Software problem", "软件问题")
    } else if code.starts_with("env.clock") {
        text("Clock problem", "时钟问题")
    } else {
        text("Problem", "故障")
    }
}

/// What to do about a finding of the path ladder where the kind's generic remediation would
/// be wrong for the rung's error: a host that does not speak TLS is most often a wrong port or
/// a captive portal, not the acquirer's TLS setup; a name without an address record is a wrong
/// name in the configuration, not the carrier's resolver. `None`: the kind's own remediation.
pub fn rung_remediation(stage: Stage, error: ErrorKind) -> Option<Text> {
    match (stage, error) {
        (Stage::Tls, ErrorKind::ProtocolError) => Some(text(
            "Something on this port does not speak TLS: check the host and port in the terminal's configuration. A captive portal (a Wi-Fi sign-in page) or a proxy may be answering in the host's place.",
            "该端口上的服务不使用 TLS：请检查终端配置中的主机和端口。也可能是强制门户（Wi-Fi 登录页）或代理在代替主机应答。",
        )),
        (Stage::Dns, ErrorKind::NoData) => Some(text(
            "The name exists but has no address record: check the host name in the terminal's configuration.",
            "该名称存在，但没有地址记录：请检查终端配置中的主机名。",
        )),
        _ => None,
    }
}

/// What to do when the terminal rejects a certificate for its dates and nothing measured its
/// clock (offline): either the clock is wrong or the certificate expired, and only a person
/// can tell which.
pub const CERTIFICATE_DATES_UNCERTAIN: Text = text(
    "The host's certificate is rejected for its dates: either the terminal's clock is wrong, or the host's certificate has expired (or is not valid yet). First compare the terminal's clock with a phone's and check its time synchronisation (NTP); if the clock is right, the host's operator (the acquirer) must renew its certificate.",
    "主机证书因有效期被拒绝：可能是终端时钟错误，也可能是主机证书已过期（或尚未生效）。请先将终端时钟与手机时间对照，并检查时间同步（NTP）；如时钟正确，需由主机运营方（收单机构）更新证书。",
);

/// Whom to call, as configured for a party: a name in each language and a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub name_en: &'a str,
    pub name_zh_cn: &'a str,
    pub phone: Option<&'a str>,
}

/// A headline in both languages: "Can take payments", or the problem and whom to call —
/// "Network problem — call China Mobile: 400-…" / "网络故障 — 请联系 中国移动: 400-…". At risk,
/// it says payments still work. `worst` is the finding that decides and its party's contact
/// (the party's label when none is configured), and whether its subject is a target payments
/// need.
pub fn headline(
    readiness: Readiness,
    worst: Option<(&FindingKind, Option<Caller<'_>>, bool)>,
) -> (String, String) {
    let Some((kind, caller, payment_target)) = worst.filter(|_| readiness != Readiness::CanPay)
    else {
        return match readiness {
            Readiness::Unknown => ("Status unknown".into(), "状态未知".into()),
            _ => ("Can take payments".into(), "可以收款".into()),
        };
    };
    let label = kind.party.label_for_target(payment_target);
    let caller = caller.unwrap_or(Caller {
        name_en: label.en,
        name_zh_cn: label.zh_cn,
        phone: None,
    });
    let phone = caller
        .phone
        .map(|phone| format!(": {phone}"))
        .unwrap_or_default();
    let problem = problem(kind, payment_target);
    let (still_en, still_zh) = if readiness == Readiness::AtRisk {
        (" (payments still work)", "（仍可收款）")
    } else {
        ("", "")
    };
    (
        format!("{}{still_en} — call {}{phone}", problem.en, caller.name_en),
        format!(
            "{}{still_zh} — 请联系 {}{phone}",
            problem.zh_cn, caller.name_zh_cn
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{all_kinds, kind_by_code};

    const STAGES: [Stage; 8] = [
        Stage::Link,
        Stage::Gateway,
        Stage::Dns,
        Stage::Tcp,
        Stage::Tls,
        Stage::Http,
        Stage::Icmp,
        Stage::Other,
    ];
    const ERRORS: [ErrorKind; 19] = ErrorKind::ALL;

    fn check(stage: Stage, error: ErrorKind, en: &str, zh_cn: &str) {
        let text = rung_error(stage, error);
        assert_eq!((text.en, text.zh_cn), (en, zh_cn), "{stage:?} {error:?}");
    }

    #[test]
    fn every_rung_and_error_has_a_text_in_both_languages() {
        for stage in STAGES {
            for error in ERRORS {
                let text = rung_error(stage, error);
                assert!(
                    !text.en.is_empty() && !text.zh_cn.is_empty(),
                    "{stage:?} {error:?}"
                );
                // Plain words: no library wording leaks into them.
                assert!(!text.en.contains("InvalidContentType"));
                assert!(!text.en.contains('_'), "{}", text.en);
            }
        }
    }

    #[test]
    fn the_errors_the_agent_reports_read_plainly() {
        check(
            Stage::Tls,
            ErrorKind::ProtocolError,
            "the host does not speak TLS on this port",
            "主机在该端口上不支持 TLS（不是加密服务）",
        );
        check(
            Stage::Tcp,
            ErrorKind::Refused,
            "the host refused the connection: nothing accepts connections on this port",
            "主机拒绝连接：该端口上没有服务在接受连接",
        );
        check(
            Stage::Dns,
            ErrorKind::Nxdomain,
            "the host name does not exist (the DNS server says so)",
            "主机名不存在（DNS 服务器如此答复）",
        );
        check(
            Stage::Dns,
            ErrorKind::Servfail,
            "the DNS server failed to look up the host name",
            "DNS 服务器查询主机名失败",
        );
        check(
            Stage::Link,
            ErrorKind::NoCarrier,
            "no network connection: no cable plugged in, or no Wi-Fi or mobile signal",
            "没有网络连接：未插网线，或没有 Wi-Fi 或移动信号",
        );
        check(
            Stage::Tls,
            ErrorKind::CertificateExpired,
            "the host's certificate has expired (or the terminal's clock is wrong)",
            "主机的证书已过期（或终端时钟不正确）",
        );
        // Distinct errors of one rung read differently.
        for stage in [Stage::Dns, Stage::Tcp, Stage::Tls] {
            let texts: std::collections::HashSet<&str> = [
                ErrorKind::Timeout,
                ErrorKind::Refused,
                ErrorKind::Nxdomain,
                ErrorKind::UnknownCa,
                ErrorKind::NameMismatch,
            ]
            .into_iter()
            .map(|error| rung_error(stage, error).en)
            .collect();
            assert!(texts.len() >= 3, "{stage:?}: {texts:?}");
        }
    }

    #[test]
    fn remediation_overrides_exist_only_where_the_generic_text_is_wrong() {
        for stage in STAGES {
            for error in ERRORS {
                let expected = matches!(
                    (stage, error),
                    (Stage::Tls, ErrorKind::ProtocolError) | (Stage::Dns, ErrorKind::NoData)
                );
                let text = rung_remediation(stage, error);
                assert_eq!(text.is_some(), expected, "{stage:?} {error:?}");
                if let Some(text) = text {
                    assert!(!text.en.is_empty() && !text.zh_cn.is_empty());
                }
            }
        }
        let portal = rung_remediation(Stage::Tls, ErrorKind::ProtocolError).unwrap();
        assert!(
            portal.en.contains("check the host and port"),
            "{}",
            portal.en
        );
        assert!(portal.en.contains("captive portal"), "{}", portal.en);
        assert!(portal.zh_cn.contains("强制门户"), "{}", portal.zh_cn);
        let nodata = rung_remediation(Stage::Dns, ErrorKind::NoData).unwrap();
        assert!(nodata.en.contains("no address record"), "{}", nodata.en);
        assert!(nodata.en.contains("check the host name"), "{}", nodata.en);
        assert!(nodata.zh_cn.contains("主机名"), "{}", nodata.zh_cn);
        // Both possibilities, in both languages.
        let dates = CERTIFICATE_DATES_UNCERTAIN;
        assert!(dates.en.contains("clock is wrong") && dates.en.contains("has expired"));
        assert!(dates.zh_cn.contains("时钟错误") && dates.zh_cn.contains("已过期"));
    }

    #[test]
    fn every_kind_has_a_problem_and_every_party_a_label() {
        for kind in all_kinds() {
            for payment_target in [true, false] {
                let problem = problem(kind, payment_target);
                assert!(!problem.en.is_empty() && !problem.zh_cn.is_empty());
            }
            let label = kind.party.label();
            assert!(!label.en.is_empty() && !label.zh_cn.is_empty());
        }
        let host = kind_by_code("env.network.host_unreachable").unwrap();
        assert_eq!(problem(host, true).en, "Network problem");
        assert_eq!(problem(host, false).en, "Network problem");
        let refused = kind_by_code("env.network.host_refused").unwrap();
        assert_eq!(problem(refused, true).en, "Payment host problem");
        assert_eq!(
            (problem(refused, false).en, problem(refused, false).zh_cn),
            ("Server problem", "服务器故障")
        );
    }

    #[test]
    fn headlines_name_whom_to_call() {
        let host = kind_by_code("env.network.host_unreachable").unwrap();
        let mobile = Caller {
            name_en: "China Mobile",
            name_zh_cn: "中国移动",
            phone: Some("400-100-8611"),
        };
        assert_eq!(
            headline(Readiness::CannotPay, Some((host, Some(mobile), true))),
            (
                "Network problem — call China Mobile: 400-100-8611".to_string(),
                "网络故障 — 请联系 中国移动: 400-100-8611".to_string()
            )
        );
        assert_eq!(
            headline(Readiness::AtRisk, Some((host, None, true))),
            (
                "Network problem (payments still work) — call the network provider".to_string(),
                "网络故障（仍可收款） — 请联系 网络运营商".to_string()
            )
        );
        assert_eq!(
            headline(Readiness::CanPay, None),
            ("Can take payments".to_string(), "可以收款".to_string())
        );
        // A server payments do not need, run by its own operator.
        let refused = kind_by_code("env.network.host_refused").unwrap();
        assert_eq!(
            headline(Readiness::AtRisk, Some((refused, None, false))),
            (
                "Server problem (payments still work) — call the server's operator".to_string(),
                "服务器故障（仍可收款） — 请联系 服务器运营方".to_string()
            )
        );
    }
}
