//! `meridian dev` with security on (the default; `--insecure` for none), docs/security.md:
//! - tokens: a root key in the data directory (made once, reused when the directory is), every
//!   node set to verify tokens with its public half, and a root token (every operation on `/`,
//!   30 days) for the person at the keyboard;
//! - mTLS: a CA in the data directory (made once, reused) and a certificate per node, naming
//!   the node and its address, issued at every start (not with `--no-tls`: tokens over plain
//!   TCP, to measure what TLS costs or behind a mesh that encrypts).
//!
//! The token and the CA certificate are in the ready file, in the data directory and in files
//! named after the port in the temporary directory, from where the CLI on this machine picks
//! them up when it talks to a loopback endpoint on that port and was given none.

use anyhow::Context;
use meridian_auth::{Grant, OpSet, RootKey};
use meridian_server::NodeConfig;
use meridian_tls::gen;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long the root token `meridian dev` mints lives.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// What a secure `meridian dev` made. Removes the well-known files when dropped.
pub struct DevSecurity {
    pub public_key: String,
    pub token: String,
    pub token_file: PathBuf,
    /// The cluster's CA certificate (PEM); None with tokens only (`--no-tls`).
    pub ca_file: Option<PathBuf>,
    tls_dir: PathBuf,
    port: u16,
    well_known: Vec<PathBuf>,
}

/// Where `meridian dev --port PORT` leaves its root token for the CLI on this machine.
pub fn well_known_token_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("meridian-dev-{port}.token"))
}

/// Where `meridian dev --port PORT` leaves its CA certificate for the CLI on this machine.
pub fn well_known_ca_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("meridian-dev-{port}.ca.pem"))
}

/// Where `meridian dev --port PORT` lists its nodes' hosts, one per line, after a line
/// `pid PID` (the dev's process): the CLI uses the files above only for an endpoint on one of
/// them (another server on the same port of another loopback address, e.g. a test's, is not the
/// dev's), and only while that process lives (a dev killed with SIGKILL leaves its files, and a
/// later server may listen on the same address and port).
pub fn well_known_hosts_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("meridian-dev-{port}.hosts"))
}

/// The host of `address` (host:port, optionally with a scheme) and its port.
fn host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    Some((host, port.parse().ok()?))
}

/// The port of `endpoints`' first endpoint when it is the address of a node of the
/// `meridian dev` listening on that port on this machine.
fn local_port(endpoints: &[String]) -> Option<u16> {
    let (host, port) = host_port(endpoints.first()?)?;
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    if !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return None;
    }
    let hosts = std::fs::read_to_string(well_known_hosts_path(port)).ok()?;
    let pid = hosts.lines().find_map(|l| l.strip_prefix("pid "))?.trim();
    if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists() {
        return None;
    }
    hosts.lines().any(|h| h.trim() == host).then_some(port)
}

/// The token a `meridian dev` on this machine left for `endpoints` (a loopback endpoint first,
/// on the port the dev listens on), if any.
pub fn token_for(endpoints: &[String]) -> Option<String> {
    let text = std::fs::read_to_string(well_known_token_path(local_port(endpoints)?)).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// The CA certificate a `meridian dev` on this machine left for `endpoints`, if any.
pub fn ca_for(endpoints: &[String]) -> Option<PathBuf> {
    let path = well_known_ca_path(local_port(endpoints)?);
    path.is_file().then_some(path)
}

/// Writes `text` to `path`, readable by its owner only, replacing what was there.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    crate::token_cli::write_secret(path, text)
}

