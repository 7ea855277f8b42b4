//! From one topology file to a deployment (docs/deploy.md). [`render`] is the one entry: a
//! topology file's text in, the files an operator installs out — pure (same input, same
//! bytes, on every platform), no IO.
//!
//! What it renders, relative to the output directory:
//! - `topology.toml`: the topology file, byte for byte (every node joins the same one);
//! - `node-ID/node.toml`: what `meridian server --config` takes for node ID — its id, region,
//!   listen and advertise addresses, data directory, its region group's voters as `peers`, the
//!   topology it joins, its HTTP listener, `[security]` and `[telemetry]`;
//! - `node-ID/meridian-node-ID.service`: a hardened systemd unit running that node;
//! - `terraform.tfvars.json`: regions, their nodes, roles and rendered files, for `terraform/`;
//! - with the WAN emulator (a rehearsal on one machine): `[dial]` tables through relays and
//!   `wan-proxy.args`, the arguments of the `meridian wan-proxy` that runs those relays.

use meridian_topology::{Role, Topology, TopologyError};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

/// Where rendered files are installed on a node's machine, by default.
pub const CONFIG_ROOT: &str = "/etc/meridian";
/// Where nodes keep their data, by default (one directory per node under it).
pub const DATA_ROOT: &str = "/var/lib/meridian";
/// Where the `meridian` binary is installed, by default.
pub const BINARY: &str = "/usr/local/bin/meridian";
/// The system user nodes run as, by default.
pub const USER: &str = "meridian";

/// How to render.
#[derive(Clone, Debug)]
pub struct Options {
    /// Absolute directory the output is installed to on a machine (`topology.toml` and the
    /// `node-ID/` directories under it).
    pub config_root: String,
    /// Absolute directory under which each node keeps its data (`node-ID/`).
    pub data_root: String,
    /// Absolute path of the `meridian` binary.
    pub binary: String,
    /// The system user a node runs as.
    pub user: String,
    /// Listen on every interface (0.0.0.0 or [::]) at the node's port instead of its address.
    pub listen_any: bool,
    pub security: Security,
    /// Put the WAN emulator between regions (a rehearsal on one machine, docs/deploy.md).
    pub wan_emulator: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config_root: CONFIG_ROOT.into(),
            data_root: DATA_ROOT.into(),
            binary: BINARY.into(),
            user: USER.into(),
            listen_any: false,
            security: Security::Insecure,
            wan_emulator: false,
        }
    }
}

/// The `[security]` a node is rendered with.
#[derive(Clone, Debug)]
pub enum Security {
    /// Tokens checked against this root public key and mTLS with the files under
    /// `CONFIG_ROOT/tls/` (`ca.pem`, `node-ID.pem`, `node-ID.key`), which the operator provides.
    Secure { root_public_key: String },
    /// `security.mode = "insecure"`: no tokens, no TLS (a trusted network or a test).
    Insecure,
}

/// One rendered file: its path relative to the output directory ('/'-separated) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The topology is refused, exactly as `meridian topology check` refuses it.
    #[error("{0}")]
    Topology(#[from] TopologyError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> RenderError {
    RenderError::Invalid(message.into())
}

/// The relay through which nodes of region number `viewer` (its position in the topology)
/// reach node `id` under the WAN emulator: 127.(200+viewer).(id/256).(id%256), on `port`.
/// `meridian dev` uses the same addresses.
pub fn relay_address(viewer: usize, id: u64, port: u16) -> String {
    format!(
        "127.{}.{}.{}:{port}",
        200 + viewer,
        (id >> 8) & 255,
        id & 255
    )
}

/// `host:port` split, the host without IPv6 brackets.
fn host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// A node's host and port, or why its address is not host:port.
fn node_address(n: &meridian_topology::NodeSpec) -> Result<(&str, u16), RenderError> {
    host_port(&n.address).ok_or_else(|| {
        invalid(format!(
            "node {}: address {:?} is not host:port",
            n.id, n.address
        ))
    })
}

