//! etcd 3.4 and ZooKeeper 3.8 across emulated regions, on a scenario of `meridian sim run`:
//! the same topology round trips (Meridian's WAN emulator relays every member-to-member
//! connection between regions), the same per-client operation stream (`meridian_sim::Workload`),
//! the same per-region report. Deployments:
//!
//! - `etcd-a`: one etcd member per region, one cluster ("one ensemble across datacenters");
//!   clients use their region's member; reads are etcd's default (linearizable).
//! - `zk-a`: one ZooKeeper voter per region; clients use their region's server (reads local).
//! - `zk-b`: three voters in the first region and one observer in every other ("observers").
//!
//! Members find each other by host name; each member process runs in its own mount namespace
//! whose `/etc/hosts` maps a peer in another region to the relay that delays traffic from this
//! member's region to that peer's region (`unshare`, so this must run as root).

#[path = "../procs.rs"]
mod procs;
use anyhow::{bail, Context};
use clap::Parser;
use meridian_sim::{parse_scenario, Mix, RegionResult, Scenario, Workload};
use meridian_topology::Topology;
use meridian_wan::{LinkSpec, Wan};
use procs::Procs;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// A `meridian sim run` scenario (its mixes, duration, clients, keys, value size).
    #[arg(long, default_value = "simulations/scenarios/default.toml")]
    scenario: PathBuf,
    /// Which deployments to run.
    #[arg(long, default_value = "etcd-a,zk-a,zk-b", value_delimiter = ',')]
    systems: Vec<String>,
    /// Write the results as JSON (same shape as `meridian sim run --json`).
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    #[arg(long, default_value = "/usr/share/java/zookeeper.jar")]
    zookeeper_jar: PathBuf,
    /// `meridian sim run --json` output of the same scenario: merge it with this run into one
    /// comparison (markdown table on stdout, and `--svg`).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// `meridian sim run --deterministic --json` output: its checker verdicts join the table.
    #[arg(long)]
    simulated: Option<PathBuf>,
    /// Write the merged comparison chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Only merge: read this JSON of an earlier run instead of running the peers.
    #[arg(long)]
    peers_json: Option<PathBuf>,
}

