//! TLS for every listener: rustls, TLS 1.2 and 1.3 only, rustls' default cipher suites of
//! the `ring` provider.
//!
//! - [`Certificates`]: the configured certificate chains and keys, loaded and checked (the key
//!   must match its certificate). One is the default; others are chosen by SNI name (exact, or
//!   `*.domain` for one label), like Postfix's `tls_server_sni_maps` or Dovecot's `local_name`.
//! - [`TlsShared`] / [`TlsAcceptor`]: SIGHUP reloads the certificate files in the main thread
//!   and bumps a generation counter; each core notices it at its next handshake and builds its
//!   own `ServerConfig` (own session cache: no lock shared between cores per handshake).
//!   Connections already established keep the config they started with: nothing is dropped.
//! - [`ensure_self_signed`]: with no `[tls] cert`, a self-signed certificate for the host name
//!   is generated into `data_dir/tls/` at first start, so every TLS listener works out of the
//!   box (clients must be told to trust it).
//! - [`TlsStream`]: a server-side rustls connection over a glommio `TcpStream`, with its own
//!   ciphertext buffer. It can be taken apart ([`TlsStream::into_parts`]) and rebuilt on
//!   another core, which is how a logged-in IMAP/POP3 connection moves to its owner core.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, Connection};

/// Ciphertext read from the socket per read call (one TLS record is at most ~16.6 KiB).
pub const CIPHERTEXT_BUFFER_BYTES: usize = 17 * 1024;
/// SNI certificates beyond the default one.
pub const SNI_CERTIFICATES_MAX: usize = 1000;
/// Largest certificate or key file read.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("TLS: {path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS: certificate {cert} and key {key}: {what}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        what: String,
    },
    #[error("TLS: {0}")]
    Config(String),
    #[error("TLS: cannot generate the self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS: cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// One certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What `[tls]` configures: the default certificate (None: the generated self-signed one)
/// and the SNI certificates with their names (lowercase, `*.example.org` allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub default: Option<CertFiles>,
    pub sni: Vec<(Vec<String>, CertFiles)>,
}

/// Loaded certificates: the resolver rustls asks at every handshake.
#[derive(Debug)]
pub struct Certificates {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    Ok(bytes)
}