/// `host` and `port` as an address (IPv6 in brackets).
fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TOML string literal.
fn lit(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn check_options(o: &Options) -> Result<(), RenderError> {
    for (flag, path) in [
        ("--config-root", &o.config_root),
        ("--data-root", &o.data_root),
        ("--binary", &o.binary),
    ] {
        if !path.starts_with('/') {
            return Err(invalid(format!("{flag} {path:?} is not an absolute path")));
        }
        // systemd splits ExecStart at spaces and reads % and quotes itself.
        if let Some(c) = path
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '%' | '\\'))
        {
            return Err(invalid(format!(
                "{flag} {path:?} contains {c:?}: a path a systemd unit can name as it is \
                 (no spaces, quotes, backslashes or %)"
            )));
        }
        if path.len() > 1 && path.ends_with('/') {
            return Err(invalid(format!(
                "{flag} {path:?} ends with '/': leave it out"
            )));
        }
    }
    let user_ok = o.user.len() <= 32
        && o.user.chars().enumerate().all(|(i, c)| {
            c.is_ascii_lowercase() || c == '_' || (i > 0 && (c.is_ascii_digit() || c == '-'))
        })
        && !o.user.is_empty();
    if !user_ok {
        return Err(invalid(format!(
            "--user {:?} is not a system user name (lowercase letters, digits, '_' and '-', \
             starting with a letter or '_', at most 32)",
            o.user
        )));
    }
    if let Security::Secure { root_public_key } = &o.security {
        meridian_auth::RootPublicKey::parse(root_public_key)
            .map_err(|e| invalid(format!("--root-public-key: {e}")))?;
    }
    Ok(())
}

/// Renders every file of a deployment of the topology in `topology_text` (named
/// `source_name` in errors). Refuses a topology `meridian topology check` refuses, and options
/// or addresses it cannot render, saying what is wrong.
pub fn render(
    topology_text: &str,
    source_name: &str,
    o: &Options,
) -> Result<Vec<File>, RenderError> {
    let t = Topology::parse(topology_text, source_name)?;
    check_options(o)?;
    // Names go into units (where systemd reads % itself) and TOML comments (one line).
    for name in std::iter::once(&t.name).chain(t.regions.iter().map(|r| &r.name)) {
        if let Some(c) = name.chars().find(|c| c.is_control() || *c == '%') {
            return Err(invalid(format!(
                "the name {name:?} contains {c:?}, which a systemd unit cannot carry: rename it \
                 in the topology"
            )));
        }
    }
    let mut files = vec![File {
        path: "topology.toml".into(),
        text: topology_text.to_string(),
    }];
    let dial = if o.wan_emulator {
        Some(relays(&t)?)
    } else {
        None
    };
    let mut regions = serde_json::Map::new();
    for region in &t.regions {
        let mut nodes = serde_json::Map::new();
        let mut ips: Vec<Ipv4Addr> = Vec::new();
        let mut all_v4 = true;
        for n in t.nodes.iter().filter(|n| n.region == region.name) {
            let (host, port) = node_address(n)?;
            let node_toml = node_toml(&t, n, source_name, o, dial.as_ref())?;
            let unit = unit(&t, n, o);
            let unit_name = format!("meridian-node-{}.service", n.id);
            files.push(File {
                path: format!("node-{}/node.toml", n.id),
                text: node_toml.clone(),
            });
            files.push(File {
                path: format!("node-{}/{unit_name}", n.id),
                text: unit.clone(),
            });
            let ip = host.parse::<Ipv4Addr>().ok();
            match ip {
                Some(ip) => ips.push(ip),
                None => all_v4 = false,
            }
            let roles: BTreeMap<String, &str> = t
                .groups_of_node(n.id)
                .into_iter()
                .filter_map(|(g, role)| {
                    let name = t.group(g)?.name.clone();
                    Some((
                        name,
                        match role {
                            Role::Voter => "voter",
                            Role::Learner => "learner",
                        },
                    ))
                })
                .collect();
            nodes.insert(
                n.id.to_string(),
                json!({
                    "address": n.address,
                    "private_ip": ip.map(|ip| ip.to_string()),
                    "port": port,
                    "http_port": http_port(n.id, port)?,
                    "roles": roles,
                    "config_path": format!("{}/node-{}/node.toml", o.config_root, n.id),
                    "node_toml": node_toml,
                    "unit_name": unit_name,
                    "unit": unit,
                }),
            );
        }
        regions.insert(
            region.name.clone(),
            json!({
                "cloud_region": region.tags.get("cloud_region"),
                "subnet_cidr": if all_v4 { common_24(&ips) } else { None },
                "tags": region.tags,
                "nodes": nodes,
            }),
        );
    }
    let tfvars = json!({
        "cluster_name": t.name,
        "config_root": o.config_root,
        "data_root": o.data_root,
        "meridian_binary": o.binary,
        "user": o.user,
        "topology_toml": topology_text,
        "regions": regions,
    });
    let mut text = serde_json::to_string_pretty(&tfvars)
        .map_err(|e| invalid(format!("encoding terraform.tfvars.json: {e}")))?;
    text.push('\n');
    files.push(File {
        path: "terraform.tfvars.json".into(),
        text,
    });
    if let Some(d) = &dial {
        files.push(File {
            path: "wan-proxy.args".into(),
            text: wan_proxy_args(d, o),
        });
    }
    Ok(files)
}

