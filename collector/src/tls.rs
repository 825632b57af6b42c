//! TLS for the collector's listener: rustls with the ring provider, a certificate chain and key
//! from PEM files, and, when a client CA bundle is configured, client certificates required and
//! verified against it (mutual TLS, common in payment networks' private PKIs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} from {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls: {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("tls: {0}")]
    Rustls(String),
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |message: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// The rustls server configuration `tls` describes.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    tls: &TlsConfig,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert_file, "the certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| TlsError::Pem {
        what: "the private key",
        path: key_file.to_path_buf(),
        message: error.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, "the client CA bundle")? {
                roots.add(certificate).map_err(|error| {
                    TlsError::Rustls(format!("client CA {}: {error}", path.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::Rustls(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Rustls(format!("certificate and key: {error}")))?;
    // HTTP/2 first: its header compression saves agents most of each request's headers.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