fn load_pair(files: &CertFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = read_pem(&files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            what: format!("not a PEM certificate chain: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert.clone(),
            what: "no CERTIFICATE block".into(),
        });
    }
    let key_pem = read_pem(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    let key_error = |what: String| TlsError::Key {
        cert: files.cert.clone(),
        key: files.key.clone(),
        what,
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| key_error(format!("unsupported key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| key_error(format!("the key does not belong to the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

impl Certificates {
    /// Loads and checks every file. `default` must be given (see [`ensure_self_signed`]).
    pub fn load(default: &CertFiles, sni: &[(Vec<String>, CertFiles)]) -> Result<Self, TlsError> {
        if sni.len() > SNI_CERTIFICATES_MAX {
            return Err(TlsError::Config(format!(
                "{} SNI certificates: at most {SNI_CERTIFICATES_MAX}",
                sni.len()
            )));
        }
        let default = load_pair(default)?;
        let mut by_name = Vec::new();
        for (names, files) in sni {
            let key = load_pair(files)?;
            for name in names {
                by_name.push((name.to_ascii_lowercase(), key.clone()));
            }
        }
        Ok(Certificates { default, by_name })
    }

    /// The certificate for an SNI name: exact match, then `*.parent`, then the default.
    pub fn for_name(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some((_, k)) = self.by_name.iter().find(|(n, _)| *n == name) {
            return k;
        }
        if let Some((_, parent)) = name.split_once('.') {
            let wildcard = format!("*.{parent}");
            if let Some((_, k)) = self.by_name.iter().find(|(n, _)| *n == wildcard) {
                return k;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.for_name(hello.server_name()).clone())
    }
}

/// A rustls server config over `certs`: TLS 1.3 and 1.2, no client certificates.
pub fn server_config(certs: Arc<Certificates>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    Ok(Arc::new(config))
}

/// The certificates every core serves, replaced on SIGHUP. The mutex is taken by a core
/// only after a reload (the generation changed), never per handshake.
pub struct TlsShared {
    settings: TlsSettings,
    generation: AtomicU64,
    current: Mutex<Arc<Certificates>>,
}

impl TlsShared {
    /// Loads `settings` (whose default certificate must be set).
    pub fn load(settings: TlsSettings) -> Result<TlsShared, TlsError> {
        let certs = Self::read(&settings)?;
        Ok(TlsShared {
            settings,
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(certs)),
        })
    }

    fn read(settings: &TlsSettings) -> Result<Certificates, TlsError> {
        let default = settings
            .default
            .as_ref()
            .ok_or_else(|| TlsError::Config("no default certificate".into()))?;
        Certificates::load(default, &settings.sni)
    }

    /// Re-reads the certificate files. On error the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certs = Arc::new(Self::read(&self.settings)?);
        match self.current.lock() {
            Ok(mut c) => *c = certs,
            Err(poisoned) => *poisoned.into_inner() = certs,
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn snapshot(&self) -> (u64, Arc<Certificates>) {
        let generation = self.generation.load(Ordering::Acquire);
        let certs = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        (generation, certs)
    }
}

/// One core's view of [`TlsShared`]: its own `ServerConfig`, rebuilt after a reload.
pub struct TlsAcceptor {
    shared: Arc<TlsShared>,
    generation: Cell<u64>,
    config: RefCell<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    pub fn new(shared: Arc<TlsShared>) -> Result<TlsAcceptor, TlsError> {
        let (generation, certs) = shared.snapshot();
        Ok(TlsAcceptor {
            shared,
            generation: Cell::new(generation),
            config: RefCell::new(server_config(certs)?),
        })
    }

    /// The config for a new handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        if self.shared.generation.load(Ordering::Acquire) != self.generation.get() {
            let (generation, certs) = self.shared.snapshot();
            match server_config(certs) {
                Ok(c) => *self.config.borrow_mut() = c,
                Err(e) => eprintln!("ringmail: keeping the previous TLS config: {e}"),
            }
            self.generation.set(generation);
        }
        self.config.borrow().clone()
    }

    /// A server connection for a new handshake.
    pub fn connection(&self) -> io::Result<ServerConnection> {
        ServerConnection::new(self.config()).map_err(io::Error::other)
    }
}

/// How an outbound delivery treats the remote's certificate after STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Opportunistic TLS (RFC 7435): encrypt, accept any certificate (most MX certificates
    /// do not name the MX host a sender looked up).
    None,
    /// The chain must lead to a trusted root and name the host.
    Verified,
}

/// Accepts any certificate but still checks the handshake signatures (opportunistic TLS).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client configs for outbound deliveries: one that accepts any certificate, and one that
/// verifies against the roots in `ca_file` (PEM bundle; the system's by default).
pub struct ClientConfigs {
    pub opportunistic: Arc<rustls::ClientConfig>,
    pub verified: Option<Arc<rustls::ClientConfig>>,
}

/// The system's CA bundle (Debian/Ubuntu path).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl ClientConfigs {
    /// `ca_file`: the trusted roots for verified deliveries; when it cannot be read, verified
    /// deliveries are impossible (and fail as temporary errors) but opportunistic TLS works.
    pub fn new(ca_file: &Path) -> Result<ClientConfigs, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Config(e.to_string()))
        };
        let opportunistic = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone())))
            .with_no_client_auth();
        let verified = match read_pem(ca_file) {
            Ok(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    // Bundles carry a few certificates webpki cannot use: skip those.
                    let _ = roots.add(cert);
                }
                (!roots.is_empty()).then(|| {
                    builder()
                        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                })
            }
            Err(_) => None,
        }
        .transpose()?;
        Ok(ClientConfigs {
            opportunistic: Arc::new(opportunistic),
            verified,
        })
    }

    /// A client connection to `host` (also the SNI name when it is a DNS name).
    pub fn connection(&self, verify: Verify, host: &str) -> io::Result<ClientConnection> {
        let config = match verify {
            Verify::None => self.opportunistic.clone(),
            Verify::Verified => self
                .verified
                .clone()
                .ok_or_else(|| io::Error::other("no trusted root certificates to verify with"))?,
        };
        let name = rustls::pki_types::ServerName::try_from(host.trim_end_matches('.').to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        ClientConnection::new(config, name).map_err(io::Error::other)
    }
}