/// The /24 holding every one of `ips` (a region's subnet), if they share one.
fn common_24(ips: &[Ipv4Addr]) -> Option<String> {
    let first = ips.first()?.octets();
    ips.iter()
        .all(|ip| ip.octets()[..3] == first[..3])
        .then(|| format!("{}.{}.{}.0/24", first[0], first[1], first[2]))
}

/// A node's HTTP port: its gRPC port + 1.
fn http_port(id: u64, port: u16) -> Result<u16, RenderError> {
    port.checked_add(1).ok_or_else(|| {
        invalid(format!(
            "node {id} listens on port {port}, which leaves no port for its HTTP listener (the \
             next one): give it a lower port in the topology"
        ))
    })
}

/// Under the WAN emulator: for each region, how its nodes dial every node of another region
/// (advertised address -> relay), and the relays (viewer region, target node).
struct Relays {
    dial: BTreeMap<String, BTreeMap<String, String>>,
    /// (from region, to region, listen, target), in the topology's order.
    relays: Vec<(String, String, String, String)>,
}

fn relays(t: &Topology) -> Result<Relays, RenderError> {
    let mut out = Relays {
        dial: BTreeMap::new(),
        relays: Vec::new(),
    };
    for (viewer, region) in t.regions.iter().enumerate() {
        if viewer > 55 {
            return Err(invalid(
                "the WAN emulator's relay addresses (127.200-255.x.y) fit at most 56 regions",
            ));
        }
        for n in t.nodes.iter().filter(|n| n.region != region.name) {
            let (host, port) = node_address(n)?;
            if !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
                return Err(invalid(format!(
                    "--wan-emulator rehearses a topology on one machine, but node {}'s address \
                     {} is not a loopback address",
                    n.id, n.address
                )));
            }
            let listen = relay_address(viewer, n.id, port);
            out.dial
                .entry(region.name.clone())
                .or_default()
                .insert(n.address.clone(), listen.clone());
            out.relays.push((
                region.name.clone(),
                n.region.clone(),
                listen,
                n.address.clone(),
            ));
        }
    }
    Ok(out)
}

/// `meridian wan-proxy`'s arguments, one per line: the round trips from the topology and
/// one relay per (viewing region, node of another region).
fn wan_proxy_args(r: &Relays, o: &Options) -> String {
    let mut s = format!("--topology\n{}/topology.toml\n", o.config_root);
    for (from, to, listen, target) in &r.relays {
        let _ = writeln!(s, "--relay\n{from},{to},{listen},{target}");
    }
    s
}

