//! The naming service at scale (issue 16, "Measure"): `meridian dev` (3 regions under the WAN
//! emulator) in a child process; INSTANCES instances of SERVICES services registered from the 3
//! regions (service k lives in region k mod 3's domain, `/REGION/services/bench/sK`, and is
//! registered through that region's routers, on SESSIONS shared sessions); RESOLVERS SDK
//! resolvers spread over the services and over the 3 regions' routers. Then PROBES times a
//! registration and a deregistration of one more instance until every resolver of its service
//! (in every region) has seen it, and the aggregated keepalive entries per second that the
//! routers propose into the groups.
//!
//! `cargo run --release -p meridian-bench-proxy --bin bench-naming -- --meridian target/release/meridian`

use anyhow::{bail, Context, Result};
use clap::Parser;
use meridian_bench_proxy::{hist, pct, rss, Dev};
use meridian_sdk::{Client, Session};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];

#[derive(Parser)]
struct Args {
    /// The meridian binary to run `dev` with.
    #[arg(long, default_value = "target/release/meridian")]
    meridian: PathBuf,
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    #[arg(long, default_value_t = 100_000)]
    instances: usize,
    /// Registrant sessions (leases kept alive), spread over the regions.
    #[arg(long, default_value_t = 300)]
    sessions: usize,
    #[arg(long, default_value_t = 10_000)]
    resolvers: usize,
    /// Registrations (then deregistrations) timed to every resolver of their service.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// The registrations' TTL, seconds.
    #[arg(long, default_value_t = 30)]
    ttl: u64,
    /// The dev cluster's port.
    #[arg(long, default_value_t = 7760)]
    port: u16,
}

fn service(k: usize) -> String {
    format!("/{}/services/bench/s{k}", REGIONS[k % 3])
}

/// Per probe instance: when each resolver saw it appear, and disappear.
type Seen = Arc<Mutex<HashMap<String, (Vec<Instant>, Vec<Instant>)>>>;

/// Sums `keepalive_refreshes` over every router of the cluster, by region.
async fn refreshes(clients: &BTreeMap<&str, Vec<Client>>) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let status = clients["us-east"][0].status(true).await?;
    for n in std::iter::once(&status).chain(&status.nodes) {
        *out.entry(n.region.clone()).or_default() += n.keepalive_refreshes;
    }
    Ok(out)
}

/// Resolves service `k` through `c`; once it holds the service's `want` instances (counted in
/// `ready`), records in `seen` when each probe instance appears and disappears.
async fn follow_probes(
    c: Client,
    k: usize,
    want: usize,
    seen: Seen,
    ready: Arc<std::sync::atomic::AtomicUsize>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), String> {
    let mut r = c
        .resolver(&service(k))
        .await
        .map_err(|e| format!("resolving {}: {e}", service(k)))?;
    drop(permit);
    let mut s = r.snapshot();
    while s.instances.len() < want {
        s = r.changed().await.map_err(|e| e.to_string())?;
    }
    ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut present: HashSet<String> = HashSet::new();
    loop {
        let s = r.changed().await.map_err(|e| e.to_string())?;
        let now = Instant::now();
        let probes: HashSet<String> = s
            .instances
            .keys()
            .filter(|id| id.starts_with("probe-"))
            .cloned()
            .collect();
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for id in probes.difference(&present) {
            seen.entry(id.clone()).or_default().0.push(now);
        }
        for id in present.difference(&probes) {
            seen.entry(id.clone()).or_default().1.push(now);
        }
        present = probes;
    }
}

