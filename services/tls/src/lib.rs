//! mTLS for Meridian (issue 14, docs/security.md): every node serves its one port over TLS with
//! a certificate issued by the cluster's CA; nodes dial each other presenting theirs, and a
//! peer is known by the node id its certificate names; clients verify the router against the
//! CA (and may present a certificate of the same CA; one of another CA is refused in the
//! handshake).
//!
//! - [`NodeTls`]: a node's server and client configurations from three PEM files (CA, node
//!   certificate chain, key), reloaded in place ([`NodeTls::reload`], on SIGHUP): new
//!   connections use the new certificate, open ones go on.
//! - [`incoming`]: accepted TCP connections after their handshake (bounded, with a deadline),
//!   as tonic's server takes them (`Request::peer_certs` works on them).
//! - [`NodeTls::dialer`] and [`ClientTls::dialer`]: the transport seam's dialer over TLS.
//! - [`node_id_of`]: the node id a peer's certificate names (`n<ID>.node.meridian`).
//! - [`gen`]: a CA and node or client certificates (rcgen), for `meridian dev` and tests.

pub mod gen;

use futures::Stream;
use meridian_proto::io::{BoxedIo, Coalesce, Dialer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Longest a TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes a node runs at once; further connections wait in the kernel's backlog.
pub const HANDSHAKES_MAX: usize = 256;

/// Handshaken connections waiting for the server to take them.
pub const ACCEPTED_QUEUE: usize = 64;

/// The DNS name suffix under which a node certificate names its node: `n<ID>.node.meridian`.
pub const NODE_NAME_SUFFIX: &str = ".node.meridian";

/// The name a node certificate carries for node `id`.
pub fn node_name(id: u64) -> String {
    format!("n{id}{NODE_NAME_SUFFIX}")
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// ring's provider, named explicitly (no process-wide default to install). rustls deprecates
/// it for lacking post-quantum key exchange; aws-lc-rs, which has it, needs cmake to build.
///
/// TLS 1.3's AES-128-GCM comes first (rustls puts AES-256-GCM first): it is the suite Go and
/// most browsers prefer, and with AES-NI it seals and opens each record in fewer rounds, which
/// is the per-request cost that remains on long-lived connections (docs/security.md).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no certificate (PEM `CERTIFICATE`)"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("not a PEM private key: {e}")))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| file_err(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("the certificate and key do not fit: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Where a node's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's CA certificate (PEM): it signs every node's and client's certificate.
    pub ca: PathBuf,
    /// This node's certificate chain (PEM), naming `n<ID>.node.meridian` and the addresses
    /// clients dial.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

struct Loaded {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// A node's TLS: what it serves with and dials with, reloadable.
pub struct NodeTls {
    files: TlsFiles,
    id: u64,
    current: RwLock<Arc<Loaded>>,
    refused: AtomicU64,
}

impl NodeTls {
    /// Loads `files` for node `id`; refuses a certificate that does not name node `id`.
    pub fn load(files: TlsFiles, id: u64) -> Result<Arc<Self>, TlsError> {
        let loaded = Self::read(&files, id)?;
        Ok(Arc::new(Self {
            files,
            id,
            current: RwLock::new(Arc::new(loaded)),
            refused: AtomicU64::new(0),
        }))
    }

    fn read(files: &TlsFiles, id: u64) -> Result<Loaded, TlsError> {
        let roots = roots(&files.ca)?;
        let chain = certs(&files.cert)?;
        let named = node_id_of(&chain[0]);
        if named != Some(id) {
            return Err(file_err(
                &files.cert,
                format!(
                    "names node {} but this is node {id} (a node certificate names {})",
                    named.map_or("none".to_string(), |n| n.to_string()),
                    node_name(id)
                ),
            ));
        }
        let key = key(&files.key)?;
        // Clients without a certificate are let through the handshake (their token
        // authenticates them); one with a certificate must show one the CA signed.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| file_err(&files.ca, format!("cannot verify clients with it: {e}")))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                file_err(
                    &files.key,
                    format!("does not fit the certificate {}: {e}", files.cert.display()),
                )
            })?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let client = client_config(roots, Some((chain, key)))?;
        Ok(Loaded {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Reads the files again and uses them for every new connection; on an error the old
    /// configuration stays and the error says what is wrong.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Self::read(&self.files, self.id)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connections refused in the handshake so far (bad or foreign certificates, no TLS).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Dials peers over TLS: `names` maps each address this node dials (relays included) to
    /// the node id it must reach; the peer's certificate must name that node. An address not
    /// in `names` is not dialed.
    pub fn dialer(self: &Arc<Self>, names: HashMap<String, u64>) -> Dialer {
        let tls = self.clone();
        let names = Arc::new(names);
        Dialer::new(move |addr: String| {
            let tls = tls.clone();
            let names = names.clone();
            Box::pin(async move {
                let Some(id) = names.get(&addr).copied() else {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("{addr} is no node of the topology: not dialed over mTLS"),
                    ));
                };
                let name = ServerName::try_from(node_name(id))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                dial(tls.current().connector.clone(), &addr, name).await
            })
        })
    }
}

async fn dial(
    connector: TlsConnector,
    addr: &str,
    name: ServerName<'static>,
) -> io::Result<BoxedIo> {
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // A refused handshake (a certificate that does not verify, or ours refused) is not a
        // network failure: say so with its own kind, so callers do not retry it.
        // (rustls reports those as InvalidData; a reset or an EOF stays what it is.)
        connector.connect(name, tcp).await.map_err(|e| {
            if e.kind() != io::ErrorKind::InvalidData {
                return e;
            }
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("TLS handshake with {addr} refused: {e}"),
            )
        })
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await {
        Ok(Ok(s)) => Ok(BoxedIo::new(Coalesce::new(s))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS connection to {addr} not set up within {HANDSHAKE_TIMEOUT:?}"),
        )),
    }
}