fn node_toml(
    t: &Topology,
    n: &meridian_topology::NodeSpec,
    source_name: &str,
    o: &Options,
    relays: Option<&Relays>,
) -> Result<String, RenderError> {
    let id = n.id;
    let (host, port) = node_address(n)?;
    let any = if host.contains(':') { "::" } else { "0.0.0.0" };
    let listen_host = if o.listen_any { any } else { host };
    let http = http_port(id, port)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Node {id} of {:?} in region {}, rendered by `meridian topology render` from {} — \
         edit the topology and render again rather than this file.\n\
         # Run: {} server --config {}/node-{id}/node.toml",
        t.name,
        n.region,
        file_name(source_name),
        o.binary,
        o.config_root
    );
    let _ = writeln!(s, "node_id = {id}");
    let _ = writeln!(s, "region = {}", lit(&n.region));
    let _ = writeln!(s, "cluster_name = {}", lit(&t.name));
    let _ = writeln!(s, "listen = {}", lit(&join(listen_host, port)));
    let _ = writeln!(s, "advertise = {}", lit(&n.address));
    let _ = writeln!(
        s,
        "data_dir = {}",
        lit(&format!("{}/node-{id}", o.data_root))
    );
    let _ = writeln!(
        s,
        "topology = {}",
        lit(&format!("{}/topology.toml", o.config_root))
    );
    // The voters of the node's own region's group, when it is one of them (the topology,
    // which the node follows, names every group's members; these say who bootstraps with it).
    let home = t
        .groups
        .iter()
        .find(|g| g.home.as_deref() == Some(n.region.as_str()) && g.voters.contains(&id));
    match home {
        Some(g) => {
            let _ = writeln!(s, "# The initial voters of group {:?}.", g.name);
            s.push_str("peers = [\n");
            for v in t.voters(g.id) {
                let _ = writeln!(s, "    {{ id = {}, address = {} }},", v.id, lit(&v.address));
            }
            s.push_str("]\n");
        }
        None => s.push_str("# No peers: the node votes in no group of its region.\npeers = []\n"),
    }
    if let Some(r) = relays {
        s.push_str(
            "\n# The WAN emulator: nodes of other regions are dialed through its relays \
             (`meridian wan-proxy $(cat wan-proxy.args)`).\n[dial]\n",
        );
        for (advertised, relay) in r.dial.get(&n.region).into_iter().flatten() {
            let _ = writeln!(s, "{} = {}", lit(advertised), lit(relay));
        }
    }
    let _ = writeln!(
        s,
        "\n# Prometheus /metrics, /healthz, /readyz, the status page and the HTTP/JSON gateway \
         (plain HTTP: reachable by operators only).\n[http]\nlisten = {}",
        lit(&join(listen_host, http))
    );
    s.push_str("\n[security]\n");
    match &o.security {
        Security::Secure { root_public_key } => {
            let tls = format!("{}/tls", o.config_root);
            let _ = writeln!(
                s,
                "# Tokens are verified with the cluster's root public key; mTLS with the files \
                 below, which the operator installs (docs/deploy.md).\n\
                 root_public_key = {}\nca = {}\ncert = {}\nkey = {}",
                lit(root_public_key.trim()),
                lit(&format!("{tls}/ca.pem")),
                lit(&format!("{tls}/node-{id}.pem")),
                lit(&format!("{tls}/node-{id}.key")),
            );
        }
        Security::Insecure => s.push_str(
            "# Rendered with --insecure: no token checks, no TLS. Anyone who reaches the port \
             is served.\nmode = \"insecure\"\n",
        ),
    }
    s.push_str(
        "\n[telemetry]\n\
         # Traces over OTLP/gRPC (docs/operations.md), off while unset:\n\
         # otlp_endpoint = \"http://127.0.0.1:4317\"\n\
         sample_ratio = 0.01\n",
    );
    Ok(s)
}

/// The last component of `path` (the rendered files name their source without the directory
/// it was rendered from, so the bytes do not depend on where that was).
fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

fn unit(t: &Topology, n: &meridian_topology::NodeSpec, o: &Options) -> String {
    let (id, region) = (n.id, n.region.as_str());
    let data = format!("{}/node-{id}", o.data_root);
    // A secure node reloads its certificates on SIGHUP (docs/security.md); an insecure one
    // has nothing to reload.
    let reload = match o.security {
        Security::Secure { .. } => "ExecReload=/bin/kill -HUP $MAINPID\n",
        Security::Insecure => "",
    };
    format!(
        "# Rendered by `meridian topology render`: node {id} of {name:?} in {region}.\n\
         [Unit]\n\
         Description=Meridian node {id} ({region})\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         RequiresMountsFor={data}\n\
         \n\
         [Service]\n\
         Type=exec\n\
         User={user}\n\
         Group={user}\n\
         # The data directory, made by root before the sandbox is set up (ProtectSystem=strict\n\
         # keeps the node itself from making it).\n\
         ExecStartPre=+/usr/bin/install -d -o {user} -g {user} -m 0700 {data}\n\
         ExecStart={bin} server --config {root}/node-{id}/node.toml\n\
         {reload}\
         Restart=on-failure\n\
         RestartSec=2s\n\
         TimeoutStopSec=30s\n\
         KillSignal=SIGTERM\n\
         LimitNOFILE=1048576\n\
         Environment=MERIDIAN_LOG=info\n\
         # Hardening: the node writes only its data directory.\n\
         ReadWritePaths={data}\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         # Nothing in the node needs the cloud's metadata server (which may hold secrets).\n\
         IPAddressDeny=169.254.169.254\n\
         CapabilityBoundingSet=\n\
         UMask=0077\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        name = t.name,
        user = o.user,
        bin = o.binary,
        root = o.config_root,
    )
}

#[cfg(test)]
mod tests;
