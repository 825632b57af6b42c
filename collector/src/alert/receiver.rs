//! The receiver trait, its typed errors, the HTTP posting the web receivers share, and the
//! list of receiver kinds: a new receiver is one file implementing [`Receiver`] plus one line
//! in [`build`].

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use time::OffsetDateTime;

use super::config::{ReceiverConfig, ReceiverKind, Secret, SecretSource};
use super::message::Notification;
use super::{alertmanager, dingtalk, email, feishu, webhook, wecom};

/// Most bytes of a receiver's answer read (for its error message).
const REPLY_MAX_BYTES: usize = 64 * 1024;
/// Most characters of an answer kept in an error.
const REPLY_IN_ERROR_CHARS: usize = 300;

/// One delivery attempt of one notification.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub notification: &'a Notification,
    /// The same for every attempt: a receiver may use it to drop a repeat.
    pub idempotency_key: &'a str,
    pub now: OffsetDateTime,
}

/// Why a delivery failed: worth another try later, or never going to work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// What the receiver asked for (Retry-After), if anything.
        retry_after: Option<Duration>,
    },
    #[error("{reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        DeliveryError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            reason: reason.into(),
        }
    }
}

pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// A place notifications go to.
pub trait Receiver: Send + Sync {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a>;

    /// The longest this receiver may go without hearing of a firing alert again
    /// (Alertmanager resolves alerts it stops hearing of); `None`: the route decides.
    fn repeat_cap_seconds(&self) -> Option<u64> {
        None
    }
}

/// What building a receiver needs besides its config.
pub struct Context<'a> {
    pub client: &'a reqwest::Client,
    pub data_dir: &'a Path,
    pub request_timeout: Duration,
}

/// Builds a receiver from its validated config, reading its secrets. The error names the
/// field, never a secret's value.
pub fn build(config: &ReceiverConfig, context: &Context<'_>) -> Result<Box<dyn Receiver>, String> {
    Ok(match config.kind {
        ReceiverKind::Webhook => Box::new(webhook::Webhook::new(config, context)?),
        ReceiverKind::Alertmanager => Box::new(alertmanager::Alertmanager::new(config, context)?),
        ReceiverKind::Dingtalk => Box::new(dingtalk::DingTalk::new(config, context)?),
        ReceiverKind::Wecom => Box::new(wecom::WeCom::new(config, context)?),
        ReceiverKind::Feishu => Box::new(feishu::Feishu::new(config, context)?),
        ReceiverKind::Email => Box::new(email::Email::new(config, context)?),
    })
}

/// Resolves an optional secret field, naming it on error.
pub fn resolve(
    field: &str,
    source: Option<&SecretSource>,
    data_dir: &Path,
) -> Result<Option<Secret>, String> {
    source
        .map(|source| {
            source
                .resolve(data_dir)
                .map_err(|problem| format!("{field}: {problem}"))
        })
        .transpose()
}

/// Resolves a required secret field.
pub fn require(
    field: &str,
    source: Option<&SecretSource>,
    data_dir: &Path,
) -> Result<Secret, String> {
    resolve(field, source, data_dir)?.ok_or_else(|| format!("{field} is required"))
}

/// The URL from the config, checked: http or https.
pub fn url(config: &ReceiverConfig, data_dir: &Path) -> Result<reqwest::Url, String> {
    let secret = require("url", config.url.as_ref(), data_dir)?;
    let url = reqwest::Url::parse(secret.expose()).map_err(|error| format!("url: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must be http or https".into());
    }
    Ok(url)
}

/// The URL's scheme, host and port only, for errors: robot URLs carry their token in the
/// query (DingTalk, WeCom) or the path (Feishu).
pub fn redacted(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default()
    )
}

/// POSTs a JSON body and returns the answer's text when the status is a success. 429 and 5xx
/// (and failing to connect) are worth a retry, honouring Retry-After; other statuses are not.
pub async fn post_json(
    client: &reqwest::Client,
    url: reqwest::Url,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<String, DeliveryError> {
    let target = redacted(&url);
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|error| {
        DeliveryError::retryable(format!("cannot reach {target}: {}", without_url(&error)))
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(3600)));
    let text = read_limited(response).await;
    if status.is_success() {
        return Ok(text);
    }
    let reason = format!("{target} answered {status}: {}", shorten(&text));
    if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
        Err(DeliveryError::Retryable {
            reason,
            retry_after,
        })
    } else {
        Err(DeliveryError::permanent(reason))
    }
}

fn without_url(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    // reqwest's own message names the URL (with its token): use the causes only.
    let mut first = true;
    while let Some(error) = source {
        if !first {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&error.to_string());
        }
        first = false;
        source = error.source();
    }
    if text.is_empty() {
        if error.is_timeout() {
            "timed out".into()
        } else {
            "request failed".into()
        }
    } else {
        text
    }
}

async fn read_limited(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = REPLY_MAX_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(REPLY_IN_ERROR_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The robots answer 200 with an error code in the body. `code_of` reads the code (0 is
/// success); `rate_limited` lists the codes that mean "too fast", worth a retry.
pub fn check_robot_reply(
    robot: &str,
    text: &str,
    codes: &[&str],
    rate_limited: &[i64],
) -> Result<(), DeliveryError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        DeliveryError::retryable(format!(
            "{robot} answered something that is not JSON: {}",
            shorten(text)
        ))
    })?;
    let code = codes
        .iter()
        .find_map(|field| value.get(*field).and_then(serde_json::Value::as_i64));
    match code {
        Some(0) => Ok(()),
        Some(code) if rate_limited.contains(&code) => Err(DeliveryError::Retryable {
            reason: format!("{robot} is rate limiting: {}", shorten(text)),
            retry_after: Some(Duration::from_secs(60)),
        }),
        Some(_) => Err(DeliveryError::permanent(format!(
            "{robot} refused the message: {}",
            shorten(text)
        ))),
        None => Err(DeliveryError::retryable(format!(
            "{robot} answered without a result code: {}",
            shorten(text)
        ))),
    }
}

/// HMAC-SHA256 of `message` keyed by `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(), &str>) {
        let got = check_robot_reply("robot", text, &["errcode", "code"], &[130101]);
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(DeliveryError::Retryable { .. }), Err("retry")) => {}
            (Err(DeliveryError::Permanent { .. }), Err("permanent")) => {}
            (got, expected) => panic!("{text}: {got:?} but expected {expected:?}"),
        }
    }

    #[test]
    fn robot_replies() {
        check(r#"{"errcode":0,"errmsg":"ok"}"#, Ok(()));
        check(r#"{"code":0,"msg":"success"}"#, Ok(()));
        check(
            r#"{"errcode":130101,"errmsg":"send too fast"}"#,
            Err("retry"),
        );
        check(
            r#"{"errcode":310000,"errmsg":"sign not match"}"#,
            Err("permanent"),
        );
        check("<html>", Err("retry"));
        check("{}", Err("retry"));
    }

    #[test]
    fn redacted_urls_lose_their_token() {
        let url = reqwest::Url::parse("https://oapi.dingtalk.com/robot/send?access_token=SECRET")
            .unwrap();
        assert_eq!(redacted(&url), "https://oapi.dingtalk.com");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
