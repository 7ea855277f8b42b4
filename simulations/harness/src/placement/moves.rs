//! Part 3 of `bench-placement`: online moves under load, their write pauses, the other
//! domains' writes during them, and every key read back afterwards.

use super::BenchPlacementArgs;
use crate::geo::{hist, ms, Dev};
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use meridian_sdk::{pb, Client, Consistency};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The prefix part 3 moves, the group that owns it at the start and the one it moves to.
const MOVE_PREFIX: &str = "/us-east/bench-move/";
const MOVE_HOME: &str = "us-east";
const MOVE_AWAY: &str = "eu-west";
/// Keys the writer under the moving prefix cycles through.
const WRITER_KEYS: u64 = 64;
/// Puts per preload txn (the server's limit is 128 operations per list).
const PRELOAD_TXN_OPS: usize = 128;
/// Preload txns in flight.
const PRELOAD_CONCURRENCY: usize = 8;
/// How often a move's progress is read from the us-east router's map.
const MOVE_POLL: Duration = Duration::from_millis(5);
/// Writes in the first moments of part 3 (connections being made) count for nothing.
const WARM_UP: Duration = Duration::from_millis(500);
/// Longest a writer may take to notice it should stop (its last call's deadline and more).
const WRITER_STOP_MAX: Duration = Duration::from_secs(60);

/// A 100-byte value naming `n`.
fn value_of(n: u64) -> String {
    format!("{n:0>100}")
}

/// One write: its start (from the start of part 3), how long it took, whether it succeeded.
#[derive(Clone, Copy, Debug)]
struct Sample {
    start: Duration,
    lat: Duration,
    ok: bool,
}

impl Sample {
    fn end(&self) -> Duration {
        self.start + self.lat
    }
}

/// What a closed-loop writer did.
#[derive(Default)]
struct Writes {
    samples: Vec<Sample>,
    /// (start of the failed write, the error).
    errors: Vec<(Duration, String)>,
    /// Key → (its last acknowledged value, the values of failed writes since: a failed write
    /// may still have been applied).
    last: BTreeMap<String, (Option<String>, Vec<String>)>,
}

/// Clears the flag the writers run under when dropped, so an early return stops them too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Puts `{prefix}w{n % keys}` from `c` one after another until `running` is cleared or
/// `hard_stop` passes; an error is recorded and the loop goes on.
async fn writer(
    c: Client,
    prefix: String,
    keys: u64,
    t0: Instant,
    running: Arc<AtomicBool>,
    hard_stop: Instant,
) -> Writes {
    let mut w = Writes::default();
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        let key = format!("{prefix}w{:03}", n % keys);
        let value = value_of(n);
        let start = Instant::now();
        let result = c.put(&key, value.clone()).await;
        let lat = start.elapsed();
        let at = start.duration_since(t0);
        let entry = w.last.entry(key).or_default();
        let ok = result.is_ok();
        match result {
            Ok(_) => *entry = (Some(value), Vec::new()),
            Err(e) => {
                entry.1.push(value);
                w.errors.push((at, e.to_string()));
            }
        }
        w.samples.push(Sample { start: at, lat, ok });
        if !ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n += 1;
    }
    w
}

