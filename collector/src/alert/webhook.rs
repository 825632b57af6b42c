//! The generic webhook: the notification as JSON, its body signed with HMAC-SHA256 so the
//! receiver can tell it came from this collector: `X-Posmon-Signature: sha256=<hex of
//! HMAC-SHA256(secret, body)>`. The body holds `sent_at`, so a receiver can refuse old
//! replays, and `idempotency_key` (also in `X-Posmon-Idempotency-Key`) to drop repeats.

use serde_json::json;

use super::config::{Language, ReceiverConfig, Secret};
use super::message::{markdown, rfc3339, title, Format};
use super::receiver::{
    hmac_sha256, post_json, require, url, Context, Delivery, DeliveryError, DeliveryFuture,
    Receiver,
};

pub const SIGNATURE_HEADER: &str = "X-Posmon-Signature";
pub const IDEMPOTENCY_HEADER: &str = "X-Posmon-Idempotency-Key";
/// The text rendition in the body is cut to this size.
const TEXT_MAX_BYTES: usize = 64 * 1024;

pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Secret,
    language: Language,
}

/// `sha256=<hex>` of the body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(secret.as_bytes(), body);
    let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

impl Webhook {
    pub fn new(config: &ReceiverConfig, context: &Context<'_>) -> Result<Self, String> {
        Ok(Webhook {
            client: context.client.clone(),
            url: url(config, context.data_dir)?,
            secret: require("secret", config.secret.as_ref(), context.data_dir)?,
            language: config.language,
        })
    }

    async fn send(&self, delivery: Delivery<'_>) -> Result<(), DeliveryError> {
        let notification = delivery.notification;
        let body = json!({
            "version": 1,
            "idempotency_key": delivery.idempotency_key,
            "receiver": notification.receiver,
            "status": notification.status(),
            "repeat": notification.repeat,
            "group_key": notification.group_key,
            "group_labels": notification.group_labels,
            "title": title(notification, self.language, Format::Webhook),
            "text": markdown(notification, self.language, Format::Webhook, TEXT_MAX_BYTES),
            "firing": notification.firing,
            "resolved": notification.resolved,
            "more_firing": notification.more_firing,
            "more_resolved": notification.more_resolved,
            "created_at": rfc3339(notification.created_at),
            "sent_at": rfc3339(delivery.now),
        });
        let body = serde_json::to_vec(&body).map_err(|error| {
            DeliveryError::permanent(format!("cannot encode the body: {error}"))
        })?;
        let headers = [
            (SIGNATURE_HEADER, signature(self.secret.expose(), &body)),
            (IDEMPOTENCY_HEADER, delivery.idempotency_key.to_string()),
        ];
        post_json(&self.client, self.url.clone(), body, &headers).await?;
        Ok(())
    }
}

impl Receiver for Webhook {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a> {
        Box::pin(self.send(delivery))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac 'webhook secret'
        assert_eq!(
            super::signature("webhook secret", br#"{"a":1}"#),
            "sha256=115fe34ef79a6fb3dd632aa69f6be5c03318b0ca157abc1d5e1f6d5e0d3702bc"
        );
    }
}
