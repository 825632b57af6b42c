//! Prometheus Alertmanager: `POST <url>/api/v2/alerts` with one alert per finding, labelled
//! with the finding and its terminal. Firing alerts carry no `endsAt`, so Alertmanager keeps
//! them for its `resolve_timeout` (5 minutes by default) and they are re-sent well within it
//! (every [`RESEND_SECONDS`] at most); a resolved alert carries `endsAt`, its close time.
//! Alertmanager does its own grouping, silencing and routing from there.
//!
//! Values from terminals are plain and bounded (`escape::alertmanager_label`); the evidence
//! annotation is defanged too, as templates post annotations to chats. A start time that RFC
//! 3339 cannot express (a terminal clock at year -9999) is left out: Alertmanager then uses
//! the time it receives the alert.

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::config::ReceiverConfig;
use super::escape::{alertmanager_annotation, alertmanager_label};
use super::message::{rfc3339_checked, AlertItem};
use super::receiver::{post_json, url, Context, Delivery, DeliveryError, DeliveryFuture, Receiver};

/// The longest a firing alert goes without being re-sent: well under Alertmanager's default
/// `resolve_timeout` of 5 minutes.
pub const RESEND_SECONDS: u64 = 60;

pub struct Alertmanager {
    client: reqwest::Client,
    url: reqwest::Url,
}

/// The alert Alertmanager gets for one finding.
pub fn alert(item: &AlertItem, resolved: bool) -> Value {
    let mut labels = Map::new();
    let mut label = |name: &str, value: &str| {
        // Alertmanager treats an empty label as absent: leave it out.
        let value = alertmanager_label(value);
        if !value.is_empty() {
            labels.insert(name.into(), Value::String(value));
        }
    };
    label("alertname", &item.code);
    label("code", &item.code);
    label("severity", &item.severity);
    label("category", &item.category);
    label("party", &item.party);
    label("terminal", &item.terminal_id);
    label("subject", &item.subject);
    for (name, value) in [
        ("region", &item.region),
        ("carrier", &item.carrier),
        ("model", &item.model),
        ("merchant", &item.merchant),
    ] {
        label(name, value.as_deref().unwrap_or_default());
    }
    label("finding_id", &item.finding_id.to_string());
    let evidence: Vec<String> = item
        .evidence
        .iter()
        .map(|evidence| format!("{}={}", evidence.name, evidence.value))
        .collect();
    let (title, remediation) = posmon_diagnosis::kind_by_code(&item.code)
        .map(|kind| (kind.title.en, kind.remediation.en))
        .unwrap_or_default();
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": title,
            "remediation": remediation,
            "evidence": alertmanager_annotation(&evidence.join(", ")),
            "dashboard": item.link,
        },
        "generatorURL": item.link,
    });
    if let Some(annotations) = alert["annotations"].as_object_mut() {
        // Who took it (the problem workflow), for templates and silences alike.
        for (name, value) in [
            ("acknowledged_by", &item.acknowledged_by),
            ("assignee", &item.assignee),
        ] {
            if let Some(value) = value {
                annotations.insert(name.into(), Value::String(alertmanager_annotation(value)));
            }
        }
    }
    if let Some(object) = alert.as_object_mut() {
        if let Some(starts) = rfc3339_checked(item.since) {
            object.insert("startsAt".into(), Value::String(starts));
        }
        if resolved {
            // Without a usable close time the alert ends now (Alertmanager's clock): it has
            // resolved, which is what matters.
            let ends = item.closed_at.unwrap_or(item.since);
            let ends = rfc3339_checked(ends).or_else(|| rfc3339_checked(OffsetDateTime::now_utc()));
            if let Some(ends) = ends {
                object.insert("endsAt".into(), Value::String(ends));
            }
        }
    }
    alert
}

impl Alertmanager {
    pub fn new(config: &ReceiverConfig, context: &Context<'_>) -> Result<Self, String> {
        let mut url = url(config, context.data_dir)?;
        let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(Alertmanager {
            client: context.client.clone(),
            url,
        })
    }

    async fn send(&self, delivery: Delivery<'_>) -> Result<(), DeliveryError> {
        let notification = delivery.notification;
        let alerts: Vec<Value> = notification
            .firing
            .iter()
            .map(|item| alert(item, false))
            .chain(notification.resolved.iter().map(|item| alert(item, true)))
            .collect();
        let body = serde_json::to_vec(&alerts).map_err(|error| {
            DeliveryError::permanent(format!("cannot encode the body: {error}"))
        })?;
        post_json(&self.client, self.url.clone(), body, &[]).await?;
        Ok(())
    }
}

impl Receiver for Alertmanager {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a> {
        Box::pin(self.send(delivery))
    }

    fn repeat_cap_seconds(&self) -> Option<u64> {
        Some(RESEND_SECONDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::message::tests::item;
    use time::macros::datetime;

    #[test]
    fn hostile_values_are_plain_and_bounded_and_absurd_times_left_out() {
        let cases: &[(&str, OffsetDateTime, bool)] = &[
            ("@all\u{2028}x\ny", datetime!(2026-11-26 02:00 UTC), true),
            (
                "[a](https://evil.example)",
                datetime!(-9999-01-01 00:00 UTC),
                false,
            ),
            (
                "<at id=all></at>",
                // Year 10000 in UTC: Alertmanager could not parse it.
                datetime!(9999-12-31 23:59:59 -10:00),
                false,
            ),
        ];
        for (payload, since, has_start) in cases {
            let mut hostile = item("T-1", "env.network.host_unreachable", "cn-east");
            hostile.merchant = Some(format!("{payload}{}", "m".repeat(1000)));
            hostile.subject = (*payload).to_string();
            hostile.evidence = vec![posmon_diagnosis::Evidence::new("detail", *payload)];
            hostile.since = *since;
            for resolved in [false, true] {
                let alert = alert(&hostile, resolved);
                let merchant = alert["labels"]["merchant"].as_str().unwrap_or_default();
                assert!(merchant.chars().count() <= 129, "{merchant}");
                let subject = alert["labels"]["subject"].as_str().unwrap_or_default();
                assert!(
                    !subject.contains('\n') && !subject.contains('\u{2028}'),
                    "{subject:?}"
                );
                let evidence = alert["annotations"]["evidence"]
                    .as_str()
                    .unwrap_or_default();
                assert!(!evidence.contains("https://"), "{evidence}");
                assert_eq!(alert.get("startsAt").is_some(), *has_start, "{alert}");
                assert_eq!(alert.get("endsAt").is_some(), resolved, "{alert}");
                assert_eq!(alert["labels"]["code"], "env.network.host_unreachable");
            }
        }
    }
}
