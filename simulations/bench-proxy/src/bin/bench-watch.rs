//! Watch fan-out through one router (issue 16, "Measure"): `meridian dev --nodes 1` in a child
//! process, N watchers of one key (default 10,000) over connections of 1,000 streams each, and
//! a writer putting that key at a steady rate. Prints, from one run:
//! - delivery latency from the put being sent (its commit included) to each watcher, and to the
//!   last of all watchers of each revision ("the 10,000th watcher"), p50/p99/max, next to the
//!   put's own latency;
//! - the node's resident memory per watcher (VmRSS after opening them, minus before);
//! - the node's CPU per 1,000 events/s delivered (user + system time over the writes);
//! - the node's `meridian_watch_upstreams` and `meridian_watchers` (its watcher tasks: the SDK
//!   carries each client's watches on one shared stream, where watches at the same revision
//!   share one) while the watchers are open.
//!
//! `cargo run --release -p meridian-bench-proxy --bin bench-watch -- --meridian target/release/meridian`
//! (`BENCH_WATCH_EACH=1` also prints, for every revision, when its put was sent and how long the
//! put, the first and the last watcher took: where a tail comes from).

use anyhow::{bail, Context, Result};
use clap::Parser;
use meridian_bench_proxy::{cpu_seconds, hist, metric, pct, rss, Dev};
use meridian_sdk::{Client, WatchEvent};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// The allocator the meridian binary uses: 10,000 watchers in one process allocate and free a
// copy of every response each, and glibc's malloc took a quarter of this client's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// The meridian binary to run `dev` with.
    #[arg(long, default_value = "target/release/meridian")]
    meridian: PathBuf,
    /// Watchers of the one key.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Watch streams per client connection (the node allows 1,024).
    #[arg(long, default_value_t = 1_000)]
    per_connection: usize,
    /// Puts of the key, one revision each.
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// Puts per second.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// The dev node's port.
    #[arg(long, default_value_t = 7720)]
    port: u16,
    /// Run the node without TLS and tokens (`dev --insecure`), to see what security costs.
    #[arg(long)]
    insecure: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let extra: &[&str] = if args.insecure {
        &["--nodes", "1", "--insecure"]
    } else {
        &["--nodes", "1"]
    };
    let dev = Dev::start(&args.meridian, args.port, extra)?;
    let ready = dev.ready.clone();
    let pid = dev.child.id();
    let endpoint = ready["regions"]["local"]["endpoint"]
        .as_str()
        .context("endpoint")?
        .to_string();
    let http = ready["http"]["1"].as_str().context("http")?.to_string();
    let options = dev.options()?;
    let client = || Client::new(vec![endpoint.clone()], options.clone());
    let writer = client()?;
    let key = "/bench/watch/k";
    let start = writer
        .put(key, "v0")
        .await?
        .header
        .context("header")?
        .revision
        + 1;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss(pid)?;

    let conns = args.watchers.div_ceil(args.per_connection.max(1));
    let clients: Vec<Client> = (0..conns).map(|_| client()).collect::<Result<_, _>>()?;
    let writes = args.writes;
    let mut tasks = Vec::with_capacity(args.watchers);
    for i in 0..args.watchers {
        let mut w = clients[i / args.per_connection.max(1)].watch(key, false, start);
        // Written before the measurement (10,000 watchers' records are ~50 MB): touching fresh
        // pages during it would time the kernel's page zeroing, not the watch.
        let mut got: Vec<(u64, Instant)> = vec![(0, Instant::now()); writes];
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while n < writes {
                match w.next().await {
                    Ok(WatchEvent::Changes { revision, events }) => {
                        let now = Instant::now();
                        for _ in &events {
                            if let Some(slot) = got.get_mut(n) {
                                *slot = (revision, now);
                            }
                            n += 1;
                        }
                    }
                    Ok(WatchEvent::Progress { .. }) => {}
                    Err(e) => return Err(format!("watcher {i}: {e}")),
                }
            }
            got.truncate(n);
            // The watcher is handed back, not dropped: 10,000 cancels while the last revision
            // is still reaching the others would time the teardown, not the fan-out.
            Ok((got, w))
        }));
    }
    let opened = Instant::now();
    while metric(&http, "meridian_watch_streams")? < args.watchers as f64 {
        if opened.elapsed() > Duration::from_secs(600) {
            bail!("the watchers did not all open within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open_s = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss(pid)?;
    let upstreams = metric(&http, "meridian_watch_upstreams")?;
    let watcher_tasks = metric(&http, "meridian_watchers")?;

    // The writes, at a steady rate.
    let cpu_before = cpu_seconds(pid)?;
    let began = Instant::now();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut put_took: HashMap<u64, Duration> = HashMap::new();
    let mut put_lat = hist();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    for n in 0..writes {
        tick.tick().await;
        let t = Instant::now();
        let rev = writer
            .put(key, format!("v{}", n + 1).as_str())
            .await?
            .header
            .context("header")?
            .revision;
        put_lat.saturating_record(t.elapsed().as_micros() as u64);
        put_took.insert(rev, t.elapsed());
        sent.insert(rev, t);
    }
    let mut each = hist();
    let mut last: HashMap<u64, Duration> = HashMap::new();
    let mut first: HashMap<u64, Duration> = HashMap::new();
    let mut done = Vec::with_capacity(args.watchers);
    for t in tasks {
        let got = match tokio::time::timeout(Duration::from_secs(300), t).await {
            Ok(Ok(Ok((got, w)))) => {
                done.push(w);
                got
            }
            Ok(Ok(Err(e))) => bail!("{e}"),
            Ok(Err(e)) => bail!("watcher task: {e}"),
            Err(_) => bail!("a watcher did not get every write within 300 s"),
        };
        for (rev, at) in got {
            let Some(t) = sent.get(&rev) else {
                bail!("a watcher saw revision {rev}, which no put made")
            };
            let d = at.saturating_duration_since(*t);
            each.saturating_record(d.as_micros() as u64);
            let l = last.entry(rev).or_default();
            *l = (*l).max(d);
            let f = first.entry(rev).or_insert(Duration::MAX);
            *f = (*f).min(d);
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    if std::env::var_os("BENCH_WATCH_EACH").is_some() {
        let mut revs: Vec<_> = last.iter().collect();
        revs.sort();
        for (rev, d) in revs {
            let at = sent
                .get(rev)
                .map_or(0.0, |t| t.duration_since(began).as_secs_f64());
            let f = first.get(rev).copied().unwrap_or_default();
            eprintln!("revision {rev} sent at {at:.3} s: last watcher after {d:?} (first {f:?}, put {:?})", put_took.get(rev).copied().unwrap_or_default());
        }
    }
    let mut to_last = hist();
    for d in last.values() {
        to_last.saturating_record(d.as_micros() as u64);
    }
    let events = (writes * args.watchers) as f64;
    println!(
        "watch fan-out: {} watchers of one key through one router, {} connections, {} puts at {}/s",
        args.watchers, conns, writes, args.rate
    );
    println!(
        "  watchers opened in {open_s:.1} s; upstream subscriptions: {upstreams}; watcher tasks \
         on the node: {watcher_tasks}"
    );
    println!("  put (commit)                 {}", pct(&put_lat));
    println!("  put sent -> each watcher     {}", pct(&each));
    println!("  put sent -> last watcher     {}", pct(&to_last));
    println!(
        "  node memory: {:.1} MiB before, {:.1} MiB with the watchers: {:.1} KiB per watcher",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 / args.watchers as f64
    );
    println!(
        "  node CPU: {cpu:.2} s over {elapsed:.1} s for {events:.0} events ({:.0} events/s): \
         {:.2}% of a core per 1,000 events/s",
        events / elapsed,
        cpu / elapsed * 100.0 / (events / elapsed / 1000.0)
    );
    drop(done);
    drop(clients);
    drop(dev);
    Ok(())
}