/// Reads `{prefix}w{n % keys}` (sequentially consistent) from `c` one after another until
/// `running` is cleared or `hard_stop` passes; an error is recorded and the loop goes on.
async fn reader(
    c: Client,
    prefix: String,
    keys: u64,
    t0: Instant,
    running: Arc<AtomicBool>,
    hard_stop: Instant,
) -> Writes {
    let mut r = Writes::default();
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        let key = format!("{prefix}w{:03}", n % keys);
        let start = Instant::now();
        let result = c.get(&key).await;
        let lat = start.elapsed();
        let at = start.duration_since(t0);
        let ok = result.is_ok();
        if let Err(e) = result {
            r.errors.push((at, e.to_string()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r.samples.push(Sample { start: at, lat, ok });
        n += 1;
    }
    r
}

/// One move as the bench saw it, in time from the start of part 3.
struct MoveWindow {
    to: &'static str,
    id: u64,
    begin: Duration,
    /// The global group recorded the move (`move_domain` answered), from `begin`.
    acked: Duration,
    /// The us-east router's map shows the new owner, from `begin`.
    committed: Duration,
    /// The us-east router's map lists the move in `moves_done` (source released), from `begin`.
    finished: Duration,
}

impl MoveWindow {
    fn end(&self) -> Duration {
        self.begin + self.finished
    }
}

/// The region of the node leading `group`, as the cluster status from `c` says.
async fn leader_region(c: &Client, group: u64) -> String {
    if let Ok(s) = c.status(true).await {
        for node in std::iter::once(&s).chain(s.nodes.iter()) {
            if node
                .groups
                .iter()
                .any(|g| g.group == group && g.state == "Leader")
            {
                return node.region.clone();
            }
        }
    }
    "unknown".to_string()
}

/// The us-east router's map once the global group has committed one (bounded).
async fn committed_map(c: &Client) -> anyhow::Result<pb::PlacementShowResponse> {
    let t = Instant::now();
    loop {
        match c.placement().await {
            Ok(m) if m.epoch > 0 => return Ok(m),
            Ok(_) => {}
            Err(e) if t.elapsed() > Duration::from_secs(30) => {
                anyhow::bail!("reading the placement map: {e}")
            }
            Err(_) => {}
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the global group committed no placement map within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `keys` keys `{prefix}k{i:05}` (100-byte values) in txns of up to 128 puts, several
/// in flight; returns how long it took.
async fn preload(dev: &Dev, prefix: &str, keys: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let clients = (0..PRELOAD_CONCURRENCY)
        .map(|_| dev.client(MOVE_HOME))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batches: Vec<(usize, std::ops::Range<usize>)> = (0..keys)
        .step_by(PRELOAD_TXN_OPS)
        .map(|s| s..(s + PRELOAD_TXN_OPS).min(keys))
        .enumerate()
        .collect();
    futures::stream::iter(batches)
        .map(|(j, range)| {
            let c = clients[j % clients.len()].clone();
            async move {
                let first = range.start;
                let success = range
                    .map(|i| pb::TxnOp {
                        op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                            key: format!("{prefix}k{i:05}").into_bytes(),
                            value: value_of(i as u64).into_bytes(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let r = c
                    .txn(pb::TxnRequest {
                        success,
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("preloading {prefix}k{first:05}…"))?;
                anyhow::ensure!(
                    r.succeeded,
                    "preloading {prefix}k{first:05}…: the txn did not succeed"
                );
                Ok(())
            }
        })
        .buffer_unordered(PRELOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// Starts one move of `MOVE_PREFIX` to `to` and follows it in the us-east router's map until
/// it is finished (bounded by `timeout`); a rolled-back move is an error.
async fn one_move(
    admin: &Client,
    t0: Instant,
    to: &'static str,
    to_id: u64,
    timeout: Duration,
) -> anyhow::Result<MoveWindow> {
    let begin = Instant::now();
    let started = admin
        .move_domain(MOVE_PREFIX, to, 0)
        .await
        .with_context(|| format!("starting the move of {MOVE_PREFIX} to group {to}"))?;
    let acked = begin.elapsed();
    let mut committed = None;
    let mut last_error = None;
    loop {
        match admin.placement().await {
            Ok(map) => {
                if committed.is_none()
                    && map
                        .domains
                        .iter()
                        .any(|d| d.prefix == MOVE_PREFIX && d.group == to_id)
                {
                    committed = Some(begin.elapsed());
                }
                if let Some(r) = map
                    .moves_done
                    .iter()
                    .find(|r| r.id == started.id && r.prefix == MOVE_PREFIX)
                {
                    anyhow::ensure!(
                        !r.aborted,
                        "move {} of {MOVE_PREFIX} to group {to} was rolled back: {}",
                        r.id,
                        r.reason
                    );
                    let finished = begin.elapsed();
                    return Ok(MoveWindow {
                        to,
                        id: started.id,
                        begin: begin.duration_since(t0),
                        acked,
                        committed: committed.unwrap_or(finished),
                        finished,
                    });
                }
            }
            Err(e) => last_error = Some(e.to_string()),
        }
        anyhow::ensure!(
            begin.elapsed() < timeout,
            "move {} of {MOVE_PREFIX} to group {to} did not finish within {} s{}",
            started.id,
            timeout.as_secs(),
            last_error
                .map(|e| format!(" (last error reading the map: {e})"))
                .unwrap_or_default()
        );
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// Waits for a writer task to end (bounded) and takes what it recorded.
async fn join_writer(
    name: &str,
    handle: tokio::task::JoinHandle<Writes>,
) -> anyhow::Result<Writes> {
    match tokio::time::timeout(WRITER_STOP_MAX, handle).await {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => anyhow::bail!("the writer of {name} failed: {e}"),
        Err(_) => anyhow::bail!(
            "the writer of {name} did not stop within {} s",
            WRITER_STOP_MAX.as_secs()
        ),
    }
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Latencies of `samples` that succeeded and started in one of `spans`, and how long the spans
/// last together.
fn in_spans(samples: &[Sample], spans: &[(Duration, Duration)]) -> (Histogram<u64>, Duration) {
    let mut h = hist();
    for s in samples
        .iter()
        .filter(|s| s.ok && spans.iter().any(|(a, b)| s.start >= *a && s.start < *b))
    {
        h.saturating_record(s.lat.as_micros() as u64);
    }
    let total = spans.iter().map(|(a, b)| b.saturating_sub(*a)).sum();
    (h, total)
}

/// p50, p99 and max of a histogram of microseconds, in ms.
fn pct(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "– / – / –".to_string();
    }
    format!(
        "{:.1} / {:.1} / {:.1}",
        ms(h, 0.5),
        ms(h, 0.99),
        h.max() as f64 / 1000.0
    )
}

/// Part 3: online moves of a 10,000-key prefix under a steady writer, beside writers of other
/// domains, then a read-back of everything acknowledged.
pub(super) async fn moves(
    dev: &Dev,
    topology: &meridian_topology::Topology,
    args: &BenchPlacementArgs,
) -> anyhow::Result<()> {
    let rtt = topology.rtt_ms(MOVE_HOME, MOVE_AWAY);
    let gap = Duration::from_millis(args.move_gap_ms);
    let admin = dev.client(MOVE_HOME)?;
    let map = committed_map(&admin).await?;
    let group_id = |name: &str| {
        map.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id)
            .with_context(|| format!("the topology has no group {name}"))
    };
    let (home_id, away_id) = (group_id(MOVE_HOME)?, group_id(MOVE_AWAY)?);
    let global_id = map
        .groups
        .iter()
        .find(|g| g.name == "global")
        .map(|g| g.id)
        .unwrap_or(0);
    println!(
        "\n3. online moves of {MOVE_PREFIX} ({} keys of 100 bytes): {} moves alternating group \
         {MOVE_AWAY} and back to {MOVE_HOME} (round trip {rtt} ms), {} ms apart",
        args.move_keys, args.moves, args.move_gap_ms
    );
    let loaded = preload(dev, MOVE_PREFIX, args.move_keys).await?;
    println!(
        "  preloaded {} keys in {:.1} s ({:.0} keys/s; txns of {PRELOAD_TXN_OPS} puts, {PRELOAD_CONCURRENCY} in flight)",
        args.move_keys,
        loaded.as_secs_f64(),
        args.move_keys as f64 / loaded.as_secs_f64().max(1e-9)
    );
    println!(
        "  leaders: group {MOVE_HOME} in {}, group {MOVE_AWAY} in {}, global group in {}",
        leader_region(&admin, home_id).await,
        leader_region(&admin, away_id).await,
        leader_region(&admin, global_id).await
    );

    // Writers: under the moving prefix from us-east, and two other domains.
    let running = Arc::new(AtomicBool::new(true));
    let stop = StopOnDrop(running.clone());
    let t0 = Instant::now();
    // The writers' own bound, whatever happens here: the whole part at its slowest, capped.
    let budget = Duration::from_secs(args.seconds.saturating_mul(2).saturating_add(60))
        .saturating_add(
            Duration::from_secs(args.move_timeout)
                .saturating_add(gap)
                .saturating_mul(u32::try_from(args.moves).unwrap_or(u32::MAX)),
        )
        .min(Duration::from_secs(7 * 86_400));
    let hard_stop = t0 + budget;
    let other = [
        (MOVE_AWAY, "/eu-west/bench-other/"),
        (MOVE_HOME, "/us-east/other/"),
    ];
    let steady = tokio::spawn(writer(
        dev.client(MOVE_HOME)?,
        MOVE_PREFIX.to_string(),
        WRITER_KEYS,
        t0,
        running.clone(),
        hard_stop,
    ));
    let mut readers = Vec::new();
    for region in [MOVE_HOME, MOVE_AWAY] {
        readers.push((
            region,
            tokio::spawn(reader(
                dev.client(region)?,
                MOVE_PREFIX.to_string(),
                WRITER_KEYS,
                t0,
                running.clone(),
                hard_stop,
            )),
        ));
    }
    let mut others = Vec::new();
    for (region, prefix) in other {
        others.push((
            region,
            prefix,
            tokio::spawn(writer(
                dev.client(region)?,
                prefix.to_string(),
                WRITER_KEYS,
                t0,
                running.clone(),
                hard_stop,
            )),
        ));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let mut windows = Vec::new();
    for i in 0..args.moves {
        let (to, to_id) = if i % 2 == 0 {
            (MOVE_AWAY, away_id)
        } else {
            (MOVE_HOME, home_id)
        };
        let w = one_move(
            &admin,
            t0,
            to,
            to_id,
            Duration::from_secs(args.move_timeout),
        )
        .await
        .with_context(|| format!("move {} of {}", i + 1, args.moves))?;
        windows.push(w);
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let end = t0.elapsed();
    drop(stop);
    let steady = join_writer(MOVE_PREFIX, steady).await?;
    let mut other_writes = Vec::new();
    for (region, prefix, h) in others {
        other_writes.push((region, prefix, join_writer(prefix, h).await?));
    }
    let mut reads = Vec::new();
    for (region, h) in readers {
        reads.push((region, join_writer(MOVE_PREFIX, h).await?));
    }

    // Per move: the longest write that overlapped it, against the writes to the new owner in
    // the gap after it.
    println!(
        "\n  per move (times from the move call; the writer: closed loop from the {MOVE_HOME} \
         endpoint, keys {MOVE_PREFIX}w000..w{:03})",
        WRITER_KEYS - 1
    );
    println!("  | # | to | move id | begun (acked) ms | new owner at us-east router ms | finished (moves_done) ms | writes overlapping | pause ms | longest write from → to ms | new-owner write p50 ms | extra ms | failed writes | other domains' longest write ms |");
    println!("  |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut pause_all = hist();
    // Per direction: [pause, extra, new-owner write p50].
    let mut by_dir: BTreeMap<&str, [Histogram<u64>; 3]> = BTreeMap::new();
    let (mut commit_h, mut finish_h) = (hist(), hist());
    for (i, w) in windows.iter().enumerate() {
        let (b, f) = (w.begin, w.end());
        let overlapping: Vec<&Sample> = steady
            .samples
            .iter()
            .filter(|s| s.start < f && s.end() > b)
            .collect();
        let longest = overlapping.iter().max_by_key(|s| s.lat);
        let pause = longest.map(|s| s.lat).unwrap_or_default();
        // When the longest write started and ended, from the move call (negative: before it).
        let (from, to) = longest
            .map(|s| (ms_of(s.start) - ms_of(b), ms_of(s.end()) - ms_of(b)))
            .unwrap_or_default();
        let failed = overlapping.iter().filter(|s| !s.ok).count();
        let next = windows.get(i + 1).map(|n| n.begin).unwrap_or(end);
        let (after, _) = in_spans(&steady.samples, &[(f, next)]);
        let base = if after.is_empty() {
            0.0
        } else {
            ms(&after, 0.5)
        };
        let extra = ms_of(pause) - base;
        let others_max = other_writes
            .iter()
            .map(|(_, prefix, w)| {
                let (h, _) = in_spans(&w.samples, &[(b, f)]);
                format!("{prefix} {:.0}", h.max() as f64 / 1000.0)
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {from:.0} → {to:.0} | {:.1} | {:.1} | {failed} | {others_max} |",
            i + 1,
            w.to,
            w.id,
            ms_of(w.acked),
            ms_of(w.committed),
            ms_of(w.finished),
            overlapping.len(),
            ms_of(pause),
            base,
            extra
        );
        pause_all.saturating_record(pause.as_micros() as u64);
        let d = by_dir
            .entry(w.to)
            .or_insert_with(|| [hist(), hist(), hist()]);
        d[0].saturating_record(pause.as_micros() as u64);
        d[1].saturating_record((extra.max(0.0) * 1000.0) as u64);
        d[2].saturating_record((base * 1000.0) as u64);
        commit_h.saturating_record(w.committed.as_micros() as u64);
        finish_h.saturating_record(w.finished.as_micros() as u64);
    }

    // Other domains: before, during, between and after the moves.
    let first = windows.first().map(|w| w.begin).unwrap_or(end);
    let last = windows.last().map(|w| w.end()).unwrap_or(end);
    let during: Vec<(Duration, Duration)> = windows.iter().map(|w| (w.begin, w.end())).collect();
    let copying: Vec<(Duration, Duration)> = windows
        .iter()
        .map(|w| (w.begin, w.begin + w.committed))
        .collect();
    let releasing: Vec<(Duration, Duration)> = windows
        .iter()
        .map(|w| (w.begin + w.committed, w.end()))
        .collect();
    let between: Vec<(Duration, Duration)> = windows
        .windows(2)
        .map(|p| (p[0].end(), p[1].begin))
        .collect();
    let mut outside = vec![(WARM_UP, first), (last, end)];
    outside.extend(between.iter().copied());
    println!("\n  other domains, one closed-loop writer each (latency p50 / p99 / max, ms)");
    println!("  | writer | period | seconds | writes | ops/s | p50 / p99 / max ms |");
    println!("  |---|---|---:|---:|---:|---:|");
    let mut local_p50 = 0.0;
    let mut ratios = Vec::new();
    for (region, prefix, w) in &other_writes {
        let mut rates = BTreeMap::new();
        for (period, spans) in [
            ("before the moves", vec![(WARM_UP, first)]),
            ("during moves", during.clone()),
            ("  of which: call → new owner seen", copying.clone()),
            ("  of which: new owner → finished", releasing.clone()),
            ("between moves", between.clone()),
            ("after the moves", vec![(last, end)]),
            ("outside moves (all)", outside.clone()),
        ] {
            let (h, total) = in_spans(&w.samples, &spans);
            let rate = h.len() as f64 / total.as_secs_f64().max(1e-9);
            println!(
                "  | {prefix} from {region} | {period} | {:.1} | {} | {rate:.0} | {} |",
                total.as_secs_f64(),
                h.len(),
                pct(&h)
            );
            rates.insert(period, (rate, h));
        }
        if let (Some((r_in, h_in)), Some((r_out, h_out))) =
            (rates.get("during moves"), rates.get("outside moves (all)"))
        {
            if *region == MOVE_HOME && !h_out.is_empty() {
                local_p50 = ms(h_out, 0.5);
            }
            ratios.push(format!(
                "{prefix}: ops/s during/outside {:.2}x, p99 during/outside {:.2}x",
                r_in / r_out.max(1e-9),
                if h_in.is_empty() || h_out.is_empty() {
                    f64::NAN
                } else {
                    ms(h_in, 0.99) / ms(h_out, 0.99)
                }
            ));
        }
    }

    println!(
        "\n  reads of {MOVE_PREFIX} (sequential), one closed-loop reader per region: served \
         throughout, paused from the freeze to the import"
    );
    println!("  | reader | period | reads | failed | p50 / p99 / max ms | longest read overlapping a move, per move |");
    println!("  |---|---|---:|---:|---:|---|");
    for (region, r) in &reads {
        let longest: Vec<String> = windows
            .iter()
            .map(|w| {
                let (h, _) = in_spans(&r.samples, &[(w.begin, w.end())]);
                format!("{:.0}", h.max() as f64 / 1000.0)
            })
            .collect();
        for (period, spans, per_move) in [
            ("during moves", during.clone(), longest.join(" ")),
            ("outside moves", outside.clone(), String::new()),
        ] {
            let (h, _) = in_spans(&r.samples, &spans);
            let failed = r
                .errors
                .iter()
                .filter(|(at, _)| spans.iter().any(|(a, b)| at >= a && at < b))
                .count();
            println!(
                "  | from {region} | {period} | {} | {failed} | {} | {per_move} |",
                h.len(),
                pct(&h)
            );
        }
    }

    println!(
        "\n  summary over {} moves (p50 / p99 / max, ms)",
        windows.len()
    );
    println!("  | | all | to {MOVE_AWAY} | to {MOVE_HOME} |");
    println!("  |---|---:|---:|---:|");
    let dir = |to: &str, k: usize| {
        by_dir
            .get(to)
            .map(|d| pct(&d[k]))
            .unwrap_or_else(|| "–".to_string())
    };
    println!(
        "  | write pause (longest write overlapping the move) | {} | {} | {} |",
        pct(&pause_all),
        dir(MOVE_AWAY, 0),
        dir(MOVE_HOME, 0)
    );
    println!(
        "  | new-owner write p50 after the move | | {} | {} |",
        dir(MOVE_AWAY, 2),
        dir(MOVE_HOME, 2)
    );
    println!(
        "  | extra (pause − new-owner write p50) | | {} | {} |",
        dir(MOVE_AWAY, 1),
        dir(MOVE_HOME, 1)
    );
    println!(
        "  | move call → new owner in the us-east router's map | {} | | |",
        pct(&commit_h)
    );
    println!(
        "  | move call → finished (moves_done, source released) | {} | | |",
        pct(&finish_h)
    );
    let target = 2.0 * rtt as f64 + local_p50;
    let p99 = ms(&pause_all, 0.99);
    println!(
        "  target: p99 pause < 2 × {rtt} ms + one fsync (taken as a local us-east write, p50 \
         {local_p50:.1} ms) = {target:.1} ms: p99 {p99:.1} ms, {}",
        if p99 < target { "met" } else { "NOT met" }
    );
    for r in &ratios {
        println!("  other domain {r} (target: unchanged within noise)");
    }
    let mut all_errors: Vec<(&str, &(Duration, String))> = steady
        .errors
        .iter()
        .map(|e| (MOVE_PREFIX, e))
        .chain(
            other_writes
                .iter()
                .flat_map(|(_, p, w)| w.errors.iter().map(move |e| (*p, e))),
        )
        .collect();
    all_errors.sort_by_key(|(_, (at, _))| *at);
    println!(
        "  failed writes: {} under {MOVE_PREFIX}, {} in other domains",
        steady.errors.len(),
        all_errors.len() - steady.errors.len()
    );
    for (prefix, (at, e)) in all_errors.iter().take(10) {
        let during_move = windows
            .iter()
            .position(|w| *at >= w.begin && *at < w.end())
            .map(|i| format!("during move {}", i + 1))
            .unwrap_or_else(|| "outside moves".to_string());
        println!(
            "    at {:.3} s ({during_move}), {prefix}: {e}",
            at.as_secs_f64()
        );
    }

    verify(dev, &steady, args.move_keys, windows.last().map(|w| w.to)).await
}

/// Every preloaded key and every key the writer wrote reads back (linearizable, from the
/// us-east endpoint) with its last acknowledged value — or, after failed writes, one of theirs
/// — nothing else is under the prefix, and the prefix's owner is the last move's target.
async fn verify(
    dev: &Dev,
    steady: &Writes,
    keys: usize,
    owner: Option<&str>,
) -> anyhow::Result<()> {
    let c = dev.client(MOVE_HOME)?;
    let kvs = c
        .range_all(MOVE_PREFIX, Consistency::Linearizable)
        .await
        .with_context(|| format!("reading {MOVE_PREFIX} back from {MOVE_HOME}"))?;
    let mut got: BTreeMap<String, Vec<u8>> = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let shown = |v: Option<&Vec<u8>>| match v {
        None => "absent".to_string(),
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
    };
    let mut problems = Vec::new();
    let mut count = 0usize;
    for i in 0..keys {
        let key = format!("{MOVE_PREFIX}k{i:05}");
        let want = value_of(i as u64);
        let v = got.remove(&key);
        if v.as_deref() != Some(want.as_bytes()) {
            count += 1;
            problems.push(format!(
                "preloaded {key}: want {want:?}, got {}",
                shown(v.as_ref())
            ));
        }
    }
    for (key, (acked, failed)) in &steady.last {
        let v = got.remove(key);
        let fine = match (&v, acked) {
            (Some(v), _) if failed.iter().any(|f| f.as_bytes() == v.as_slice()) => true,
            (Some(v), Some(a)) => a.as_bytes() == v.as_slice(),
            (None, None) => true,
            _ => false,
        };
        if !fine {
            count += 1;
            problems.push(format!(
                "{key}: last acknowledged {}, got {}",
                acked
                    .as_ref()
                    .map(|a| format!("{a:?}"))
                    .unwrap_or_else(|| "none".to_string()),
                shown(v.as_ref())
            ));
        }
    }
    for (key, v) in &got {
        count += 1;
        problems.push(format!("{key}: never written, got {}", shown(Some(v))));
    }
    let map = c.placement().await.context("reading the placement map")?;
    if let Some(owner) = owner {
        let now = map
            .domains
            .iter()
            .find(|d| d.prefix == MOVE_PREFIX)
            .map(|d| d.group_name.clone())
            .unwrap_or_default();
        if now != owner {
            count += 1;
            problems.push(format!(
                "{MOVE_PREFIX} is owned by group {now:?}, not by the last move's target {owner}"
            ));
        }
    }
    if count > 0 {
        problems.truncate(10);
        anyhow::bail!(
            "after the moves, {count} keys under {MOVE_PREFIX} did not read back as acknowledged \
             (first {}):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    println!(
        "  read back from {MOVE_HOME} (linearizable): all {keys} preloaded keys and the writer's {} keys hold their last acknowledged values; the prefix is owned by {}",
        steady.last.len(),
        owner.unwrap_or("-")
    );
    Ok(())
}
