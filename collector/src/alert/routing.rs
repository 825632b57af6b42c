//! Routing: which receivers hear of a finding, and in which group. Routes are tried in order;
//! the first that matches wins unless it says `continue`; a finding no route matches goes to
//! the default receiver, if one is set. A group key is made of the route's `group_by` labels
//! (by default code and region), plus the scope of a fleet-wide finding.
//!
//! Pure: no IO, no clock.

use std::collections::BTreeMap;

use time::Duration;

use super::config::{AlertsConfig, GroupLabel};
use super::matchers::{Facts, Matchers};
use super::message::AlertItem;

/// When a group's notifications go out: the first `group_wait` after its first alert, changes
/// at most every `group_interval`, a reminder every `repeat_interval` while it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// The receiver forgets alerts not repeated (Alertmanager's resolve timeout): firing alerts
    /// are repeated even when acknowledged.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub receiver: String,
    pub matchers: Matchers,
    pub continue_matching: bool,
    pub group_by: Vec<GroupLabel>,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    routes: Vec<Route>,
    default: Option<Route>,
    /// For groups that only have resolved alerts left and no route to ask.
    pub default_timing: Timing,
}

fn seconds(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Routes {
    /// The longest `group_interval` of any route (the default's included).
    pub fn longest_group_interval(&self) -> Duration {
        self.routes
            .iter()
            .chain(&self.default)
            .map(|route| route.timing.group_interval)
            .fold(self.default_timing.group_interval, Duration::max)
    }

    /// Routes from a validated config. `repeat_cap` gives a receiver's longest repeat interval
    /// (Alertmanager must hear of firing alerts more often than its resolve timeout).
    pub fn from_config(config: &AlertsConfig, repeat_cap: impl Fn(&str) -> Option<u64>) -> Routes {
        let default_timing = Timing {
            group_wait: seconds(config.group_wait_seconds),
            group_interval: seconds(config.group_interval_seconds),
            repeat_interval: seconds(config.repeat_interval_seconds),
            keep_alive: false,
        };
        let capped = |receiver: &str, timing: Timing| Timing {
            repeat_interval: match repeat_cap(receiver) {
                Some(cap) => timing.repeat_interval.min(seconds(cap)),
                None => timing.repeat_interval,
            },
            keep_alive: repeat_cap(receiver).is_some(),
            ..timing
        };
        let routes = config
            .routes
            .iter()
            .map(|route| Route {
                name: route.name.clone(),
                receiver: route.receiver.clone(),
                matchers: route.matchers.clone(),
                continue_matching: route.continue_matching,
                group_by: route
                    .group_by
                    .clone()
                    .unwrap_or_else(|| config.group_by.clone()),
                timing: capped(
                    &route.receiver,
                    Timing {
                        group_wait: route
                            .group_wait_seconds
                            .map_or(default_timing.group_wait, seconds),
                        group_interval: route
                            .group_interval_seconds
                            .map_or(default_timing.group_interval, seconds),
                        repeat_interval: route
                            .repeat_interval_seconds
                            .map_or(default_timing.repeat_interval, seconds),
                        keep_alive: false,
                    },
                ),
            })
            .collect();
        let default = config.default_receiver.as_ref().map(|receiver| Route {
            name: "default".into(),
            receiver: receiver.clone(),
            matchers: Matchers::default(),
            continue_matching: false,
            group_by: config.group_by.clone(),
            timing: capped(receiver, default_timing),
        });
        Routes {
            routes,
            default,
            default_timing,
        }
    }

    /// The routes a finding takes: the first match, those after it while they say
    /// `continue`, or the default.
    pub fn route(&self, facts: &Facts<'_>) -> Vec<&Route> {
        let mut taken = Vec::new();
        for route in &self.routes {
            if route.matchers.matches(facts) {
                taken.push(route);
                if !route.continue_matching {
                    return taken;
                }
            }
        }
        if taken.is_empty() {
            taken.extend(self.default.as_ref());
        }
        taken
    }
}

/// What matchers see of an alert.
pub fn facts(item: &AlertItem) -> Facts<'_> {
    Facts {
        party: &item.party,
        code: &item.code,
        category: &item.category,
        severity: &item.severity,
        terminal: &item.terminal_id,
        region: item.region.as_deref(),
        carrier: item.carrier.as_deref(),
        model: item.model.as_deref(),
        merchant: item.merchant.as_deref(),
    }
}

