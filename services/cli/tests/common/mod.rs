//! Test harness: real `meridian` processes on loopback, each with its own address and data
//! directory; SIGKILL, restart, and a client that knows every endpoint.

#![allow(dead_code)]

pub mod http;

use meridian_sdk::{Client, Consistency, Options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// `meridian --output json ARGS` against `endpoint`: (success, stdout, stderr).
pub fn meridian_json(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN)
        .args(["--endpoint", endpoint, "--output", "json"])
        .args(args)
        .output()
        .expect("run meridian");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A free port on `ip`, found by binding port 0 (released before use; collisions are unlikely
/// because every test cluster uses its own loopback addresses).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    pub children: Vec<Option<Child>>,
    /// Extra environment of each node's process (index: id - 1).
    pub env: Vec<Vec<(String, String)>>,
    /// What this cluster's clients (`client`, `client_at`, `wait_leader`) start from.
    pub options: Options,
}

impl ProcCluster {
    /// Writes a config file per node and starts `n` server processes. `subnet` picks the
    /// loopback addresses 127.0.<subnet>.<id> so concurrent tests never share an address.
    pub fn start(n: u64, subnet: u8) -> ProcCluster {
        Self::start_with(n, subnet, "")
    }

    /// As [`ProcCluster::start`], with `extra` TOML appended to every node's config.
    pub fn start_with(n: u64, subnet: u8, extra: &str) -> ProcCluster {
        let addrs = Self::addresses(n, subnet);
        Self::start_custom(addrs, |_| extra.to_string(), |_| Vec::new())
    }

    /// Addresses 127.0.<subnet>.<id>:<a free port> for nodes 1..=n.
    pub fn addresses(n: u64, subnet: u8) -> Vec<String> {
        (1..=n)
            .map(|id| {
                let ip = format!("127.0.{subnet}.{id}");
                format!("{ip}:{}", free_port(&ip))
            })
            .collect()
    }

    /// One node per address (ids from 1), node `id` with `extra(id)` appended to its config
    /// and `env(id)` added to its environment.
    pub fn start_custom(
        addrs: Vec<String>,
        extra: impl Fn(u64) -> String,
        env: impl Fn(u64) -> Vec<(String, String)>,
    ) -> ProcCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[peers]]\nid = {}\naddress = \"{a}\"\n", i + 1))
            .collect();
        for (i, a) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let cfg = format!(
                "node_id = {id}\nlisten = \"{a}\"\ndata_dir = \"{}\"\nregion = \"test\"\n{peers}{}",
                dir.path().join(format!("node-{id}")).display(),
                extra(id)
            );
            std::fs::write(dir.path().join(format!("node-{id}.toml")), cfg).expect("write config");
        }
        let n = addrs.len() as u64;
        let mut c = ProcCluster {
            dir,
            addrs,
            children: Vec::new(),
            env: (1..=n).map(env).collect(),
            options: Options::default(),
        };
        for id in 1..=n {
            let child = c.spawn(id);
            c.children.push(Some(child));
        }
        c
    }

    fn spawn(&self, id: u64) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("log file");
        Command::new(BIN)
            .args(["server", "--config"])
            .arg(self.config_path(id))
            .env("MERIDIAN_LOG", "warn,openraft=warn")
            // These clusters test other things than security (tests/security.rs, mtls.rs and
            // revocation.rs test it): say so, as `meridian server` requires.
            .env("MERIDIAN_SECURITY__MODE", "insecure")
            .envs(self.env[(id - 1) as usize].iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn meridian server")
    }

    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.toml"))
    }

    pub fn addr(&self, id: u64) -> &str {
        &self.addrs[(id - 1) as usize]
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children[(id - 1) as usize].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (e.g. "-STOP", "-CONT") to node `id`.
    pub fn signal(&self, id: u64, sig: &str) {
        let child = self.children[(id - 1) as usize]
            .as_ref()
            .expect("node is running");
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} node {id}");
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        let c = self.spawn(id);
        self.children[(id - 1) as usize] = Some(c);
    }

    pub fn client(&self) -> Client {
        Client::new(self.addrs.clone(), self.options.clone()).expect("client")
    }

    pub fn client_at(&self, first: u64) -> Client {
        let mut eps = vec![self.addr(first).to_string()];
        eps.extend(
            self.addrs
                .iter()
                .filter(|a| *a != self.addr(first))
                .cloned(),
        );
        Client::new(eps, self.options.clone()).expect("client")
    }

    /// Waits until some node reports a leader that a linearizable read confirms; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let start = Instant::now();
        loop {
            for (i, a) in self.addrs.iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                let c = Client::new(
                    vec![a.clone()],
                    Options {
                        call_timeout: Duration::from_millis(500),
                        rpc_timeout: Duration::from_millis(500),
                        ..self.options.clone()
                    },
                )
                .expect("client");
                if let Ok(s) = c.status(false).await {
                    if let Some(g) = s.groups.first() {
                        if g.leader != 0
                            && self.children[(g.leader - 1) as usize].is_some()
                            && c.get_with("/probe", Consistency::Linearizable)
                                .await
                                .is_ok()
                        {
                            return g.leader;
                        }
                    }
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no leader within {timeout:?}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Keep the logs of a failed test for the post-mortem.
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join(format!("meridian-failed-{}", std::process::id()));
            let _ = std::fs::rename(self.dir.path(), &kept);
            eprintln!("cluster logs kept in {}", kept.display());
        }
    }
}