/// A client's TLS: the cluster's CA, and optionally a client certificate of it.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Verifies routers against the CA in `ca` (PEM); presents `identity` (certificate chain
    /// and key files) when given.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let identity = match identity {
            Some((c, k)) => Some((certs(c)?, key(k)?)),
            None => None,
        };
        let cfg = client_config(roots(ca)?, identity)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// Dials `host:port` over TLS, verifying that the router's certificate names `host` (an
    /// IP address or a DNS name).
    pub fn dialer(&self) -> Dialer {
        let connector = self.connector.clone();
        Dialer::new(move |addr: String| {
            let connector = connector.clone();
            Box::pin(async move {
                let name = ServerName::try_from(gen::host_of(&addr)).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{addr}: not a host to verify a certificate for: {e}"),
                    )
                })?;
                dial(connector, &addr, name).await
            })
        })
    }
}

/// The node id a certificate names (`n<ID>.node.meridian` among its DNS names), if any.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => d
            .strip_suffix(NODE_NAME_SUFFIX)
            .and_then(|s| s.strip_prefix('n'))
            .and_then(|s| s.parse().ok()),
        _ => None,
    })
}

/// The node id named by the first certificate a TLS peer presented (tonic's
/// `Request::peer_certs`).
pub fn peer_node(certs: Option<&[CertificateDer<'_>]>) -> Option<u64> {
    certs.and_then(|c| c.first()).and_then(node_id_of)
}

/// `listener`'s connections once their TLS handshake succeeded: at most [`HANDSHAKES_MAX`]
/// at a time, each within [`HANDSHAKE_TIMEOUT`]; a failed one is counted and logged, and the
/// stream goes on. Ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<NodeTls>,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.current().acceptor.clone();
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tls.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%from, "TLS handshake refused: {e}");
                    }
                    Err(_) => {
                        tls.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%from, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests;