fn read_json(p: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Median over regions of one latency class's p50 (ms) in a run.
fn local_p50(run: &serde_json::Value, kind: &str) -> f64 {
    let mut v: Vec<f64> = run["regions"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|r| r["latency"][kind]["p50_ms"].as_f64())
                .filter(|x| *x > 0.0)
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The merged table: per mix, ops/s of every deployment, the ratios the issue targets, and
/// the simulated checker verdicts.
fn merge(
    meridian: &serde_json::Value,
    peers: &serde_json::Value,
    simulated: Option<&serde_json::Value>,
) -> (String, serde_json::Value) {
    let mut runs: Vec<serde_json::Value> = meridian["runs"].as_array().cloned().unwrap_or_default();
    runs.extend(peers["runs"].as_array().cloned().unwrap_or_default());
    let key =
        |r: &serde_json::Value| format!("{}|{}|{}", r["read_ratio"], r["locality"], r["burst"]);
    let mut mixes: Vec<String> = Vec::new();
    let mut by: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    for r in &runs {
        let k = key(r);
        if !mixes.contains(&k) {
            mixes.push(k.clone());
        }
        by.insert(
            (k, r["mode"].as_str().unwrap_or("?").to_string()),
            r.clone(),
        );
    }
    let sim: BTreeMap<(String, String), serde_json::Value> = simulated
        .and_then(|s| s["runs"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|r| ((key(&r), r["mode"].as_str().unwrap_or("?").to_string()), r))
        .collect();
    let cols = ["a", "b", "c", "d", "e", "etcd-a", "zk-a", "zk-b"];
    let mut md = String::from(
        "| read | local | burst | a | b | c | d | e | etcd-a | zk-a | zk-b | d/a | d/etcd-a | d/zk-a | e/d | e/zk-b | e/c | local read p50 c → d (ms) | local write p50 c → d (ms) | simulated c / d / e |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in &mixes {
        let parts: Vec<&str> = m.split('|').collect();
        let ops = |c: &str| {
            by.get(&(m.clone(), c.to_string()))
                .and_then(|r| r["ops_per_sec"].as_f64())
        };
        let cell = |c: &str| ops(c).map_or("–".to_string(), |v| format!("{v:.0}"));
        let ratio_of = |num: &str, den: &str| match (ops(num), ops(den)) {
            (Some(n), Some(x)) if x > 0.0 => format!("{:.1}×", n / x),
            _ => "–".into(),
        };
        let ratio = |a: &str| ratio_of("d", a);
        let lat = |kind: &str| {
            let c = by.get(&(m.clone(), "c".into())).map(|r| local_p50(r, kind));
            let d = by.get(&(m.clone(), "d".into())).map(|r| local_p50(r, kind));
            match (c, d) {
                (Some(c), Some(d)) => format!("{c:.1} → {d:.1}"),
                _ => "–".into(),
            }
        };
        let verdict = |mode: &str| {
            sim.get(&(m.clone(), mode.to_string())).map_or("–", |r| {
                if r["checks"]["sequentially_consistent"].as_bool() == Some(true) {
                    "SC"
                } else {
                    "**not SC**"
                }
            })
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
            parts[0], parts[1], parts[2],
            cell("a"), cell("b"), cell("c"), cell("d"), cell("e"), cell("etcd-a"), cell("zk-a"), cell("zk-b"),
            ratio("a"), ratio("etcd-a"), ratio("zk-a"),
            ratio_of("e", "d"), ratio_of("e", "zk-b"), ratio_of("e", "c"),
            lat("local read"), lat("local write"), verdict("c"), verdict("d"), verdict("e")
        ));
    }
    let _ = cols;
    let merged = json!({"scenario": meridian["scenario"], "duration_s": meridian["duration_s"],
                        "clients_per_region": meridian["clients_per_region"], "runs": runs});
    (md, merged)
}

/// One member of a deployment: host name, region, real address (loopback IP), role.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    region: usize,
    ip: String,
    observer: bool,
}

/// The loopback IP from which members of region `from` reach `member` through a relay.
fn relay_ip(from: usize, member: &Member) -> String {
    let mut parts = member.ip.split('.').skip(2);
    let (c, d) = (parts.next().unwrap_or("0"), parts.next().unwrap_or("1"));
    format!("127.{}.{c}.{d}", 100 + from)
}

/// Starts a relay for every (region, member of another region, port).
async fn relays(
    wan: &Arc<Wan>,
    regions: &[String],
    members: &[Member],
    ports: &[u16],
) -> anyhow::Result<Vec<meridian_wan::Relay>> {
    let mut out = Vec::new();
    for (s, from) in regions.iter().enumerate() {
        for m in members.iter().filter(|m| m.region != s) {
            for &p in ports {
                let listen: SocketAddr = format!("{}:{p}", relay_ip(s, m)).parse()?;
                let target: SocketAddr = format!("{}:{p}", m.ip).parse()?;
                out.push(
                    wan.relay(listen, from, &regions[m.region], target)
                        .await
                        .with_context(|| format!("relay {listen} -> {target}"))?,
                );
            }
        }
    }
    Ok(out)
}

/// The /etc/hosts a member of region `s` sees.
fn hosts_file(dir: &Path, s: usize, members: &[Member]) -> anyhow::Result<PathBuf> {
    let mut text = String::from("127.0.0.1 localhost\n");
    for m in members {
        let ip = if m.region == s {
            m.ip.clone()
        } else {
            relay_ip(s, m)
        };
        text.push_str(&format!("{ip} {}\n", m.name));
    }
    let path = dir.join(format!("hosts-{s}"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs `argv` in a private mount namespace with `hosts` bind-mounted on /etc/hosts.
fn spawn_in_ns(hosts: &Path, argv: &[String], log: &Path) -> anyhow::Result<Child> {
    let mut script = format!("mount --bind {} /etc/hosts && exec", hosts.display());
    for a in argv {
        script.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
    }
    let log = std::fs::File::create(log)?;
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("unshare (run as root)")
}

fn start_etcd(
    args: &Args,
    dir: &Path,
    regions: &[String],
    members: &[Member],
    heartbeat_ms: u64,
) -> anyhow::Result<Procs> {
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://{}:2380", m.name, m.name))
        .collect();
    let mut procs = Procs(Vec::new());
    for m in members {
        let hosts = hosts_file(dir, m.region, members)?;
        let argv: Vec<String> = [
            args.etcd_bin.display().to_string(),
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            dir.join(&m.name).display().to_string(),
            "--listen-client-urls".into(),
            format!("http://{}:2379", m.ip),
            "--advertise-client-urls".into(),
            format!("http://{}:2379", m.ip),
            "--listen-peer-urls".into(),
            format!("http://{}:2380", m.ip),
            "--initial-advertise-peer-urls".into(),
            format!("http://{}:2380", m.name),
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            "geo".into(),
            "--heartbeat-interval".into(),
            heartbeat_ms.to_string(),
            "--election-timeout".into(),
            (heartbeat_ms * 10).to_string(),
            "--log-level".into(),
            "warn".into(),
        ]
        .into();
        procs.0.push(spawn_in_ns(
            &hosts,
            &argv,
            &dir.join(format!("{}.log", m.name)),
        )?);
    }
    let _ = regions;
    Ok(procs)
}

fn start_zookeeper(args: &Args, dir: &Path, members: &[Member]) -> anyhow::Result<Procs> {
    let mut procs = Procs(Vec::new());
    for (i, m) in members.iter().enumerate() {
        let data = dir.join(&m.name);
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("myid"), format!("{}\n", i + 1))?;
        let mut cfg = format!(
            "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort=2181\n\
             clientPortAddress={}\nadmin.enableServer=false\nmaxClientCnxns=0\n\
             4lw.commands.whitelist=*\n",
            data.display(),
            m.ip
        );
        if m.observer {
            cfg.push_str("peerType=observer\n");
        }
        for (j, o) in members.iter().enumerate() {
            let role = if o.observer { ":observer" } else { "" };
            cfg.push_str(&format!("server.{}={}:2888:3888{role}\n", j + 1, o.name));
        }
        let cfg_path = dir.join(format!("{}.cfg", m.name));
        std::fs::write(&cfg_path, cfg)?;
        let hosts = hosts_file(dir, m.region, members)?;
        let argv: Vec<String> = vec![
            "java".into(),
            "-Xmx1g".into(),
            "-Dzookeeper.root.logger=WARN,CONSOLE".into(),
            "-cp".into(),
            format!(
                "/etc/zookeeper/conf_example:{}",
                args.zookeeper_jar.display()
            ),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
            cfg_path.display().to_string(),
        ];
        procs.0.push(spawn_in_ns(
            &hosts,
            &argv,
            &dir.join(format!("{}.log", m.name)),
        )?);
    }
    Ok(procs)
}

/// One system's client of one region.
#[derive(Clone)]
enum Conn {
    Etcd(Box<etcd_client::Client>),
    Zk(zookeeper_client::Client),
}

impl Conn {
    async fn op(&mut self, key: &str, read: bool, value: &[u8]) -> bool {
        match self {
            Conn::Etcd(c) => {
                if read {
                    c.get(key, None).await.is_ok()
                } else {
                    c.put(key, value.to_vec(), None).await.is_ok()
                }
            }
            Conn::Zk(c) => {
                if read {
                    c.get_data(key).await.is_ok()
                } else {
                    c.set_data(key, value, None).await.is_ok()
                }
            }
        }
    }
}

async fn connect(system: &str, ip: &str) -> anyhow::Result<Conn> {
    if system.starts_with("etcd") {
        let c = etcd_client::Client::connect(
            [format!("http://{ip}:2379")],
            Some(
                etcd_client::ConnectOptions::new()
                    .with_timeout(Duration::from_secs(10))
                    .with_connect_timeout(Duration::from_secs(2)),
            ),
        )
        .await?;
        Ok(Conn::Etcd(Box::new(c)))
    } else {
        let c = zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(&format!("{ip}:2181"))
            .await?;
        Ok(Conn::Zk(c))
    }
}

/// Waits until a write through every member succeeds (the cluster has a leader and every
/// member is connected), then creates the keys (ZooKeeper needs its znodes to exist).
async fn ready(
    system: &str,
    members: &[Member],
    regions: &[String],
    keys: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for m in members {
        loop {
            let ok = match connect(system, &m.ip).await {
                Ok(Conn::Etcd(mut c)) => c.put("/ready", m.name.clone(), None).await.is_ok(),
                Ok(Conn::Zk(c)) => {
                    let opts = zookeeper_client::CreateMode::Persistent
                        .with_acls(zookeeper_client::Acls::anyone_all());
                    match c.create("/ready", b"", &opts).await {
                        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {
                            c.set_data("/ready", m.name.as_bytes(), None).await.is_ok()
                        }
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{system}: member {} not ready within 120 s (see its log)",
                    m.name
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if system.starts_with("zk") {
        let Conn::Zk(c) = connect(system, &members[0].ip).await? else {
            bail!("not a ZooKeeper connection");
        };
        let opts = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        let mut paths = Vec::new();
        for r in regions {
            paths.push(format!("/{r}"));
            paths.push(format!("/{r}/sim"));
        }
        for p in &paths {
            match c.create(p, b"", &opts).await {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => bail!("creating {p}: {e}"),
            }
        }
        // Pipelined: the client orders requests when their futures are created.
        let names: Vec<String> = regions
            .iter()
            .flat_map(|r| (0..keys).map(move |k| format!("/{r}/sim/k{k}")))
            .collect();
        let mut pending = Vec::new();
        for name in &names {
            pending.push(c.create(name, b"", &opts));
        }
        for f in futures::future::join_all(pending).await {
            match f {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => bail!("creating keys: {e}"),
            }
        }
    }
    Ok(())
}

async fn run_mix(
    system: &str,
    s: &Scenario,
    mix: Mix,
    regions: &[String],
    members: &[Member],
) -> anyhow::Result<BTreeMap<String, RegionResult>> {
    let results = meridian_sim::Collector::default();
    let stop = Instant::now() + Duration::from_secs(s.duration_s);
    let mut tasks = Vec::new();
    for (ri, region) in regions.iter().enumerate() {
        let local: Vec<&Member> = members.iter().filter(|m| m.region == ri).collect();
        for c in 0..s.clients_per_region {
            let m = local[c % local.len()];
            let mut conn = connect(system, &m.ip).await?;
            let mut work = Workload::new(
                s,
                mix,
                region,
                regions,
                s.seed ^ ((ri as u64) << 32 | c as u64),
            );
            let value = vec![b'v'; s.value_size];
            let (region, results) = (region.clone(), results.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = RegionResult::default();
                while Instant::now() < stop {
                    let step = work.next_step();
                    let t = Instant::now();
                    if conn.op(&step.key, step.read, &value).await {
                        mine.hist[step.kind()].saturating_record(t.elapsed().as_micros() as u64);
                    } else {
                        mine.errors += 1;
                    }
                }
                results.add(&region, &mine);
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    Ok(results.take())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let peers = match &args.peers_json {
        Some(p) => read_json(p)?,
        None => run_peers(&args).await?,
    };
    if let Some(m) = &args.compare {
        let meridian = read_json(m)?;
        let simulated = match &args.simulated {
            Some(p) => Some(read_json(p)?),
            None => None,
        };
        let (md, merged) = merge(&meridian, &peers, simulated.as_ref());
        println!("\n{md}");
        if let Some(p) = &args.svg {
            std::fs::write(p, meridian_sim::svg(&merged))?;
        }
    }
    Ok(())
}

async fn run_peers(args: &Args) -> anyhow::Result<serde_json::Value> {
    let name = args.scenario.display().to_string();
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {name}"))?;
    let s = parse_scenario(&text, &name)?;
    let topo_path = s
        .topology
        .clone()
        .unwrap_or_else(|| PathBuf::from("topology/local-3region.toml"));
    let topo_text = std::fs::read_to_string(&topo_path)
        .with_context(|| format!("reading {}", topo_path.display()))?;
    let topo = Topology::parse(&topo_text, &topo_path.display().to_string())?;
    let regions: Vec<String> = topo.regions.iter().map(|r| r.name.clone()).collect();
    let wan = Wan::new();
    let mut max_rtt = 0;
    for (i, a) in regions.iter().enumerate() {
        for b in &regions[i + 1..] {
            let rtt = topo.rtt_ms(a, b);
            max_rtt = max_rtt.max(rtt);
            wan.set_link(a, b, LinkSpec::from_rtt_ms(rtt));
        }
    }
    println!("{}", meridian_sim::table_header("system"));
    let mut runs = Vec::new();
    for system in &args.systems {
        let dir = tempfile::tempdir()?;
        let (members, ports): (Vec<Member>, Vec<u16>) = match system.as_str() {
            "etcd-a" => (
                (0..regions.len())
                    .map(|r| Member {
                        name: format!("e{r}"),
                        region: r,
                        ip: format!("127.0.{}.1", 10 + r),
                        observer: false,
                    })
                    .collect(),
                vec![2380],
            ),
            "zk-a" => (
                (0..regions.len())
                    .map(|r| Member {
                        name: format!("z{r}"),
                        region: r,
                        ip: format!("127.0.{}.1", 20 + r),
                        observer: false,
                    })
                    .collect(),
                vec![2888, 3888],
            ),
            "zk-b" => {
                let mut m: Vec<Member> = (0..3)
                    .map(|i| Member {
                        name: format!("y{i}"),
                        region: 0,
                        ip: format!("127.0.40.{}", i + 1),
                        observer: false,
                    })
                    .collect();
                for r in 1..regions.len() {
                    m.push(Member {
                        name: format!("o{r}"),
                        region: r,
                        ip: format!("127.0.{}.1", 40 + r),
                        observer: true,
                    });
                }
                (m, vec![2888, 3888])
            }
            other => bail!("unknown system {other:?}: etcd-a, zk-a, zk-b"),
        };
        let _relays = relays(&wan, &regions, &members, &ports).await?;
        let _procs = if system.starts_with("etcd") {
            // etcd's heartbeat must exceed the widest round trip, as Meridian's does.
            start_etcd(
                args,
                dir.path(),
                &regions,
                &members,
                (2 * max_rtt + 20).max(100),
            )?
        } else {
            start_zookeeper(args, dir.path(), &members)?
        };
        eprintln!("{system}: waiting for the cluster …");
        ready(system, &members, &regions, s.keys_per_region).await?;
        for mix in s.mixes() {
            let res = run_mix(system, &s, mix, &regions, &members).await?;
            runs.push(meridian_sim::report_mix(system, mix, s.duration_s, &res));
        }
    }
    let out = json!({"scenario": s.name, "duration_s": s.duration_s,
                     "clients_per_region": s.clients_per_region, "runs": runs});
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(out)
}