/// A single-voter node in this process on `ip`, its config adjusted by `tune`; returns the
/// data directory guard, the node and its address once it leads.
pub async fn one_node(
    ip: &str,
    tune: impl FnOnce(&mut meridian_server::NodeConfig),
) -> (tempfile::TempDir, meridian_server::Node, String) {
    one_node_with_token(ip, tune, None).await
}

/// As [`one_node`], probing with `token` (a node with security on refuses an untokened probe).
pub async fn one_node_with_token(
    ip: &str,
    tune: impl FnOnce(&mut meridian_server::NodeConfig),
    token: Option<String>,
) -> (tempfile::TempDir, meridian_server::Node, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("{ip}:{}", free_port(ip));
    let mut cfg = meridian_server::NodeConfig {
        node_id: 1,
        listen: addr.clone(),
        data_dir: dir.path().join("n1"),
        peers: vec![meridian_server::Peer {
            id: 1,
            address: addr.clone(),
        }],
        ..meridian_server::NodeConfig::default()
    };
    tune(&mut cfg);
    let node = meridian_server::Node::start(cfg).await.expect("start node");
    let probe = Client::new(
        vec![addr.clone()],
        Options {
            token,
            ..Options::default()
        },
    )
    .expect("client");
    probe
        .get_with("/probe", Consistency::Linearizable)
        .await
        .expect("the single voter leads");
    (dir, node, addr)
}

