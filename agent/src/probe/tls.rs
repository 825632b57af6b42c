//! The TLS rung: a handshake over the TCP connection, verified against the public web roots or
//! the target's own CA bundle (`ca_file`). A failed verification is classified (expired, not yet
//! valid, unknown CA, name mismatch) and the peer certificate's days to expiry are reported even
//! when verification fails, so an expired certificate says by how much.
//!
//! Every handshake is a full one, without session resumption: a resumed handshake shows no
//! certificate, and the full ladder (every 12 h by default) is where its expiry is measured;
//! session tickets rarely outlive that interval anyway.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posmon_protocol::ErrorKind;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use super::traffic::Counted;
use tokio_rustls::client::TlsStream;

/// The most certificates read from a `ca_file`.
const CA_FILE_MAX_CERTIFICATES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read CA certificates from {path}: {problem}")]
    CaFile { path: String, problem: String },
}

/// The trust anchors one target is verified against.
#[derive(Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
}

impl Trust {
    /// The public web roots, compiled into the agent: a terminal's own store may be years old.
    pub fn web() -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Trust {
            roots: Arc::new(roots),
        }
    }

    /// The PEM certificates of `path`, instead of the web roots.
    pub fn from_ca_file(path: &Path) -> Result<Self, TrustError> {
        let problem = |problem: String| TrustError::CaFile {
            path: path.display().to_string(),
            problem,
        };
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(path)
            .map_err(|error| problem(error.to_string()))?
            .take(CA_FILE_MAX_CERTIFICATES)
        {
            let certificate = certificate.map_err(|error| problem(error.to_string()))?;
            roots
                .add(certificate)
                .map_err(|error| problem(error.to_string()))?;
        }
        if roots.is_empty() {
            return Err(problem("no certificate in the file".to_string()));
        }
        Ok(Trust {
            roots: Arc::new(roots),
        })
    }
}

/// A completed handshake: the stream, its duration, the protocol version and the peer
/// certificate's days to expiry.
pub struct Handshake {
    pub stream: TlsStream<Counted<TcpStream>>,
    pub elapsed: Duration,
    pub version: Option<String>,
    pub days_left: Option<i64>,
}

/// A failed handshake: why, and the days to expiry of the certificate the peer presented.
pub struct HandshakeFailure {
    pub error: ErrorKind,
    pub detail: String,
    pub days_left: Option<i64>,
}

/// Performs a TLS handshake for `server_name` over `stream` within `timeout`.
pub async fn handshake(
    stream: Counted<TcpStream>,
    server_name: ServerName<'static>,
    trust: &Trust,
    timeout: Duration,
) -> Result<Handshake, HandshakeFailure> {
    let verifier = match WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&trust.roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    {
        Ok(verifier) => verifier,
        Err(error) => return Err(failure(ErrorKind::Other, format!("{error}"), None)),
    };
    let capturing = Arc::new(Capturing {
        inner: verifier,
        leaf: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| {
        builder
            .dangerous()
            .with_custom_certificate_verifier(capturing.clone())
            .with_no_client_auth()
    });
    let config = match config {
        Ok(config) => config,
        Err(error) => return Err(failure(ErrorKind::Other, error.to_string(), None)),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, connector.connect(server_name, stream)).await;
    let days_left = capturing.days_left();
    match result {
        Err(_) => Err(failure(
            ErrorKind::Timeout,
            format!("no handshake within {timeout:?}"),
            days_left,
        )),
        Ok(Err(error)) => {
            let (kind, detail) = classify(&error);
            Err(failure(kind, detail, days_left))
        }
        Ok(Ok(stream)) => {
            let version = stream
                .get_ref()
                .1
                .protocol_version()
                .and_then(|version| version.as_str())
                .map(|name| name.replace("TLSv1_", "TLSv1."));
            Ok(Handshake {
                stream,
                elapsed: started.elapsed(),
                version,
                days_left,
            })
        }
    }
}

fn failure(error: ErrorKind, detail: String, days_left: Option<i64>) -> HandshakeFailure {
    HandshakeFailure {
        error,
        detail,
        days_left,
    }
}

/// The error kind of a failed handshake, from the rustls error inside the IO error.
fn classify(error: &std::io::Error) -> (ErrorKind, String) {
    let detail = error.to_string();
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        let kind = match error.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            _ => ErrorKind::HandshakeFailed,
        };
        return (kind, detail);
    };
    let kind = match tls {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ErrorKind::CertificateExpired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ErrorKind::CertificateNotYetValid
            }
            CertificateError::UnknownIssuer => ErrorKind::UnknownCa,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ErrorKind::NameMismatch
            }
            _ => ErrorKind::HandshakeFailed,
        },
        // The peer's bytes are no TLS records at all (rustls: "received corrupt message of
        // type InvalidContentType"): another protocol (HTTP, SSH, a banner) on this port.
        rustls::Error::InvalidMessage(_) => ErrorKind::ProtocolError,
        _ => ErrorKind::HandshakeFailed,
    };
    (kind, detail)
}

