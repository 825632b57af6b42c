//! The API's one error type: a client mistake becomes a 4xx whose JSON body names the field and
//! the reason; an internal fault becomes a 500, logged once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use posmon_protocol::{ErrorBody, ErrorDetail};

/// Why a request was refused: the stable `reason` of the error body and the label of
/// `posmon_ingest_rejected_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MalformedJson,
    InvalidField,
    UnsupportedSchemaVersion,
    MissingToken,
    InvalidToken,
    WrongTerminal,
    BodyTooLarge,
    UnsupportedMediaType,
    BadQuery,
    NotFound,
    /// A compressed body that does not decompress.
    BadEncoding,
    /// Too many report requests at once: come back after `Retry-After`.
    Overloaded,
    Internal,
    /// Too many report requests without the terminal header at once (their own pool is full).
    OverloadedUnidentified,
    /// One terminal has too many report requests in flight at once.
    TerminalBusy,
    /// One terminal sends report requests faster than its rate limit.
    RateLimited,
    /// The request body did not arrive within `limits.body_read_timeout_seconds`.
    BodyTimeout,
    /// The request would go over a bound of what is stored (outstanding enrollment codes).
    Conflict,
    /// An enrollment code that is unknown, used, expired or not for this terminal.
    InvalidCode,
    /// The actor's role is below the one the request needs.
    Forbidden,
    /// A cookie-authenticated request without its CSRF token, or from another site.
    Csrf,
    /// Too many failed sign-ins for the account or from the address: locked for a while.
    LoginLocked,
}

impl Reason {
    /// The reasons a report request can be refused for.
    pub const ALL: [Reason; 15] = [
        Reason::MalformedJson,
        Reason::InvalidField,
        Reason::UnsupportedSchemaVersion,
        Reason::MissingToken,
        Reason::InvalidToken,
        Reason::WrongTerminal,
        Reason::BodyTooLarge,
        Reason::UnsupportedMediaType,
        Reason::BadEncoding,
        Reason::Overloaded,
        Reason::Internal,
        Reason::OverloadedUnidentified,
        Reason::TerminalBusy,
        Reason::RateLimited,
        Reason::BodyTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidField => "invalid_field",
            Reason::UnsupportedSchemaVersion => "unsupported_schema_version",
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::WrongTerminal => "wrong_terminal",
            Reason::BodyTooLarge => "body_too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::BadQuery => "bad_query",
            Reason::NotFound => "not_found",
            Reason::BadEncoding => "bad_encoding",
            Reason::Overloaded => "overloaded",
            Reason::Internal => "internal",
            Reason::OverloadedUnidentified => "overloaded_unidentified",
            Reason::TerminalBusy => "terminal_busy",
            Reason::RateLimited => "rate_limited",
            Reason::BodyTimeout => "body_timeout",
            Reason::Conflict => "conflict",
            Reason::InvalidCode => "invalid_code",
            Reason::Forbidden => "forbidden",
            Reason::Csrf => "csrf",
            Reason::LoginLocked => "login_locked",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Reason::MalformedJson
            | Reason::InvalidField
            | Reason::UnsupportedSchemaVersion
            | Reason::BadQuery
            | Reason::BadEncoding => StatusCode::BAD_REQUEST,
            Reason::MissingToken | Reason::InvalidToken => StatusCode::UNAUTHORIZED,
            Reason::WrongTerminal | Reason::InvalidCode | Reason::Forbidden | Reason::Csrf => {
                StatusCode::FORBIDDEN
            }
            Reason::Conflict => StatusCode::CONFLICT,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::NotFound => StatusCode::NOT_FOUND,
            Reason::Overloaded | Reason::OverloadedUnidentified => StatusCode::SERVICE_UNAVAILABLE,
            Reason::TerminalBusy | Reason::RateLimited | Reason::LoginLocked => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Reason::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub reason: Reason,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            field: None,
            message: message.into(),
        }
    }

    pub fn field(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An internal fault: logged here, once, and answered without details.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "Internal error while {context}.");
        ApiError::new(Reason::Internal, format!("internal error while {context}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.reason.status();
        let body = ErrorBody {
            error: ErrorDetail {
                reason: self.reason.as_str().to_string(),
                field: self.field,
                message: self.message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