/// Puts `key = value` as a careful client must when the leader dies under it: an answer that
/// says the write *may* have been applied (the connection broke after it was sent) is settled
/// by a linearizable read — once a new leader has committed in its term, the fate of every
/// entry from the old term is decided — and the put is repeated only if the value is absent.
/// Returns the revision the value holds. Each test key must get a value of its own.
pub async fn put_settled(client: &Client, key: &str, value: &str, within: Duration) -> u64 {
    let until = Instant::now() + within;
    loop {
        let err = match client.put(key, value).await {
            Ok(r) => return r.header.expect("put header").revision,
            Err(e) => e,
        };
        assert!(
            Instant::now() < until,
            "put {key} not settled within {within:?}: {err}"
        );
        // Settle the doubt before deciding to write again.
        let read = loop {
            match client.get_with(key, Consistency::Linearizable).await {
                Ok(r) => break r,
                Err(e) => {
                    assert!(
                        Instant::now() < until,
                        "reading {key} to settle a doubtful put failed: {e} (put: {err})"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        if let Some(kv) = read.kv.filter(|kv| kv.value == value.as_bytes()) {
            return kv.mod_revision;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends the whole test process if it is still running after `limit`: a hung test fails with a
/// message instead of stalling CI. Call first thing in every test of a binary.
pub fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("test binary still running after {limit:?}: giving up (a test hung)");
        std::process::exit(101);
    });
}

/// `meridian dev` as a child process: the default 3-region topology under the WAN emulator
/// (or whatever `extra` args say). Killed on drop.
pub struct DevCluster {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub ready: serde_json::Value,
}

impl DevCluster {
    pub fn start(extra: &[&str]) -> DevCluster {
        Self::start_logging(extra, "warn,openraft=warn")
    }

    /// As [`DevCluster::start`], with `MERIDIAN_LOG` = `log` for the cluster and its nodes.
    pub fn start_logging(extra: &[&str], log_filter: &str) -> DevCluster {
        Self::start_env(extra, log_filter, &[])
    }

    /// As [`DevCluster::start_logging`], with extra environment for the cluster and its nodes.
    pub fn start_env(extra: &[&str], log_filter: &str, env: &[(&str, &str)]) -> DevCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready_path = dir.path().join("ready.json");
        let port = free_port("127.0.1.1");
        let log = std::fs::File::create(dir.path().join("dev.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["dev", "--port", &port.to_string(), "--http-port", "0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready_path)
            .args(extra)
            .env("MERIDIAN_LOG", log_filter)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn meridian dev");
        let mut dev = DevCluster {
            dir,
            child,
            ready: serde_json::Value::Null,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                dev.ready = serde_json::from_str(&text).expect("ready file is JSON");
                return dev;
            }
            if let Ok(Some(status)) = dev.child.try_wait() {
                panic!("meridian dev exited with {status}: {}", dev.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("meridian dev never wrote its ready file: {}", dev.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }

    /// The first endpoint of `region`.
    pub fn endpoint(&self, region: &str) -> String {
        self.ready["regions"][region]["endpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("no region {region} in {}", self.ready))
            .to_string()
    }

    /// A session with `region`'s router, with the given call timeout.
    pub fn client(&self, region: &str, call_timeout: Duration) -> Client {
        Client::new(
            vec![self.endpoint(region)],
            Options {
                call_timeout,
                rpc_timeout: call_timeout,
                ..self.options()
            },
        )
        .expect("client")
    }

    /// A raw gRPC channel to `region`'s first endpoint, over TLS when the dev runs it.
    pub fn channel(&self, region: &str) -> tonic::transport::Channel {
        let ep = self.endpoint(region);
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{ep}")).expect("endpoint");
        match self.ready["ca"].as_str() {
            Some(ca) => meridian_tls::ClientTls::load(Path::new(ca), None)
                .expect("the dev's CA")
                .dialer()
                .channel(endpoint, &ep),
            None => endpoint.connect_lazy(),
        }
    }

    /// A channel to `region`'s first router that presents node 1's certificate, as a router
    /// proxying a request would (security on); a plain channel with security off.
    pub fn channel_as_node(&self, region: &str) -> tonic::transport::Channel {
        let ep = self.endpoint(region);
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{ep}")).expect("endpoint");
        match self.ready["ca"].as_str() {
            Some(ca) => {
                let dir = Path::new(ca).parent().expect("the dev's TLS directory");
                let (cert, key) = (dir.join("node-1.pem"), dir.join("node-1.key"));
                meridian_tls::ClientTls::load(Path::new(ca), Some((&cert, &key)))
                    .expect("the dev's CA and node 1's certificate")
                    .dialer()
                    .channel(endpoint, &ep)
            }
            None => endpoint.connect_lazy(),
        }
    }

    /// Adds the dev's root token to a raw request, if it has one.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(t) = self.token() {
            req.metadata_mut().insert(
                meridian_proto::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("ascii token"),
            );
        }
    }

    /// The dev's root token (security is on unless it was started `--insecure`).
    pub fn token(&self) -> Option<String> {
        self.ready["token"].as_str().map(str::to_string)
    }

    /// Client options carrying [`DevCluster::token`], over TLS verified against the dev's CA
    /// (security is on unless it was started `--insecure`).
    pub fn options(&self) -> Options {
        let options = Options {
            token: self.token(),
            ..Options::default()
        };
        match self.ready["ca"].as_str() {
            Some(ca) => options
                .with_tls(std::path::Path::new(ca), None)
                .expect("the dev's CA"),
            None => options,
        }
    }

    /// Runs `meridian wan ARGS` against this cluster's emulator; panics unless it succeeds.
    pub fn wan(&self, args: &[&str]) -> String {
        let control = self.ready["wan_control"].as_str().expect("wan_control");
        let o = Command::new(BIN)
            .args(["wan", "--control", control])
            .args(args)
            .output()
            .expect("run meridian wan");
        assert!(o.status.success(), "meridian wan {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).to_string()
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- meridian dev log ---\n{}", self.log());
        }
    }
}

/// The node processes of the cluster: id → (pid, restart argv, address).
pub struct Nodes {
    pids: BTreeMap<u64, u32>,
    restart: BTreeMap<u64, Vec<String>>,
    address: BTreeMap<u64, String>,
    restarted: Vec<Child>,
    options: Options,
}

impl Nodes {
    pub fn of(dev: &DevCluster) -> Nodes {
        let mut n = Nodes {
            pids: BTreeMap::new(),
            restart: BTreeMap::new(),
            address: BTreeMap::new(),
            restarted: Vec::new(),
            options: dev.options(),
        };
        for (id, v) in dev.ready["nodes"]
            .as_object()
            .expect("nodes in the ready file")
        {
            let id: u64 = id.parse().expect("node id");
            n.pids.insert(id, v["pid"].as_u64().expect("pid") as u32);
            n.address
                .insert(id, v["address"].as_str().expect("address").to_string());
            n.restart.insert(
                id,
                v["restart"]
                    .as_array()
                    .expect("restart")
                    .iter()
                    .map(|a| a.as_str().expect("arg").to_string())
                    .collect(),
            );
        }
        n
    }

    pub fn signal(&self, id: u64, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pids[&id].to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} node {id}");
    }

    pub fn restart(&mut self, id: u64, dir: &std::path::Path) {
        let argv = &self.restart[&id];
        let log = std::fs::File::create(dir.join(format!("restart-{id}.log"))).expect("log");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart node");
        self.pids.insert(id, child.id());
        self.restarted.push(child);
    }

    /// The node that leads `group` and its term (highest term among those that say so).
    pub async fn leader(&self, group: u64) -> Option<(u64, u64)> {
        let nodes = self.address.iter().map(|(id, a)| (*id, a.as_str()));
        meridian_harness::dev::leader_of(nodes, &self.options, group).await
    }

    /// Waits for a leader of `group` elected in a term after `after`.
    pub async fn new_leader(&self, group: u64, after: u64, within: Duration) -> (u64, u64) {
        let start = Instant::now();
        loop {
            if let Some((l, term)) = self.leader(group).await {
                if term > after {
                    return (l, term);
                }
            }
            assert!(
                start.elapsed() < within,
                "no new leader of group {group} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// libfaketime's library (the `faketime` package; scripts/test installs it), checked present.
pub fn libfaketime() -> &'static str {
    const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (scripts/test does)"
    );
    LIBFAKETIME
}

/// The history entry of a get.
pub fn read_op(
    session: usize,
    group: u64,
    key: String,
    r: &meridian_sdk::pb::GetResponse,
) -> meridian_checker::Op {
    meridian_checker::Op {
        session,
        group,
        kind: meridian_checker::OpKind::Read {
            key,
            value: r
                .kv
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).to_string()),
            mod_revision: r.kv.as_ref().map(|kv| kv.mod_revision),
        },
    }
}

/// The history entry of an acknowledged put.
pub fn write_op(
    session: usize,
    group: u64,
    key: String,
    value: String,
    r: &meridian_sdk::pb::PutResponse,
) -> meridian_checker::Op {
    meridian_checker::Op {
        session,
        group,
        kind: meridian_checker::OpKind::Write {
            key,
            value,
            revision: r.header.as_ref().map(|h| h.revision),
        },
    }
}

/// One round of the x/y test: client A in us-east writes x (owned by us-east) then reads y;
/// client B in eu-west writes y (owned by eu-west) then reads x, at the same moment. Returns
/// (A saw y, B saw x), and records both sessions' operations.
pub async fn xy_round(
    a: &Client,
    b: &Client,
    i: usize,
    history: &std::sync::Arc<std::sync::Mutex<meridian_checker::History>>,
) -> (bool, bool) {
    let x = format!("/us-east/xy/x{i}");
    let y = format!("/eu-west/xy/y{i}");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let side =
        |c: Client, session: usize, mine: String, theirs: String, mine_g: u64, theirs_g: u64| {
            let barrier = barrier.clone();
            let history = history.clone();
            async move {
                barrier.wait().await;
                let value = format!("s{session}-{i}");
                let w = c.put(&mine, value.clone()).await.expect("put");
                let r = c
                    .get_with(&theirs, Consistency::Sequential)
                    .await
                    .expect("get");
                let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                h.push(write_op(session, mine_g, mine, value, &w));
                h.push(read_op(session, theirs_g, theirs, &r));
                r.kv.is_some()
            }
        };
    tokio::join!(
        side(a.clone(), 0, x.clone(), y.clone(), 1, 2),
        side(b.clone(), 1, y, x, 2, 1)
    )
}