/// Where the generated certificate lives.
pub fn self_signed_files(data_dir: &Path) -> CertFiles {
    let dir = data_dir.join("tls");
    CertFiles {
        cert: dir.join("self-signed-cert.pem"),
        key: dir.join("self-signed-key.pem"),
    }
}

/// Returns the self-signed certificate's files, generating them (for `hostname`, `localhost`,
/// 127.0.0.1 and ::1) if they do not exist yet. The bool says whether they were generated.
pub fn ensure_self_signed(data_dir: &Path, hostname: &str) -> Result<(CertFiles, bool), TlsError> {
    let files = self_signed_files(data_dir);
    if files.cert.exists() && files.key.exists() {
        return Ok((files, false));
    }
    let mut names = vec![hostname.to_string()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let dir = files.cert.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // The key first: a certificate without its key would be taken as complete next time.
    let write = |path: &Path, text: String, mode: u32| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        crate::accounts::replace_file_mode(dir, name, text.as_bytes(), mode).map_err(|e| {
            TlsError::Write {
                path: e.path,
                source: e.source,
            }
        })
    };
    write(&files.key, generated.signing_key.serialize_pem(), 0o600)?;
    write(&files.cert, generated.cert.pem(), 0o644)?;
    Ok((files, true))
}

/// A TLS connection over a glommio TCP stream: the server side of every listener, or the
/// client side of an outbound delivery (STARTTLS to a remote MX).
pub struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// Ciphertext read from the socket and not yet given to rustls.
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
}

/// What a TLS connection carries when it moves to another core.
pub struct TlsParts {
    pub conn: Connection,
    /// Ciphertext read from the socket but not yet processed.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for TlsParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsParts {{ ciphertext: {} bytes }}",
            self.ciphertext.len()
        )
    }
}

impl TlsStream {
    fn with(tcp: TcpStream, conn: Connection, ciphertext: &[u8]) -> TlsStream {
        let mut rbuf = vec![0u8; CIPHERTEXT_BUFFER_BYTES.max(ciphertext.len())].into_boxed_slice();
        rbuf[..ciphertext.len()].copy_from_slice(ciphertext);
        TlsStream {
            tcp,
            conn,
            rbuf,
            rstart: 0,
            rend: ciphertext.len(),
            wbuf: Vec::new(),
        }
    }

    /// Runs the server handshake on `tcp`. Bytes already in the socket are the client's
    /// ClientHello; nothing read before (plaintext) is ever given to rustls.
    pub async fn accept(tcp: TcpStream, conn: ServerConnection) -> io::Result<TlsStream> {
        TlsStream::handshake(tcp, Connection::Server(conn)).await
    }

    /// Runs the client handshake on `tcp` (after the remote said yes to STARTTLS).
    pub async fn connect(tcp: TcpStream, conn: ClientConnection) -> io::Result<TlsStream> {
        TlsStream::handshake(tcp, Connection::Client(conn)).await
    }

