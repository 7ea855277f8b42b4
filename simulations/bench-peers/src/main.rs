//! Meridian vs etcd, same machine, same workload, same run: put, sequential/serializable get and
//! linearizable get, with 1, 16 and 256 concurrent clients; prints percentiles and ratios.
//!
//! With `--rounds R` every (op, clients) cell is measured R times, the two systems taking turns
//! to go first; each round prints its own line and ratio, and a `median` line gives each
//! system's median throughput and percentiles and the median of the per-round ratios (on a
//! noisy machine, a ratio within one round compares two systems under the same noise).

mod procs;
use anyhow::{bail, Context};
use clap::Parser;
use meridian_loadgen::{closed_loop, key, Outcome};
use meridian_sdk::Consistency;
use procs::Procs;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// The `meridian` binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/meridian")]
    meridian_bin: PathBuf,
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
    clients: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// gRPC connections per system (HTTP/2 multiplexes the clients over them).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Write every result as one JSON object per line here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Which operations to measure.
    #[arg(long, default_value = "put,get-seq,get-lin", value_delimiter = ',', value_parser = parse_op)]
    ops: Vec<Op>,
    /// Measurements of each cell, the systems taking turns to go first (1..=50).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
}

fn parse_op(s: &str) -> Result<Op, String> {
    [Op::Put, Op::GetLocal, Op::GetLinear]
        .into_iter()
        .find(|op| op.name() == s)
        .ok_or_else(|| format!("unknown op {s:?}: expected put, get-seq or get-lin"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    /// Meridian `sequential` (local replica), etcd `serializable`.
    GetLocal,
    /// Both linearizable (read index through the leader).
    GetLinear,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::GetLocal => "get-seq",
            Op::GetLinear => "get-lin",
        }
    }
}

#[derive(Clone)]
enum Target {
    Meridian(Vec<meridian_sdk::Client>),
    Etcd(Vec<etcd_client::Client>),
}

impl Target {
    async fn run(&self, i: usize, op: Op, key: &str, value: &[u8]) -> bool {
        match self {
            Target::Meridian(cs) => {
                let c = &cs[i % cs.len()];
                match op {
                    Op::Put => c.put(key, value.to_vec()).await.is_ok(),
                    Op::GetLocal => c.get_with(key, Consistency::Sequential).await.is_ok(),
                    Op::GetLinear => c.get_with(key, Consistency::Linearizable).await.is_ok(),
                }
            }
            Target::Etcd(cs) => {
                let mut c = cs[i % cs.len()].clone();
                match op {
                    Op::Put => c.put(key, value.to_vec(), None).await.is_ok(),
                    Op::GetLocal => c
                        .get(
                            key,
                            Some(etcd_client::GetOptions::new().with_serializable()),
                        )
                        .await
                        .is_ok(),
                    Op::GetLinear => c.get(key, None).await.is_ok(),
                }
            }
        }
    }
}

async fn drive(
    target: Target,
    op: Op,
    concurrency: usize,
    secs: u64,
    keys: usize,
    value: Arc<Vec<u8>>,
) -> Outcome {
    closed_loop(concurrency, Duration::from_secs(secs), move |task, n| {
        let target = target.clone();
        let value = value.clone();
        async move { target.run(task, op, &key(n, keys), &value).await }
    })
    .await
}

/// One measurement of one system.
#[derive(Clone, Copy, Default)]
struct Cell {
    ops_per_sec: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    errors: u64,
}

impl Cell {
    /// Meridian's / etcd's: throughput, p50, p99.
    fn ratio(&self, etcd: &Cell) -> [f64; 3] {
        [
            self.ops_per_sec / etcd.ops_per_sec.max(f64::MIN_POSITIVE),
            self.p50 as f64 / etcd.p50.max(1) as f64,
            self.p99 as f64 / etcd.p99.max(1) as f64,
        ]
    }

