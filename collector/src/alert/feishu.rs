//! Feishu / Lark custom bot (飞书自定义机器人): an interactive card holding the markdown. With
//! a signing secret (签名校验), the body carries `timestamp` (Unix seconds, as a string) and
//! `sign` = base64 of HMAC-SHA256 keyed by "timestamp\nsecret" over an empty message. The
//! bot answers with `code` (older versions `StatusCode`): 0 is sent; 9499 and 11232 are rate
//! limits.

use serde_json::json;

use super::config::{Language, ReceiverConfig, Secret};
use super::message::{markdown, title, Format};
use super::receiver::{
    check_robot_reply, hmac_sha256, post_json, resolve, url, Context, Delivery, DeliveryError,
    DeliveryFuture, Receiver,
};

/// Feishu refuses request bodies above 20 KB; keep a margin for the card around the text.
const TEXT_MAX_BYTES: usize = 16_000;
const RATE_LIMITED: &[i64] = &[9499, 11232];

pub struct Feishu {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<Secret>,
    language: Language,
}

/// base64(HMAC-SHA256(key = "timestamp\nsecret", message = "")).
pub fn sign(timestamp_seconds: i64, secret: &str) -> String {
    use base64::Engine;
    let mac = hmac_sha256(format!("{timestamp_seconds}\n{secret}").as_bytes(), b"");
    base64::engine::general_purpose::STANDARD.encode(mac)
}

impl Feishu {
    pub fn new(config: &ReceiverConfig, context: &Context<'_>) -> Result<Self, String> {
        Ok(Feishu {
            client: context.client.clone(),
            url: url(config, context.data_dir)?,
            secret: resolve("secret", config.secret.as_ref(), context.data_dir)?,
            language: config.language,
        })
    }

    async fn send(&self, delivery: Delivery<'_>) -> Result<(), DeliveryError> {
        let notification = delivery.notification;
        let template = if notification.firing_count() > 0 {
            "red"
        } else {
            "green"
        };
        let mut body = json!({
            "msg_type": "interactive",
            "card": {
                "header": {
                    "title": { "tag": "plain_text", "content": title(notification, self.language, Format::Feishu) },
                    "template": template,
                },
                "elements": [
                    { "tag": "markdown", "content": markdown(notification, self.language, Format::Feishu, TEXT_MAX_BYTES) },
                ],
            },
        });
        if let (Some(secret), Some(object)) = (&self.secret, body.as_object_mut()) {
            let timestamp = delivery.now.unix_timestamp();
            object.insert("timestamp".into(), json!(timestamp.to_string()));
            object.insert("sign".into(), json!(sign(timestamp, secret.expose())));
        }
        let body = serde_json::to_vec(&body).map_err(|error| {
            DeliveryError::permanent(format!("cannot encode the body: {error}"))
        })?;
        let reply = post_json(&self.client, self.url.clone(), body, &[]).await?;
        check_robot_reply("Feishu", &reply, &["code", "StatusCode"], RATE_LIMITED)
    }
}

impl Receiver for Feishu {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a> {
        Box::pin(self.send(delivery))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sign_matches_an_independent_vector() {
        // printf '' | openssl dgst -sha256 -hmac "1700000000
        // SEC0123456789abcdef" -binary | base64
        assert_eq!(
            super::sign(1_700_000_000, "SEC0123456789abcdef"),
            "PiO7POLlSx/DM2qf8Dy/XCWeJK3exVnevp5G99LEN2M="
        );
    }
}
