//! HTTPS on the public listener: PEM certificate chain and key loaded with rustls-pki-types, ALPN h2 + http/1.1.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::config::settings::TlsFiles;

/// The TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls_cert_file {path}: {why}")]
    Cert { path: String, why: String },
    #[error("server.tls_key_file {path}: {why}")]
    Key { path: String, why: String },
    #[error("server.tls_cert_file / tls_key_file: {0}")]
    Mismatch(String),
}

/// Builds the acceptor from the configured files.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert { path: cert_path.clone(), why: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { path: cert_path, why: "no certificate in the file".into() });
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key { path: key_path, why: e.to_string() })?;
    let mut config = rustls::ServerConfig::builder_with_provider(rustls::crypto::aws_lc_rs::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
