//! TLS for the HTTP endpoint (rustls with the ring provider): the server
//! certificate and key from `tlsCertFile`/`tlsPrivateKeyFile`, and, with
//! `tlsClientCAFile`, optional client certificates. A client that presents
//! one must present one that CA signed (the handshake fails otherwise); a
//! client that presents none is let through to bearer-token
//! authentication, as the kubelet's x509 + token authenticators do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field} {path}: {message}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{field} {path}: no certificate in it")]
    NoCertificate { field: &'static str, path: PathBuf },
    #[error("tlsCertFile/tlsPrivateKeyFile: {0}")]
    Config(rustls::Error),
    #[error("tlsClientCAFile {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
}

/// What the server needs: the certificate chain, its key, optionally the
/// client CA bundle.
pub struct Files<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |message: String| TlsError::Pem {
        field,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Builds the server's TLS configuration, checking every file now so that
/// a bad one stops the agent at start with its name.
pub fn server_config(files: &Files) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("tlsCertFile", files.cert)?;
    let key = PrivateKeyDer::from_pem_file(files.key).map_err(|e| TlsError::Pem {
        field: "tlsPrivateKeyFile",
        path: files.key.to_path_buf(),
        message: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("tlsClientCAFile", ca)? {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: ca.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.to_path_buf(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
