//! Email over SMTP (lettre, rustls; STARTTLS, implicit TLS, or plain for a local relay): the
//! title as the subject and the markdown as a plain-text body, in the receiver's language.
//! The Message-ID derives from the idempotency key, so a mail client shows a repeat once.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{Language, ReceiverConfig, SmtpTls};
use super::message::{markdown, title, Format};
use super::receiver::{resolve, Context, Delivery, DeliveryError, DeliveryFuture, Receiver};

/// Mail bodies are cut to this size.
const BODY_MAX_BYTES: usize = 256 * 1024;

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    language: Language,
}

impl Email {
    pub fn new(config: &ReceiverConfig, context: &Context<'_>) -> Result<Self, String> {
        let server = config.smtp_server.as_deref().unwrap_or_default();
        let (host, port) = server
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or("smtp_server must be host:port")?;
        let mut builder = match config.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|error| format!("smtp_server: {error}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|error| format!("smtp_server: {error}"))?,
        }
        .port(port)
        .timeout(Some(context.request_timeout));
        if let Some(username) = &config.smtp_username {
            let password = resolve(
                "smtp_password",
                config.smtp_password.as_ref(),
                context.data_dir,
            )?
            .ok_or("smtp_password is required with smtp_username")?;
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().to_string(),
            ));
        }
        let mailbox = |field: &str, text: &str| {
            text.parse::<Mailbox>()
                .map_err(|error| format!("{field} {text:?}: {error}"))
        };
        Ok(Email {
            transport: builder.build(),
            from: mailbox("from", config.from.as_deref().unwrap_or_default())?,
            to: config
                .to
                .iter()
                .map(|to| mailbox("to", to))
                .collect::<Result<_, _>>()?,
            language: config.language,
        })
    }

    async fn send(&self, delivery: Delivery<'_>) -> Result<(), DeliveryError> {
        let notification = delivery.notification;
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(title(notification, self.language, Format::Email))
            .message_id(Some(format!("<{}@posmon>", delivery.idempotency_key)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(markdown(
                notification,
                self.language,
                Format::Email,
                BODY_MAX_BYTES,
            ))
            .map_err(|error| DeliveryError::permanent(format!("cannot build the mail: {error}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => Err(DeliveryError::permanent(format!(
                "the SMTP server refused the mail: {error}"
            ))),
            Err(error) => Err(DeliveryError::retryable(format!("SMTP: {error}"))),
        }
    }
}

impl Receiver for Email {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliveryFuture<'a> {
        Box::pin(self.send(delivery))
    }
}
