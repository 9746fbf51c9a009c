//! TLS for sluice's connections to database servers (the source, its replication stream, and
//! the server targets), on rustls with the `ring` provider.
//!
//! Four modes, as MySQL clients name them (`--ssl-mode`):
//!
//! | mode | encrypted | certificate chain checked | host name checked |
//! |---|---|---|---|
//! | `disabled` | no | – | – |
//! | `required` | yes | no | no |
//! | `verify_ca` | yes | yes (against `tls_ca_file`, else the Mozilla roots) | no |
//! | `verify_identity` | yes | yes | yes |
//!
//! A mode other than `disabled` never falls back to plaintext: a server that does not offer
//! TLS is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify_ca",
            TlsMode::VerifyIdentity => "verify_identity",
        })
    }
}

/// How one connection uses TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// PEM file of the CA certificate(s) to trust; the Mozilla roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for servers that ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    pub fn disabled() -> Self {
        TlsSettings {
            mode: TlsMode::Disabled,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.mode != TlsMode::Disabled
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS setup: {0}")]
    Verifier(String),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(what, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "TLS client key file";
    let pem = read_file(what, path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PEM private key",
        })
}

/// The rustls client configuration for `settings` (whose mode is not `disabled`).
pub fn client_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            for cert in read_certificates("TLS CA file", path)? {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        TlsMode::VerifyIdentity | TlsMode::Disabled => webpki,
        TlsMode::VerifyCa | TlsMode::Required => Arc::new(Relaxed {
            webpki,
            check_chain: settings.mode == TlsMode::VerifyCa,
        }),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => builder.with_client_auth_cert(
            read_certificates("TLS client certificate file", cert)?,
            read_private_key(key)?,
        )?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a server's certificate is checked against (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// The modes that check less than `verify_identity`: `verify_ca` checks the chain but not the
/// name in it; `required` accepts any certificate. The handshake's signatures are always
/// checked (by the WebPKI verifier's algorithms), so the session key belongs to whoever holds
/// the certificate's key.
#[derive(Debug)]
struct Relaxed {
    webpki: Arc<WebPkiServerVerifier>,
    check_chain: bool,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