    async fn handshake(tcp: TcpStream, conn: Connection) -> io::Result<TlsStream> {
        let mut s = TlsStream::with(tcp, conn, &[]);
        while s.conn.is_handshaking() {
            s.flush_tls().await?;
            if !s.conn.is_handshaking() {
                break;
            }
            if !s.read_tls_more().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed during the TLS handshake",
                ));
            }
        }
        s.flush_tls().await?;
        Ok(s)
    }

    /// Rebuilds a stream taken apart with [`TlsStream::into_parts`].
    pub fn from_parts(tcp: TcpStream, parts: TlsParts) -> TlsStream {
        TlsStream::with(tcp, parts.conn, &parts.ciphertext)
    }

    pub fn into_parts(self) -> (TcpStream, TlsParts) {
        let ciphertext = self.rbuf[self.rstart..self.rend].to_vec();
        (
            self.tcp,
            TlsParts {
                conn: self.conn,
                ciphertext,
            },
        )
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The SNI name the client asked for (server side).
    pub fn server_name(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(c) => c.server_name(),
            Connection::Client(_) => None,
        }
    }

    /// The negotiated protocol version and cipher suite, e.g. for a Received header.
    pub fn negotiated(&self) -> Option<(rustls::ProtocolVersion, rustls::CipherSuite)> {
        Some((
            self.conn.protocol_version()?,
            self.conn.negotiated_cipher_suite()?.suite(),
        ))
    }

    /// Sends whatever rustls has queued (handshake messages, records, alerts).
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.wbuf.clear();
            self.conn.write_tls(&mut self.wbuf)?;
            self.tcp.write_all(&self.wbuf).await?;
        }
        Ok(())
    }

    /// Gives rustls more ciphertext, reading the socket if none is buffered. False at EOF.
    async fn read_tls_more(&mut self) -> io::Result<bool> {
        if self.rstart == self.rend {
            let n = self.tcp.read(&mut self.rbuf).await?;
            if n == 0 {
                return Ok(false);
            }
            self.rstart = 0;
            self.rend = n;
        }
        let mut pending = &self.rbuf[self.rstart..self.rend];
        let n = self.conn.read_tls(&mut pending)?;
        self.rstart += n;
        if let Err(e) = self.conn.process_new_packets() {
            // The alert describing the error is queued: send it before failing.
            let _ = self.flush_tls().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(true)
    }

    /// Reads plaintext; 0 at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Key updates and the like may need an answer before more data comes.
            self.flush_tls().await?;
            if !self.read_tls_more().await? {
                return Ok(0);
            }
        }
    }

    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.conn.writer().write(data)?;
            data = &data[n..];
            self.flush_tls().await?;
        }
        Ok(())
    }

    /// Sends close_notify and closes the socket.
    pub async fn close(mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_tls().await;
        let _ = self.tcp.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn pair(dir: &Path, name: &str, sans: &[&str]) -> CertFiles {
        let g = rcgen::generate_simple_self_signed(
            sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, g.cert.pem()).unwrap();
        std::fs::write(&files.key, g.signing_key.serialize_pem()).unwrap();
        files
    }

    fn leaf(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].as_ref().to_vec()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = pair(dir.path(), "default", &["mx.example.test"]);
        let a = pair(dir.path(), "a", &["mail.a.test"]);
        let w = pair(dir.path(), "w", &["*.w.test"]);
        let certs = Certificates::load(
            &d,
            &[
                (vec!["mail.a.test".into()], a),
                (vec!["*.w.test".into()], w),
            ],
        )
        .unwrap();
        let default = leaf(certs.for_name(None));
        let a_leaf = leaf(certs.for_name(Some("MAIL.A.test.")));
        let w_leaf = leaf(certs.for_name(Some("imap.w.test")));
        assert_ne!(a_leaf, default);
        assert_ne!(w_leaf, default);
        assert_ne!(w_leaf, a_leaf);
        assert_eq!(leaf(certs.for_name(Some("other.test"))), default);
        // A wildcard covers one label only.
        assert_eq!(leaf(certs.for_name(Some("a.b.w.test"))), default);
        assert_eq!(leaf(certs.for_name(Some("w.test"))), default);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_with_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.test"]);
        let b = pair(dir.path(), "b", &["b.test"]);
        let mixed = CertFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = Certificates::load(&mixed, &[]).unwrap_err().to_string();
        assert!(e.contains("a.crt") && e.contains("b.key"), "{e}");
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn missing_or_garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CertFiles {
            cert: dir.path().join("nope.crt"),
            key: dir.path().join("nope.key"),
        };
        let e = Certificates::load(&missing, &[]).unwrap_err().to_string();
        assert!(e.contains("nope.crt"), "{e}");
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = Certificates::load(
            &CertFiles {
                cert: junk,
                key: missing.key,
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("junk.crt") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }

    #[test]
    fn self_signed_is_generated_once_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (files, generated) = ensure_self_signed(dir.path(), "mx.example.test").unwrap();
        assert!(generated);
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read(&files.cert).unwrap();
        let (again, generated) = ensure_self_signed(dir.path(), "mx.example.test").unwrap();
        assert!(!generated);
        assert_eq!(std::fs::read(&again.cert).unwrap(), first);
        Certificates::load(&files, &[]).unwrap();
    }

    #[test]
    fn reload_bumps_the_generation_and_keeps_the_old_certs_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = pair(dir.path(), "d", &["x.test"]);
        let shared = TlsShared::load(TlsSettings {
            default: Some(d.clone()),
            sni: vec![],
        })
        .unwrap();
        let (g0, c0) = shared.snapshot();
        let before = leaf(c0.for_name(None));
        pair(dir.path(), "d", &["x.test"]); // new cert and key in the same files
        shared.reload().unwrap();
        let (g1, c1) = shared.snapshot();
        assert_eq!(g1, g0 + 1);
        assert_ne!(leaf(c1.for_name(None)), before);
        std::fs::write(&d.cert, "broken").unwrap();
        assert!(shared.reload().is_err());
        let (g2, c2) = shared.snapshot();
        assert_eq!(g2, g1);
        assert_eq!(leaf(c2.for_name(None)), leaf(c1.for_name(None)));
    }

    /// A TLS exchange over loopback between our server side and our client side: any
    /// certificate with opportunistic TLS; verified only against the right root and name.
    #[test]
    fn client_and_server_sides_talk_and_verification_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let server_files = pair(dir.path(), "srv", &["mx.example.test", "127.0.0.1"]);
        let other = pair(dir.path(), "other", &["other.test"]);
        let results = glommio::LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .spawn(move || async move {
                let shared = Arc::new(
                    TlsShared::load(TlsSettings {
                        default: Some(server_files.clone()),
                        sni: vec![],
                    })
                    .unwrap(),
                );
                let acceptor = Rc::new(TlsAcceptor::new(shared).unwrap());
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let server = glommio::spawn_local({
                    let acceptor = acceptor.clone();
                    async move {
                        for _ in 0..3 {
                            let tcp = listener.accept().await.unwrap();
                            let conn = acceptor.connection().unwrap();
                            if let Ok(mut s) = TlsStream::accept(tcp, conn).await {
                                let mut buf = [0u8; 5];
                                let n = s.read(&mut buf).await.unwrap();
                                s.write_all(&buf[..n]).await.unwrap();
                                s.close().await;
                            }
                        }
                    }
                });
                let mut results = Vec::new();
                for (ca, verify, host) in [
                    (&other.cert, Verify::None, "anything.test"),
                    (&server_files.cert, Verify::Verified, "mx.example.test"),
                    (&other.cert, Verify::Verified, "mx.example.test"),
                ] {
                    let configs = ClientConfigs::new(ca).unwrap();
                    let tcp = glommio::net::TcpStream::connect(addr).await.unwrap();
                    let conn = configs.connection(verify, host).unwrap();
                    let outcome = match TlsStream::connect(tcp, conn).await {
                        Ok(mut s) => {
                            s.write_all(b"hello").await.unwrap();
                            let mut buf = [0u8; 5];
                            let n = s.read(&mut buf).await.unwrap();
                            let ok = &buf[..n] == b"hello" && s.negotiated().is_some();
                            s.close().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    results.push(outcome);
                }
                server.await;
                results
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(results, vec![true, true, false]);
    }
}