    /// Each column's median over `cells` (the columns' medians may come from different rounds).
    fn median(cells: &[Cell]) -> Cell {
        let of = |f: fn(&Cell) -> f64| median(cells.iter().map(f).collect());
        Cell {
            ops_per_sec: of(|c| c.ops_per_sec),
            p50: of(|c| c.p50 as f64) as u64,
            p99: of(|c| c.p99 as f64) as u64,
            p999: of(|c| c.p999 as f64) as u64,
            errors: of(|c| c.errors as f64) as u64,
        }
    }

    fn line(
        &self,
        system: &str,
        op: Op,
        clients: usize,
        round: &str,
        ratio: Option<[f64; 3]>,
    ) -> String {
        let mut line = format!(
            "{:<9} {:<8} {:>7} {:>6} {:>10.0} {:>9} {:>9} {:>9} {:>6}",
            system,
            op.name(),
            clients,
            round,
            self.ops_per_sec,
            self.p50,
            self.p99,
            self.p999,
            self.errors
        );
        if let Some([t, p50, p99]) = ratio {
            line.push_str(&format!("   {t:.2}x  {p50:.2}x  {p99:.2}x"));
        }
        line
    }
}

/// The median of `v` (the mean of the middle two for an even count); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn start_meridian(bin: &PathBuf, dir: &std::path::Path) -> anyhow::Result<(Procs, Vec<String>)> {
    let addrs: Vec<String> = (1..=3)
        .map(|i| {
            let ip = format!("127.0.60.{i}");
            free_port(&ip).map(|p| format!("{ip}:{p}"))
        })
        .collect::<Result<_, _>>()?;
    let peers: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("[[peers]]\nid = {}\naddress = \"{a}\"\n", i + 1))
        .collect();
    let mut procs = Procs(Vec::new());
    for (i, a) in addrs.iter().enumerate() {
        let cfg = dir.join(format!("meridian-{}.toml", i + 1));
        std::fs::write(
            &cfg,
            format!(
                "node_id = {}\nlisten = \"{a}\"\ndata_dir = \"{}\"\n{peers}",
                i + 1,
                dir.join(format!("meridian-{}", i + 1)).display()
            ),
        )?;
        procs.0.push(
            Command::new(bin)
                .args(["server", "--config"])
                .arg(&cfg)
                // Side by side with an etcd that runs without TLS or auth.
                .env("MERIDIAN_SECURITY__MODE", "insecure")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
    }
    Ok((procs, addrs))
}