impl DevSecurity {
    /// The root key of `data_dir` (made there if absent) and a fresh root token; with `tls`,
    /// also the CA of `data_dir` (made there if absent) and a certificate for each of `nodes`
    /// (id, address).
    pub fn prepare(
        data_dir: &Path,
        port: u16,
        nodes: &[(u64, String)],
        tls: bool,
    ) -> anyhow::Result<DevSecurity> {
        std::fs::create_dir_all(data_dir).context("creating the data directory")?;
        let key_path = data_dir.join("root.key");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(text) => RootKey::parse(&text)
                .with_context(|| format!("the root key {}", key_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RootKey::generate();
                write_private(&key_path, &key.to_text())?;
                key
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", key_path.display())),
        };
        let token = meridian_auth::mint(
            &key,
            &Grant {
                prefixes: vec!["/".into()],
                ops: OpSet::all(),
                expires: SystemTime::now() + DEV_TOKEN_TTL,
            },
        )?;
        let token_file = data_dir.join("root.token");
        write_private(&token_file, &token)?;

        let tls_dir = data_dir.join("tls");
        let ca = if tls {
            Some(Self::certificates(&tls_dir, nodes)?)
        } else {
            None
        };

        let mut well_known = Vec::new();
        let mut hosts = format!("pid {}\n", std::process::id());
        hosts.extend(
            nodes
                .iter()
                .filter_map(|(_, address)| host_port(address))
                .map(|(host, _)| format!("{host}\n")),
        );
        match write_private(&well_known_hosts_path(port), &hosts) {
            Ok(()) => well_known.push(well_known_hosts_path(port)),
            Err(e) => eprintln!("meridian dev: cannot list its hosts for the CLI: {e:#}"),
        }
        match write_private(&well_known_token_path(port), &token) {
            Ok(()) => well_known.push(well_known_token_path(port)),
            Err(e) => eprintln!("meridian dev: cannot leave the token for the CLI: {e:#}"),
        }
        let ca_path = well_known_ca_path(port);
        match &ca {
            Some(ca) => match write_private(&ca_path, &ca.cert) {
                Ok(()) => well_known.push(ca_path),
                Err(e) => eprintln!("meridian dev: cannot leave the CA for the CLI: {e:#}"),
            },
            // A CA left by an earlier dev on this port would send the CLI over TLS.
            None => match std::fs::remove_file(&ca_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    eprintln!("meridian dev: cannot remove {}: {e}", ca_path.display())
                }
                _ => {}
            },
        }
        Ok(DevSecurity {
            public_key: key.public().to_text(),
            token,
            token_file,
            ca_file: ca.map(|_| tls_dir.join("ca.pem")),
            tls_dir,
            port,
            well_known,
        })
    }

    /// The CA of `tls_dir` (made there if absent) and a fresh certificate for each of `nodes`.
    fn certificates(tls_dir: &Path, nodes: &[(u64, String)]) -> anyhow::Result<gen::Pem> {
        std::fs::create_dir_all(tls_dir).context("creating the TLS directory")?;
        let ca_file = tls_dir.join("ca.pem");
        let ca_key = tls_dir.join("ca.key");
        let ca = match (
            std::fs::read_to_string(&ca_file),
            std::fs::read_to_string(&ca_key),
        ) {
            (Ok(cert), Ok(key)) => gen::Pem { cert, key },
            _ => {
                let ca = gen::ca("meridian dev CA").context("making the dev CA")?;
                write_private(&ca_key, &ca.key)?;
                write_private(&ca_file, &ca.cert)?;
                ca
            }
        };
        for (id, address) in nodes {
            let pem = gen::node(&ca, *id, &[gen::host_of(address)])
                .with_context(|| format!("making node {id}'s certificate"))?;
            write_private(&tls_dir.join(format!("node-{id}.pem")), &pem.cert)?;
            write_private(&tls_dir.join(format!("node-{id}.key")), &pem.key)?;
        }
        Ok(ca)
    }

    /// Makes `cfg` verify tokens against this root and, with TLS, serve and dial over mTLS
    /// with its node's certificate (without, the node runs in `insecure` mode: no TLS).
    pub fn apply(&self, cfg: &mut NodeConfig) {
        let id = cfg.node_id;
        cfg.security.root_public_key = Some(self.public_key.clone());
        match &self.ca_file {
            Some(ca) => {
                cfg.security.ca = Some(ca.clone());
                cfg.security.cert = Some(self.tls_dir.join(format!("node-{id}.pem")));
                cfg.security.key = Some(self.tls_dir.join(format!("node-{id}.key")));
            }
            None => cfg.security.mode = meridian_server::config::SecurityMode::Insecure,
        }
    }

    /// Client options carrying the root token, over TLS verified against the dev's CA when it
    /// has one.
    pub fn options(&self) -> anyhow::Result<meridian_sdk::Options> {
        let options = meridian_sdk::Options {
            token: Some(self.token.clone()),
            ..Default::default()
        };
        Ok(match &self.ca_file {
            Some(ca) => options.with_tls(ca, None)?,
            None => options,
        })
    }