/// Verifies like the web PKI verifier it wraps, keeping the peer's certificate to read its
/// expiry from whatever the verdict.
#[derive(Debug)]
struct Capturing {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Mutex<Option<Vec<u8>>>,
}

impl Capturing {
    fn days_left(&self) -> Option<i64> {
        let leaf = self.leaf.lock().ok()?.clone()?;
        let not_after = not_after(&leaf)?;
        let now = UnixTime::now().as_secs();
        let now = i64::try_from(now).ok()?;
        Some((not_after - now).div_euclid(86_400))
    }
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut leaf) = self.leaf.lock() {
            *leaf = Some(end_entity.to_vec());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate's notAfter as Unix seconds, by a bounds-checked walk of its DER:
/// Certificate → tbsCertificate → [version], serial, signature, issuer, validity → notAfter.
fn not_after(certificate: &[u8]) -> Option<i64> {
    let (_, certificate, _) = der_element(certificate)?;
    let (_, tbs, _) = der_element(certificate)?;
    let mut rest = tbs;
    // The optional explicit [0] version comes first.
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        // serialNumber, signature, issuer
        rest = der_element(rest)?.2;
    }
    let (_, validity, _) = der_element(rest)?;
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, not_after, _) = der_element(after_not_before)?;
    der_time(tag, std::str::from_utf8(not_after).ok()?)
}

/// (tag, content, rest) of the first DER element of `bytes`.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = usize::from(*bytes.get(1)?);
    let (length, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 4 {
            return None;
        }
        let mut length = 0usize;
        for byte in bytes.get(2..2 + count)? {
            length = (length << 8) | usize::from(*byte);
        }
        (length, 2 + count)
    };
    let end = header.checked_add(length)?;
    Some((tag, bytes.get(header..end)?, bytes.get(end..)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18) as
/// Unix seconds.
fn der_time(tag: u8, text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let year: i64 = text.get(..2)?.parse().ok()?;
            // RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx.
            (
                if year >= 50 { 1900 + year } else { 2000 + year },
                text.get(2..)?,
            )
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| rest.get(at..at + 2)?.parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, field(2)?).ok()?;
    let moment = date.with_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(moment.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(not_after: time::OffsetDateTime) {
        let mut params = rcgen::CertificateParams::new(vec!["pay.test".to_string()]).unwrap();
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(
            super::not_after(certificate.der()),
            Some(not_after.unix_timestamp()),
            "{not_after}"
        );
    }

    #[test]
    fn not_after_is_read_from_utc_and_generalized_times() {
        use time::macros::datetime;
        check(datetime!(2027-03-01 12:30:45 UTC));
        check(datetime!(2020-01-01 00:00:00 UTC));
        // From 2050 on, certificates carry a GeneralizedTime.
        check(datetime!(2051-06-30 23:59:59 UTC));
        assert_eq!(super::not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(super::not_after(&[]), None);
    }

    #[test]
    fn a_peer_that_speaks_no_tls_is_a_protocol_error() {
        let check = |error: rustls::Error, expected: ErrorKind| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            assert_eq!(classify(&io).0, expected, "{io}");
        };
        check(
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            ErrorKind::ProtocolError,
        );
        check(
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            ErrorKind::UnknownCa,
        );
        check(
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            ErrorKind::HandshakeFailed,
        );
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&eof).0, ErrorKind::Reset);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = Trust::from_ca_file(&path)
            .err()
            .map(|error| error.to_string());
        assert!(error.is_some_and(|error| error.contains("no certificate in the file")));
        let missing = Trust::from_ca_file(&dir.path().join("missing.pem")).err();
        assert!(missing.is_some());
    }
}