/// When the last of `want` resolvers saw probe `id` appear (`gone`: disappear); at most 30 s.
async fn last_seen(seen: &Seen, id: &str, gone: bool, want: usize) -> Result<Instant> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let times = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|(appeared, left)| if gone { left.clone() } else { appeared.clone() });
        if let Some(v) = times.filter(|v| v.len() >= want) {
            return v.into_iter().max().context("times");
        }
        if Instant::now() > until {
            bail!(
                "{id}: not every resolver saw it {} within 30 s",
                if gone { "go" } else { "come" }
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dev = Dev::start(&args.meridian, args.port, &[])?;
    let options = dev.options()?;
    // Clients per region (each one connection; at most 1,000 streams on one).
    let per_region = args.resolvers.div_ceil(3).div_ceil(1_000).max(1);
    let mut clients: BTreeMap<&str, Vec<Client>> = BTreeMap::new();
    for r in REGIONS {
        let eps = dev.endpoints(r)?;
        let mut list = Vec::new();
        for i in 0..per_region {
            // Each client on one router of the region, round robin.
            let ep = eps[i % eps.len()].clone();
            list.push(Client::new(vec![ep], options.clone())?);
        }
        clients.insert(r, list);
    }
    let ttl = Duration::from_secs(args.ttl);
    let sessions: Vec<Session> = (0..args.sessions)
        .map(|i| Session::new(clients[REGIONS[i % 3]][0].clone(), ttl))
        .collect();
    // A session of the region of service k.
    let session_for = |k: usize, n: usize| -> &Session {
        let per = (args.sessions / 3).max(1);
        &sessions[(k % 3 + 3 * (n % per)) % sessions.len()]
    };

    // Registration.
    let began = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    for i in 0..args.instances {
        let k = i % args.services;
        let s = session_for(k, i / args.services).clone();
        let c = clients[REGIONS[k % 3]][0].clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            c.register_in(
                &s,
                &service(k),
                &format!("i{i}"),
                &format!("10.{}.{}.{}:8080", i >> 16 & 255, i >> 8 & 255, i & 255),
                Some(REGIONS[k % 3]),
                BTreeMap::new(),
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let reg_s = began.elapsed().as_secs_f64();
    println!(
        "naming: {} instances of {} services registered from 3 regions on {} sessions in {reg_s:.1} s ({:.0}/s)",
        args.instances,
        args.services,
        args.sessions,
        args.instances as f64 / reg_s
    );

    // Resolvers: resolver j resolves service j mod SERVICES through a router of region
    // (j / SERVICES) mod 3, so every service has resolvers in the 3 regions.
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let began = Instant::now();
    let mut resolvers = Vec::new();
    for j in 0..args.resolvers {
        let k = j % args.services;
        let region = REGIONS[(j / args.services) % 3];
        let list = &clients[region];
        let c = list[(j / 3) % list.len()].clone();
        let want = (0..args.instances)
            .filter(|i| i % args.services == k)
            .count();
        let (seen, ready) = (seen.clone(), ready.clone());
        let permit = sem.clone().acquire_owned().await?;
        resolvers.push(tokio::spawn(follow_probes(c, k, want, seen, ready, permit)));
    }
    while ready.load(std::sync::atomic::Ordering::Relaxed) < args.resolvers {
        if let Some(i) = resolvers.iter().position(|t| t.is_finished()) {
            let why = match resolvers.swap_remove(i).await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "it ended".into(),
                Err(e) => e.to_string(),
            };
            bail!("a resolver failed before it was ready: {why}");
        }
        if began.elapsed() > Duration::from_secs(900) {
            bail!("the resolvers were not ready within 900 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  {} resolvers (from the 3 regions) hold their service's instances after {:.1} s",
        args.resolvers,
        began.elapsed().as_secs_f64()
    );

    // Keepalive entries per second, by region (= into that region's group).
    let before = refreshes(&clients).await?;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = refreshes(&clients).await?;
    let secs = window.elapsed().as_secs_f64();
    let rates: Vec<String> = after
        .iter()
        .map(|(r, n)| {
            format!(
                "{r} {:.1}/s",
                (n - before.get(r).copied().unwrap_or(0)) as f64 / secs
            )
        })
        .collect();
    println!(
        "  keepalive entries proposed by each region's routers ({} sessions, TTL {} s): {}",
        args.sessions,
        args.ttl,
        rates.join(", ")
    );

    // Probes.
    let per_service = |k: usize| {
        (0..args.resolvers)
            .filter(|j| j % args.services == k)
            .count()
    };
    let (mut add, mut del) = (hist(), hist());
    for p in 0..args.probes {
        let k = (p * 7) % args.services;
        let id = format!("probe-{p}");
        let want = per_service(k);
        let c = &clients[REGIONS[k % 3]][0];
        let t0 = Instant::now();
        c.register_in(
            session_for(k, p),
            &service(k),
            &id,
            "10.255.0.1:8080",
            None,
            BTreeMap::new(),
        )
        .await?;
        let last = last_seen(&seen, &id, false, want).await?;
        add.saturating_record(last.saturating_duration_since(t0).as_micros() as u64);
        let t1 = Instant::now();
        c.deregister(&service(k), &id).await?;
        let last = last_seen(&seen, &id, true, want).await?;
        del.saturating_record(last.saturating_duration_since(t1).as_micros() as u64);
    }
    println!(
        "  registration -> every resolver of its service   {}",
        pct(&add)
    );
    println!(
        "  deregistration -> every resolver of its service {}",
        pct(&del)
    );
    println!(
        "  dev process (9 nodes) resident memory: {:.0} MiB",
        rss(dev.child.id())? as f64 / 1048576.0
    );
    for t in &resolvers {
        t.abort();
    }
    drop(sessions);
    Ok(())
}