    /// What `meridian dev` prints about it.
    pub fn describe(&self) -> String {
        let transport = match &self.ca_file {
            Some(ca) => format!("mTLS (CA {})", ca.display()),
            None => "no TLS (--no-tls)".to_string(),
        };
        let ca_flag = match &self.ca_file {
            Some(ca) => format!("--ca {} ", ca.display()),
            None => String::new(),
        };
        format!(
            "security on: {transport} and a token on every request. Root token (all \
             operations on /, {} days) in {}; the CLI on this machine uses it by itself, \
             elsewhere: {ca_flag}with export MERIDIAN_TOKEN=$(cat {})",
            DEV_TOKEN_TTL.as_secs() / 86_400,
            self.token_file.display(),
            self.token_file.display()
        )
    }
}

impl Drop for DevSecurity {
    fn drop(&mut self) {
        // Only our own: another dev on the same port may have replaced them since (the token
        // tells; the CA file goes with it).
        let ours = std::fs::read_to_string(well_known_token_path(self.port))
            .is_ok_and(|t| t == self.token);
        if ours {
            for p in &self.well_known {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_finds_the_token_of_a_local_dev_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A port no other test or dev uses.
        let port = 1;
        let nodes = [(1, "127.0.1.1:1".to_string())];
        let s = DevSecurity::prepare(dir.path(), port, &nodes, true).expect("prepare");
        let ep = |e: &str| vec![e.to_string()];
        assert_eq!(ca_for(&ep("127.0.1.1:1")), Some(well_known_ca_path(1)));
        assert_eq!(token_for(&ep("127.0.1.1:1")), Some(s.token.clone()));
        assert_eq!(token_for(&ep("https://127.0.1.1:1")), Some(s.token.clone()));
        // Another server on the same port of another address (a test's node) is not the dev.
        assert_eq!(token_for(&ep("127.0.44.9:1")), None);
        assert_eq!(ca_for(&ep("127.0.44.9:1")), None);
        assert_eq!(token_for(&ep("localhost:1")), None);
        assert_eq!(token_for(&ep("10.0.0.1:1")), None);
        assert_eq!(token_for(&ep("127.0.1.1:2")), None);
        // A second start reuses the key.
        let again = DevSecurity::prepare(dir.path(), port, &nodes, true).expect("prepare again");
        assert_eq!(again.public_key, s.public_key);
        let mut cfg = NodeConfig {
            node_id: 1,
            ..NodeConfig::default()
        };
        again.apply(&mut cfg);
        let files = cfg.security.tls().expect("tls").expect("all three");
        assert!(meridian_tls::NodeTls::load(files, 1).is_ok());
        drop(s);
        // The first one's drop left the second's token alone.
        assert_eq!(token_for(&ep("127.0.1.1:1")), Some(again.token.clone()));
        drop(again);
        assert_eq!(token_for(&ep("127.0.1.1:1")), None);
        assert_eq!(ca_for(&ep("127.0.1.1:1")), None);

        // Tokens without TLS: the same key, no CA for the CLI (a stale one is removed), nodes
        // in insecure mode with the root key.
        let s = DevSecurity::prepare(dir.path(), port, &nodes, true).expect("prepare");
        assert!(ca_for(&ep("127.0.1.1:1")).is_some());
        let plain = DevSecurity::prepare(dir.path(), port, &nodes, false).expect("no tls");
        assert_eq!(plain.public_key, s.public_key);
        assert_eq!(ca_for(&ep("127.0.1.1:1")), None, "a stale CA is removed");
        assert_eq!(token_for(&ep("127.0.1.1:1")), Some(plain.token.clone()));
        let mut cfg = NodeConfig {
            node_id: 1,
            ..NodeConfig::default()
        };
        plain.apply(&mut cfg);
        assert_eq!(cfg.security.tls().expect("tls"), None);
        assert_eq!(
            cfg.security.mode,
            meridian_server::config::SecurityMode::Insecure
        );
        assert!(cfg.security.required().is_ok());
        assert!(cfg.security.root_public_key.is_some());
        assert!(plain.options().expect("options").token.is_some());

        // Files left by a dev that no longer runs (killed with SIGKILL) are not the dev's,
        // whoever listens on that address and port now.
        std::fs::write(well_known_hosts_path(1), "pid 4194305\n127.0.1.1\n").expect("write");
        assert_eq!(token_for(&ep("127.0.1.1:1")), None);
        assert_eq!(ca_for(&ep("127.0.1.1:1")), None);
        std::fs::write(well_known_hosts_path(1), "127.0.1.1\n").expect("write");
        assert_eq!(
            token_for(&ep("127.0.1.1:1")),
            None,
            "no pid line: not a dev's"
        );
    }
}
