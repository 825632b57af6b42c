//! WeCom group robot (企业微信群机器人): a markdown message of at most 4096 bytes (longer
//! ones are refused, so alert lines that do not fit are counted instead). The robot answers
//! 200 with `errcode` (0: sent; 45009: over its 20 messages a minute).

use serde_json::json;

use super::config::{Language, ReceiverConfig};
use super::message::{markdown, Format};
use super::receiver::{
    check_robot_reply, post_json, url, Context, Delivery, DeliveryError, DeliveryFuture, Receiver,
};

/// WeCom's documented limit for markdown content, in UTF-8 bytes.
pub const CONTENT_MAX_BYTES: usize = 4096;
const RATE_LIMITED: &[i64] = &[45009];

pub struct WeCom {
    client: reqwest::Client,
    url: reqwest::Url,
    language: Language,
}

impl WeCom {
    pub fn new(config: &ReceiverConfig, context: &Context<'_>) -> Result<Self, String> {
        Ok(WeCom {
            client: context.client.clone(),
            url: url(config, context.data_dir)?,
            language: config.language,
        })
    }

    async fn send(&self, delivery: Delivery<'_>) -> Result<(), DeliveryError> {
        let body = json!({
            "msgtype": "markdown",
            "markdown": {
                "content": markdown(delivery.notification, self.language, Format::WeCom, CONTENT_MAX_BYTES),
            },
        });
        let body = serde_json::to_vec(&body).map_err(|error| {
            DeliveryError::permanent(format!("cannot encode the body: {error}"))
        })?;
        let reply = post_json(&self.client, self.url.clone(), body, &[]).await?;
        check_robot_reply("WeCom", &reply, &["errcode"], RATE_LIMITED)
    }
}

impl Receiver for WeCom {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a> {
        Box::pin(self.send(delivery))
    }
}