fn start_etcd(bin: &PathBuf, dir: &std::path::Path) -> anyhow::Result<(Procs, Vec<String>)> {
    let mut members = Vec::new();
    for i in 1..=3 {
        let ip = format!("127.0.61.{i}");
        members.push((
            format!("e{i}"),
            ip.clone(),
            free_port(&ip)?,
            free_port(&ip)?,
        ));
    }
    let initial: Vec<String> = members
        .iter()
        .map(|(n, ip, _, pp)| format!("{n}=http://{ip}:{pp}"))
        .collect();
    let mut procs = Procs(Vec::new());
    for (name, ip, cp, pp) in &members {
        procs.0.push(
            Command::new(bin)
                .args([
                    "--name",
                    name,
                    "--data-dir",
                    &dir.join(name).display().to_string(),
                    "--listen-client-urls",
                    &format!("http://{ip}:{cp}"),
                    "--advertise-client-urls",
                    &format!("http://{ip}:{cp}"),
                    "--listen-peer-urls",
                    &format!("http://{ip}:{pp}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://{ip}:{pp}"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "bench",
                    "--log-level",
                    "error",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
    }
    Ok((
        procs,
        members
            .iter()
            .map(|(_, ip, cp, _)| format!("{ip}:{cp}"))
            .collect(),
    ))
}

/// Meridian clients, pointed at the group's leader: a first write shows the cluster is ready and
/// names the group, then `Status` names its leader. (A response header's `node` is the router
/// that answered, not the leader: a client pointed at it would have every put forwarded, one
/// more hop than etcd's clients make.)
async fn meridian_clients(
    addrs: &[String],
    n: usize,
) -> anyhow::Result<(String, Vec<meridian_sdk::Client>)> {
    let start = Instant::now();
    let probe = meridian_sdk::Client::new(addrs.to_vec(), Default::default())?;
    loop {
        match meridian_leader(&probe, addrs).await {
            Ok(leader) => {
                println!("meridian's leader: {leader}");
                let mut eps = vec![leader.clone()];
                eps.extend(addrs.iter().filter(|a| **a != leader).cloned());
                let clients = (0..n)
                    .map(|_| Ok(meridian_sdk::Client::new(eps.clone(), Default::default())?))
                    .collect::<anyhow::Result<_>>()?;
                return Ok((leader, clients));
            }
            Err(e) if start.elapsed() > Duration::from_secs(30) => bail!("meridian not ready: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The address of the leader of the group that holds the benchmark's keys (a put names the
/// group, `Status` its leader).
async fn meridian_leader(probe: &meridian_sdk::Client, addrs: &[String]) -> anyhow::Result<String> {
    let put = probe.put("/bench/ready", "1").await?;
    let group = put
        .header
        .map(|h| h.group)
        .context("a put without a header")?;
    let status = probe.status(false).await?;
    let g = status
        .groups
        .iter()
        .find(|g| g.group == group)
        .with_context(|| format!("no status of group {group}"))?;
    addrs
        .iter()
        .find(|a| **a == g.leader_address)
        .cloned()
        .with_context(|| {
            format!(
                "group {group} has no leader among {addrs:?} yet ({:?})",
                g.leader_address
            )
        })
}

/// etcd clients, connected to the leader only (as the Meridian ones are).
async fn etcd_clients(
    addrs: &[String],
    n: usize,
) -> anyhow::Result<(String, Vec<etcd_client::Client>)> {
    let start = Instant::now();
    loop {
        match etcd_leader(addrs).await {
            Ok(leader) => {
                let mut out = Vec::new();
                for _ in 0..n {
                    out.push(etcd_client::Client::connect([leader.as_str()], None).await?);
                }
                return Ok((leader, out));
            }
            Err(e) if start.elapsed() > Duration::from_secs(30) => bail!("etcd not ready: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The client address of etcd's leader.
async fn etcd_leader(addrs: &[String]) -> anyhow::Result<String> {
    let mut c = etcd_client::Client::connect(addrs, None).await?;
    c.put("/bench/ready", "1", None).await?;
    let leader = c.status().await?.leader();
    let members = c.member_list().await?;
    let m = members
        .members()
        .iter()
        .find(|m| m.id() == leader)
        .context("leader not in member list")?;
    let url = m
        .client_urls()
        .first()
        .context("leader has no client url")?;
    Ok(url.trim_start_matches("http://").to_string())
}

/// After a round: whether `system`'s leader is still `targeted`, the node its clients talk to.
/// If it moved, some of the round's requests may have gone through a follower (one more hop
/// than the other system's): say so; the caller re-points the clients for the next round.
fn leader_moved(system: &str, round: u32, targeted: &str, now: anyhow::Result<String>) -> bool {
    match now {
        Ok(now) if now != targeted => {
            eprintln!(
                "warning: {system}'s leader moved from {targeted} to {now} by the end of \
                 round {round}: part of that round may have gone through a follower; \
                 re-pointing the clients"
            );
            true
        }
        Ok(_) => false,
        Err(e) => {
            eprintln!("warning: {system}'s leader could not be checked after round {round}: {e}");
            false
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (_m, maddrs) = start_meridian(&args.meridian_bin, dir.path())?;
    let (_e, eaddrs) = start_etcd(&args.etcd_bin, dir.path())?;
    let (mut meridian_at, mclients) = meridian_clients(&maddrs, args.connections).await?;
    let mut meridian = Target::Meridian(mclients);
    let (mut etcd_at, eclients) = etcd_clients(&eaddrs, args.connections).await?;
    let mut etcd = Target::Etcd(eclients);
    let probe = meridian_sdk::Client::new(maddrs.clone(), Default::default())?;
    let value = Arc::new(vec![b'x'; args.value_size]);
    let mut json_out = match &args.json {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    println!(
        "{:<9} {:<8} {:>7} {:>6} {:>10} {:>9} {:>9} {:>9} {:>6}   ratio meridian/etcd: ops/s  p50  p99",
        "system", "op", "clients", "round", "ops/s", "p50 us", "p99 us", "p99.9 us", "errors"
    );
    for &clients in &args.clients {
        for &op in &args.ops {
            // Per system (Meridian, etcd): one measurement per round.
            let mut cells: [Vec<Cell>; 2] = Default::default();
            for round in 1..=args.rounds {
                let first = if round % 2 == 1 { 0 } else { 1 };
                for i in [first, 1 - first] {
                    let target = if i == 0 { &meridian } else { &etcd };
                    let o = drive(
                        target.clone(),
                        op,
                        clients,
                        args.seconds,
                        args.keys,
                        value.clone(),
                    )
                    .await;
                    cells[i].push(Cell {
                        ops_per_sec: o.ops_per_sec(),
                        p50: o.us(0.5),
                        p99: o.us(0.99),
                        p999: o.us(0.999),
                        errors: o.errors,
                    });
                }
                let now = meridian_leader(&probe, &maddrs).await;
                if leader_moved("meridian", round, &meridian_at, now) {
                    let (at, clients) = meridian_clients(&maddrs, args.connections).await?;
                    (meridian_at, meridian) = (at, Target::Meridian(clients));
                }
                let now = etcd_leader(&eaddrs).await;
                if leader_moved("etcd", round, &etcd_at, now) {
                    let (at, clients) = etcd_clients(&eaddrs, args.connections).await?;
                    (etcd_at, etcd) = (at, Target::Etcd(clients));
                }
                let (Some(m), Some(e)) = (cells[0].last(), cells[1].last()) else {
                    bail!("a round measured nothing");
                };
                let ratio = m.ratio(e);
                let label = if args.rounds > 1 {
                    format!("{round}")
                } else {
                    String::new()
                };
                println!("{}", m.line("meridian", op, clients, &label, None));
                println!("{}", e.line("etcd", op, clients, &label, Some(ratio)));
                if let Some(f) = json_out.as_mut() {
                    use std::io::Write;
                    for (name, c) in [("meridian", m), ("etcd", e)] {
                        writeln!(
                            f,
                            "{}",
                            json!({"system": name, "op": op.name(), "clients": clients,
                            "round": round, "ops_per_sec": c.ops_per_sec, "p50_us": c.p50,
                            "p99_us": c.p99, "p999_us": c.p999, "errors": c.errors})
                        )?;
                    }
                }
            }
            if args.rounds > 1 {
                let (m, e) = (Cell::median(&cells[0]), Cell::median(&cells[1]));
                let ratios: Vec<[f64; 3]> = cells[0]
                    .iter()
                    .zip(&cells[1])
                    .map(|(m, e)| m.ratio(e))
                    .collect();
                let ratio = [0, 1, 2].map(|k| median(ratios.iter().map(|r| r[k]).collect()));
                println!("{}", m.line("meridian", op, clients, "median", None));
                println!("{}", e.line("etcd", op, clients, "median", Some(ratio)));
                if let Some(f) = json_out.as_mut() {
                    use std::io::Write;
                    writeln!(
                        f,
                        "{}",
                        json!({"system": "meridian/etcd", "round": "median", "op": op.name(),
                        "clients": clients, "rounds": args.rounds,
                        "median_ratio_ops_per_sec": ratio[0], "median_ratio_p50": ratio[1],
                        "median_ratio_p99": ratio[2]})
                    )?;
                }
            }
        }
    }
    Ok(())
}