/// The group of an alert on a route: its key (`code=…,region=…`) and labels.
pub fn group_of(route: &Route, item: &AlertItem) -> (String, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    for label in &route.group_by {
        let value = match label {
            GroupLabel::Code => Some(item.code.as_str()),
            GroupLabel::Category => Some(item.category.as_str()),
            GroupLabel::Party => Some(item.party.as_str()),
            GroupLabel::Severity => Some(item.severity.as_str()),
            GroupLabel::Terminal => Some(item.terminal_id.as_str()),
            GroupLabel::Region => item.region.as_deref(),
            GroupLabel::Carrier => item.carrier.as_deref(),
            GroupLabel::Model => item.model.as_deref(),
            GroupLabel::Merchant => item.merchant.as_deref(),
        };
        labels.insert(label.as_str().to_string(), value.unwrap_or("").to_string());
    }
    if item.terminal_id.is_empty() {
        // A fleet-wide finding is its own group: one outage, one message.
        labels.insert("scope".into(), item.subject.clone());
    }
    let key = labels
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    (key, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::{ReceiverConfig, RouteConfig};
    use crate::alert::message::tests::item;

    fn route(
        name: &str,
        receiver: &str,
        matchers: Matchers,
        continue_matching: bool,
    ) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            receiver: receiver.into(),
            matchers,
            continue_matching,
            group_by: None,
            group_wait_seconds: None,
            group_interval_seconds: None,
            repeat_interval_seconds: None,
        }
    }

    fn config() -> AlertsConfig {
        let receiver = |name: &str| ReceiverConfig {
            name: name.into(),
            kind: crate::alert::config::ReceiverKind::Wecom,
            language: Default::default(),
            url: Some(crate::alert::config::SecretSource::Inline(
                "http://127.0.0.1:1/".into(),
            )),
            secret: None,
            messages_per_minute: None,
            smtp_server: None,
            smtp_tls: Default::default(),
            smtp_username: None,
            smtp_password: None,
            from: None,
            to: vec![],
        };
        AlertsConfig {
            default_receiver: Some("ops".into()),
            receivers: ["carrier-x", "pos-vendor", "software-vendor", "audit", "ops"]
                .into_iter()
                .map(receiver)
                .collect(),
            routes: vec![
                route(
                    "audit-everything-critical",
                    "audit",
                    Matchers {
                        severity: vec!["critical".into()],
                        ..Matchers::default()
                    },
                    true,
                ),
                route(
                    "carrier-x-east-network",
                    "carrier-x",
                    Matchers {
                        code: vec!["env.network.*".into()],
                        carrier: vec!["carrier-x".into()],
                        region: vec!["cn-east".into()],
                        ..Matchers::default()
                    },
                    false,
                ),
                route(
                    "hardware",
                    "pos-vendor",
                    Matchers {
                        code: vec!["env.hardware.*".into()],
                        ..Matchers::default()
                    },
                    false,
                ),
                route(
                    "outdated",
                    "software-vendor",
                    Matchers {
                        code: vec!["outdated.*".into()],
                        ..Matchers::default()
                    },
                    false,
                ),
            ],
            ..AlertsConfig::default()
        }
    }

    fn check(item: AlertItem, expected: &[&str]) {
        let routes = Routes::from_config(&config(), |_| None);
        let got: Vec<&str> = routes
            .route(&facts(&item))
            .into_iter()
            .map(|route| route.receiver.as_str())
            .collect();
        assert_eq!(got, expected, "{} in {:?}", item.code, item.region);
    }

    #[test]
    fn first_match_or_continue_with_a_default() {
        assert_eq!(config().validate(), Ok(()));
        let with = |code: &str, region: &str, severity: &str| {
            let mut alert = item("T-1", code, region);
            alert.severity = severity.into();
            alert
        };
        check(
            with("env.network.host_unreachable", "cn-east", "critical"),
            &["audit", "carrier-x"],
        );
        check(
            with("env.network.host_unreachable", "cn-west", "warning"),
            &["ops"],
        );
        check(
            with("env.network.host_unreachable", "cn-west", "critical"),
            &["audit"],
        );
        check(
            with("env.hardware.overheat", "cn-east", "warning"),
            &["pos-vendor"],
        );
        check(
            with("outdated.pos_app", "cn-east", "warning"),
            &["software-vendor"],
        );
    }

    #[test]
    fn group_keys_default_to_code_and_region_and_fleet_findings_add_their_scope() {
        let routes = Routes::from_config(&config(), |_| None);
        let route = &routes.routes[1];
        let (key, _) = group_of(
            route,
            &item("T-1", "env.network.host_unreachable", "cn-east"),
        );
        assert_eq!(key, "code=env.network.host_unreachable,region=cn-east");
        let mut outage = item("", "upstream.host_outage", "cn-east");
        outage.region = None;
        outage.subject = "pay.acquirer.test:443".into();
        let (key, _) = group_of(route, &outage);
        assert_eq!(
            key,
            "code=upstream.host_outage,region=,scope=pay.acquirer.test:443"
        );
    }

    #[test]
    fn a_receiver_cap_shortens_the_repeat_interval() {
        let routes = Routes::from_config(&config(), |receiver| (receiver == "ops").then_some(60));
        let default = routes
            .default
            .as_ref()
            .map(|route| route.timing.repeat_interval);
        assert_eq!(default, Some(Duration::seconds(60)));
        assert_eq!(
            routes.routes[0].timing.repeat_interval,
            Duration::seconds(14_400)
        );
    }
}
