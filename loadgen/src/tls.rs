//! TLS settings for `--tls` (implicit, port 465 style) and `--starttls`, and
//! the rustls client configuration built from them once per run: the ring
//! provider only, TLS 1.3 and 1.2. With `--tls-ca FILE` the server's chain
//! must lead to one of the file's certificates and name `--tls-name`; without
//! it, [`AcceptAnyServerCertificate`] takes any certificate (a loopback
//! benchmark tool, not a mail client) but still checks the handshake
//! signatures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// Largest `--tls-ca` file read.
pub const CA_FILE_BYTES_MAX: u64 = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("--tls-ca {path}: cannot read: {reason}")]
    CaRead { path: PathBuf, reason: String },
    #[error("--tls-ca {path}: no usable PEM certificate in it")]
    CaEmpty { path: PathBuf },
    #[error("--tls-name `{name}`: not a DNS name or IP address")]
    Name { name: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// When TLS starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// `EHLO`, `STARTTLS`, handshake, `EHLO` again (RFC 3207).
    StartTls,
    /// Handshake right after connecting, before the greeting (RFC 8314).
    Implicit,
}

impl TlsMode {
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "tls",
        }
    }
}

/// Validated TLS options of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// SNI and the name the certificate must carry (with a CA file).
    pub server_name: String,
    /// `--tls-ca`: verify against these roots; `None`: accept any certificate.
    pub ca_file: Option<PathBuf>,
    pub ca_certs: Vec<CertificateDer<'static>>,
}

/// Reads the PEM certificates of a `--tls-ca` file (at least one).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use std::io::Read;
    let read_error = |reason: String| TlsError::CaRead {
        path: path.to_path_buf(),
        reason,
    };
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(CA_FILE_BYTES_MAX).read_to_end(&mut pem))
        .map_err(|e| read_error(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(format!("bad PEM: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(TlsError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Checks a `--tls-name` the way the handshake will use it.
pub fn check_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::Name {
        name: name.to_owned(),
    })
}

/// The run's client configuration and the server name to present.
#[derive(Clone, Debug)]
pub struct TlsContext {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsContext {
    pub fn new(settings: &TlsSettings) -> Result<TlsContext, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = if settings.ca_file.is_some() {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(settings.ca_certs.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate(provider)))
                .with_no_client_auth()
        };
        Ok(TlsContext {
            config: Arc::new(config),
            server_name: check_server_name(&settings.server_name)?,
        })
    }

    /// A client session for one connection.
    pub fn connection(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}

/// Accepts ANY server certificate (no chain, no name, no expiry check), used
/// only when no `--tls-ca` is given: the handshake signatures are still
/// verified, so the session is encrypted to whoever holds the certificate's
/// key, but who that is is not checked.
#[derive(Debug)]
pub struct AcceptAnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_a_certificate() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("ringmail-loadgen-no-ca-{}", std::process::id()));
        let err = load_ca_file(&missing).unwrap_err();
        assert!(matches!(err, TlsError::CaRead { .. }), "{err}");
        let empty = dir.join(format!("ringmail-loadgen-empty-ca-{}", std::process::id()));
        std::fs::write(&empty, "no pem here\n").unwrap();
        let err = load_ca_file(&empty).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(matches!(err, TlsError::CaEmpty { .. }), "{err}");
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(check_server_name("mail.example.test").is_ok());
        assert!(check_server_name("127.0.0.1").is_ok());
        assert!(check_server_name("::1").is_ok());
        assert!(check_server_name("bad name").is_err());
        assert!(check_server_name("").is_err());
    }

    #[test]
    fn a_context_without_ca_accepts_any_certificate() {
        let settings = TlsSettings {
            mode: TlsMode::StartTls,
            server_name: "localhost".into(),
            ca_file: None,
            ca_certs: Vec::new(),
        };
        let ctx = TlsContext::new(&settings).unwrap();
        let conn = ctx.connection().unwrap();
        assert!(conn.is_handshaking());
    }
}
