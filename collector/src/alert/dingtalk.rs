//! DingTalk custom robot (钉钉自定义机器人): a markdown message. With a "sign" secret
//! (加签), each request carries `timestamp` (Unix milliseconds) and `sign` = URL-encoded
//! base64 of HMAC-SHA256 keyed by the secret over "timestamp\nsecret", as query parameters.
//! The robot answers 200 with `errcode` (0: sent; 130101: too fast).

use serde_json::json;

use super::config::{Language, ReceiverConfig, Secret};
use super::message::{markdown, title, Format};
use super::receiver::{
    check_robot_reply, hmac_sha256, post_json, resolve, url, Context, Delivery, DeliveryError,
    DeliveryFuture, Receiver,
};

/// DingTalk takes messages of up to 20 000 bytes; keep a margin for the JSON around it.
const TEXT_MAX_BYTES: usize = 18_000;
/// "send too fast" (more than 20 messages a minute).
const RATE_LIMITED: &[i64] = &[130101];

pub struct DingTalk {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<Secret>,
    language: Language,
}

/// The `sign` parameter before URL encoding: base64(HMAC-SHA256(secret, "timestamp\nsecret")).
pub fn sign(timestamp_ms: i64, secret: &str) -> String {
    use base64::Engine;
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(mac)
}

impl DingTalk {
    pub fn new(config: &ReceiverConfig, context: &Context<'_>) -> Result<Self, String> {
        Ok(DingTalk {
            client: context.client.clone(),
            url: url(config, context.data_dir)?,
            secret: resolve("secret", config.secret.as_ref(), context.data_dir)?,
            language: config.language,
        })
    }

    async fn send(&self, delivery: Delivery<'_>) -> Result<(), DeliveryError> {
        let notification = delivery.notification;
        let mut url = self.url.clone();
        if let Some(secret) = &self.secret {
            let timestamp =
                i64::try_from(delivery.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            // Form encoding, as DingTalk's examples (URLEncoder): `+` `/` `=` are escaped.
            url.query_pairs_mut()
                .append_pair("timestamp", &timestamp.to_string())
                .append_pair("sign", &sign(timestamp, secret.expose()));
        }
        let body = json!({
            "msgtype": "markdown",
            "markdown": {
                "title": title(notification, self.language, Format::DingTalk),
                "text": markdown(notification, self.language, Format::DingTalk, TEXT_MAX_BYTES),
            },
        });
        let body = serde_json::to_vec(&body).map_err(|error| {
            DeliveryError::permanent(format!("cannot encode the body: {error}"))
        })?;
        let reply = post_json(&self.client, url, body, &[]).await?;
        check_robot_reply("DingTalk", &reply, &["errcode"], RATE_LIMITED)
    }
}

impl Receiver for DingTalk {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a> {
        Box::pin(self.send(delivery))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sign_matches_an_independent_vector() {
        // printf '%s' "1700000000000
        // SEC0123456789abcdef" | openssl dgst -sha256 -hmac SEC0123456789abcdef -binary | base64
        assert_eq!(
            super::sign(1_700_000_000_000, "SEC0123456789abcdef"),
            "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk="
        );
    }
}
