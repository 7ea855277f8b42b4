//! `meridian lease …`, `meridian lock NAME -- COMMAND…`, `meridian elect NAME [VALUE]`.

use crate::output::Format;
use anyhow::Context;
use meridian_sdk::{pb, Client, LockOptions, Session};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code of `meridian lock` when the lock was lost while COMMAND ran.
pub const EXIT_LOCK_LOST: u8 = 3;
/// Exit code of a try (`--wait 0`) that found the lock taken.
pub const EXIT_BUSY: u8 = 2;

pub(crate) fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} must be a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(clap::Subcommand, Debug)]
pub enum LeaseCmd {
    /// Grant a lease in the group owning PATH (a key or prefix of its domain); prints its id.
    Grant {
        path: String,
        /// Time to live, seconds.
        #[arg(long, value_parser = secs, default_value = "10")]
        ttl: Duration,
    },
    /// Keep leases alive (until Ctrl-C, or once with --once).
    Keepalive {
        #[arg(required = true)]
        ids: Vec<u64>,
        #[arg(long)]
        once: bool,
        /// Seconds between keepalives (default: a third of the lease's TTL).
        #[arg(long, value_parser = secs)]
        every: Option<Duration>,
    },
    /// Revoke a lease: its keys are deleted and its locks released at once.
    Revoke { id: u64 },
    /// A lease's TTL and what is left of it on the group leader's clock.
    Ttl {
        id: u64,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// Lease ids of the group owning PATH (default: every group of the endpoint).
    List {
        #[arg(default_value = "")]
        path: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// The lock's name: a path whose domain decides its group (a domain of the global group
    /// makes it a Global Lock).
    name: String,
    /// Session TTL, seconds: the lock is freed this long after this process stops keeping it.
    #[arg(long, value_parser = secs, default_value = "10")]
    ttl: Duration,
    /// Longest wait for the lock, seconds (0: try once; exit 2 when taken).
    #[arg(long, value_parser = secs, default_value = "60")]
    wait: Duration,
    /// After a lost session (not a release), keep the lock unavailable this long, seconds.
    #[arg(long, value_parser = secs, default_value = "0")]
    lock_delay: Duration,
    /// Take a shared (read) lock of a read-write lock.
    #[arg(long, conflicts_with = "semaphore")]
    shared: bool,
    /// Exclusive (write) lock of a read-write lock.
    #[arg(long, conflicts_with_all = ["semaphore", "shared"])]
    write: bool,
    /// Take one of N slots of a semaphore.
    #[arg(long)]
    semaphore: Option<u32>,
    /// When the lock is lost: SIGTERM, then SIGKILL after this many seconds.
    #[arg(long, value_parser = secs, default_value = "2")]
    kill_after: Duration,
    /// The command to run while holding the lock (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ElectArgs {
    /// The election's name (a path).
    name: String,
    /// Campaign with this value and hold leadership until Ctrl-C; without it, print the
    /// leader and every change (observe).
    value: Option<String>,
    /// Session TTL, seconds.
    #[arg(long, value_parser = secs, default_value = "10")]
    ttl: Duration,
    /// Stop observing after this many leader changes (observe only).
    #[arg(long)]
    count: Option<usize>,
}

fn print(format: Format, human: String, value: serde_json::Value) {
    match format {
        Format::Human => println!("{human}"),
        Format::Json => println!("{value}"),
    }
}

fn token_str(t: Option<&pb::FencingToken>) -> String {
    t.map(|t| format!("{}:{}", t.group, t.revision))
        .unwrap_or_default()
}

pub async fn lease(client: Client, format: Format, cmd: LeaseCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        LeaseCmd::Grant { path, ttl } => {
            let r = client.lease_grant(&path, ttl).await?;
            print(
                format,
                format!("lease {} granted with TTL {} ms", r.id, r.ttl_ms),
                json!({"id": r.id, "ttl_ms": r.ttl_ms}),
            );
        }
        LeaseCmd::Keepalive { ids, once, every } => loop {
            let r = client
                .lease_keep_alive(&ids, Duration::from_secs(5))
                .await?;
            let mut gone = false;
            let mut min_ttl = u64::MAX;
            for res in &r.results {
                if res.found {
                    min_ttl = min_ttl.min(res.ttl_ms);
                    print(
                        format,
                        format!("lease {} kept alive, TTL {} ms", res.id, res.ttl_ms),
                        json!({"id": res.id, "found": true, "ttl_ms": res.ttl_ms}),
                    );
                } else {
                    gone = true;
                    print(
                        format,
                        format!("lease {} is gone (expired or revoked)", res.id),
                        json!({"id": res.id, "found": false}),
                    );
                }
            }
            if gone {
                return Ok(ExitCode::FAILURE);
            }
            if once {
                break;
            }
            let pause = every.unwrap_or(Duration::from_millis(min_ttl / 3));
            tokio::select! {
                _ = crate::wait_for_signal() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        },
        LeaseCmd::Revoke { id } => {
            let r = client.lease_revoke(id).await?;
            print(
                format,
                format!("lease {id} revoked; {} keys deleted", r.keys_deleted),
                json!({"id": id, "keys_deleted": r.keys_deleted}),
            );
        }
        LeaseCmd::Ttl { id, keys } => {
            let r = client.lease_time_to_live(id, keys).await?;
            let remaining = if r.remaining_ms < 0 {
                "unknown (leader unreachable)".to_string()
            } else {
                format!("{} ms", r.remaining_ms)
            };
            let mut human = format!("lease {id}: TTL {} ms, remaining {remaining}", r.ttl_ms);
            if keys {
                human.push_str(&format!(", keys {:?}", r.keys));
            }
            print(
                format,
                human,
                json!({"id": id, "ttl_ms": r.ttl_ms, "remaining_ms": r.remaining_ms,
                       "idle_ms": r.idle_ms, "keys": r.keys}),
            );
        }
        LeaseCmd::List { path } => {
            let r = client.lease_list(&path).await?;
            match format {
                Format::Human => {
                    for id in &r.ids {
                        println!("{id}");
                    }
                }
                Format::Json => println!("{}", json!({"ids": r.ids})),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends SIGTERM to `pid` (through kill(1): this crate has no unsafe code).
fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

pub async fn lock(client: Client, format: Format, args: LockArgs) -> anyhow::Result<ExitCode> {
    let session = Session::new(client, args.ttl);
    let (kind, mode, limit) = match (args.semaphore, args.shared, args.write) {
        (Some(n), _, _) => (pb::LockKind::Semaphore, pb::LockMode::Shared, n),
        (None, true, _) => (pb::LockKind::ReadWrite, pb::LockMode::Shared, 0),
        (None, false, true) => (pb::LockKind::ReadWrite, pb::LockMode::Exclusive, 0),
        (None, false, false) => (pb::LockKind::Mutex, pb::LockMode::Exclusive, 0),
    };
    let opts = LockOptions {
        kind,
        mode,
        limit,
        wait: (!args.wait.is_zero()).then_some(args.wait),
        lock_delay: args.lock_delay,
        value: format!("pid {}", std::process::id()).into_bytes(),
    };
    let Some(guard) = session.lock(&args.name, opts).await? else {
        eprintln!("lock {:?} is held by someone else", args.name);
        return Ok(ExitCode::from(EXIT_BUSY));
    };
    let token = guard.token_string();
    print(
        format,
        format!("acquired {} (fencing token {token})", args.name),
        json!({"acquired": args.name, "key": guard.key(), "token": token}),
    );
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("MERIDIAN_FENCING_TOKEN", &token)
        .env("MERIDIAN_LOCK_KEY", guard.key())
        .env("MERIDIAN_LOCK_NAME", &args.name)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program:?}"))?;
    let pid = child.id();
    enum End {
        Exited(std::io::Result<std::process::ExitStatus>),
        Lost(String),
        Signal,
    }
    let end = tokio::select! {
        s = child.wait() => End::Exited(s),
        ev = guard.lost() => End::Lost(match ev { meridian_sdk::SessionEvent::Lost { reason } => reason }),
        _ = crate::wait_for_signal() => End::Signal,
    };
    match end {
        End::Exited(status) => {
            let _ = guard.release().await;
            let code = status
                .ok()
                .and_then(|s| s.code())
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1);
            Ok(ExitCode::from(code))
        }
        End::Lost(reason) => {
            eprintln!(
                "lock {:?} lost ({reason}); terminating the command (SIGTERM, SIGKILL after {:?})",
                args.name, args.kill_after
            );
            stop(&mut child, pid, args.kill_after).await;
            Ok(ExitCode::from(EXIT_LOCK_LOST))
        }
        End::Signal => {
            stop(&mut child, pid, args.kill_after).await;
            let _ = guard.release().await;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within `grace`.
async fn stop(child: &mut tokio::process::Child, pid: Option<u32>, grace: Duration) {
    if let Some(pid) = pid {
        terminate(pid);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

pub async fn elect(client: Client, format: Format, args: ElectArgs) -> anyhow::Result<ExitCode> {
    let Some(value) = args.value else {
        let mut stream = client.observe(&args.name).await?;
        let mut seen = 0usize;
        while let Some(r) = stream.message().await? {
            if r.has_leader {
                print(
                    format,
                    format!(
                        "{}: leader {} = {} (token {})",
                        args.name,
                        r.key,
                        String::from_utf8_lossy(&r.value),
                        token_str(r.token.as_ref())
                    ),
                    json!({"name": args.name, "leader": r.key,
                           "value": String::from_utf8_lossy(&r.value),
                           "token": token_str(r.token.as_ref())}),
                );
            } else {
                print(
                    format,
                    format!("{}: no leader", args.name),
                    json!({"name": args.name, "leader": null}),
                );
            }
            seen += 1;
            if args.count.is_some_and(|c| seen >= c) {
                break;
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let session = Session::new(client, args.ttl);
    let guard = loop {
        tokio::select! {
            r = session.campaign(&args.name, value.as_bytes(), Duration::from_secs(300)) => match r {
                Ok(g) => break g,
                // Not elected within the wait: campaign again.
                Err(meridian_sdk::Error::Other { code: tonic::Code::DeadlineExceeded, .. }) => continue,
                Err(e) => return Err(e.into()),
            },
            _ = crate::wait_for_signal() => return Ok(ExitCode::FAILURE),
        }
    };
    print(
        format,
        format!(
            "elected leader of {} with {value:?} (token {})",
            args.name,
            guard.token_string()
        ),
        json!({"elected": args.name, "key": guard.key(), "value": value, "token": guard.token_string()}),
    );
    tokio::select! {
        ev = guard.lost() => {
            eprintln!("leadership of {:?} lost: {ev:?}", args.name);
            return Ok(ExitCode::from(EXIT_LOCK_LOST));
        }
        _ = crate::wait_for_signal() => {}
    }
    guard.release().await?;
    Ok(ExitCode::SUCCESS)
}

/// `meridian lock-probe`: a deliberately naive lock client for fault tests. It takes lock
/// NAME again and again; while holding, it writes to a resource server (one TCP line
/// `CLIENT GROUP:REVISION`, answered `ok` or `rejected`) every 50 ms *without* first checking
/// that its session is still alive — exactly the client that fencing tokens protect against.
/// It records every acquire, write and hold (wall-clock ns, for a history checker) as JSON
/// lines in `--out`.
#[derive(clap::Args, Debug)]
pub struct LockProbeArgs {
    name: String,
    #[arg(long)]
    client: String,
    #[arg(long, default_value_t = 3000)]
    ttl_ms: u64,
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    #[arg(long)]
    seconds: u64,
    /// host:port of the resource server.
    #[arg(long)]
    resource: String,
    #[arg(long)]
    out: std::path::PathBuf,
}

fn wall_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A monotonic instant as wall-clock ns (for recording only).
fn wall_of(at: tokio::time::Instant) -> u128 {
    let now = tokio::time::Instant::now();
    let wall = wall_ns();
    if at >= now {
        wall + (at - now).as_nanos()
    } else {
        wall.saturating_sub((now - at).as_nanos())
    }
}

async fn resource_write(addr: &str, client: &str, token: &str) -> Option<bool> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("{client} {token}\n").as_bytes())
            .await
            .ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.ok()?;
        Some(line.trim() == "ok")
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
}

pub async fn lock_probe(client: Client, args: LockProbeArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let mut record = |v: serde_json::Value| -> anyhow::Result<()> {
        writeln!(out, "{v}")?;
        out.flush()?;
        Ok(())
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let ttl = Duration::from_millis(args.ttl_ms);
    let mut session = Session::new(client.clone(), ttl);
    while tokio::time::Instant::now() < end {
        if session.is_lost() {
            session = Session::new(client.clone(), ttl);
        }
        let opts = LockOptions {
            wait: Some(Duration::from_secs(5)),
            value: args.client.clone().into_bytes(),
            ..LockOptions::default()
        };
        let guard = match session.lock(&args.name, opts).await {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(e) => {
                record(
                    json!({"client": args.client, "event": "error", "at": wall_ns().to_string(), "error": e.to_string()}),
                )?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let acquired_at = wall_ns();
        let token = guard.token_string();
        record(
            json!({"client": args.client, "event": "acquired", "token": token, "at": acquired_at.to_string()}),
        )?;
        let hold_end = tokio::time::Instant::now() + Duration::from_millis(args.hold_ms);
        let write = |last: bool| {
            let (resource, client, token) =
                (args.resource.clone(), args.client.clone(), token.clone());
            async move {
                let at = wall_ns();
                let ok = resource_write(&resource, &client, &token).await;
                json!({"client": client, "event": "write", "token": token,
                       "at": at.to_string(), "ok": ok, "last": last})
            }
        };
        loop {
            // Naive on purpose: writes first, looks at the session after.
            record(write(false).await)?;
            if session.is_lost() || tokio::time::Instant::now() >= hold_end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And one last write to flush its work before releasing — still without looking.
        record(write(true).await)?;
        let lost = session.is_lost();
        let deadline = session.deadline().map(wall_of).unwrap_or(0);
        let released_at = wall_ns();
        if !lost {
            let _ = guard.release().await;
        }
        let valid_until = if lost {
            deadline
        } else {
            released_at.min(deadline)
        };
        record(
            json!({"client": args.client, "event": "held", "token": token,
                      "acquired_at": acquired_at.to_string(), "valid_until": valid_until.to_string(),
                      "lost": lost}),
        )?;
    }
    let _ = session.close().await;
    Ok(ExitCode::SUCCESS)
}
