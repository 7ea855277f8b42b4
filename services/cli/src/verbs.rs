//! The client verbs. Each runs against a [`Client`] session and returns a [`Rendered`] result;
//! `meridian shell` runs many of them, one per input line, in a single session.

use crate::output::{error_json, event_json, header_json, kv_json, Format, Rendered};
use crate::txn_parse;
use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_sdk::{pb, Client, Consistency, WatchEvent};
use serde_json::json;
use std::io::{BufRead, Read};
use std::process::ExitCode;

/// `--consistency sequential|linearizable|stale|stale:MS`.
fn parse_consistency(s: &str) -> Result<Consistency, String> {
    s.parse()
}

#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    key: String,
    value: Option<String>,
    /// Only if the key's version equals N (0: only if it does not exist).
    #[arg(long)]
    expected_version: Option<i64>,
    /// Only if the key's mod_revision equals N (0: only if it does not exist).
    #[arg(long)]
    expected_mod_revision: Option<i64>,
    /// Append a monotonic zero-padded suffix to KEY (ZooKeeper `create -s`).
    #[arg(long)]
    sequential: bool,
    /// Print the previous value.
    #[arg(long)]
    prev_kv: bool,
    /// Attach the key to this lease: it is deleted when the lease ends (an ephemeral key).
    #[arg(long, default_value_t = 0)]
    lease: u64,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Verb {
    /// Write KEY. Without VALUE, the value is read from stdin (as etcdctl does).
    Put(PutArgs),
    /// Read KEY, or every key under it with --prefix.
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Most keys to return with --prefix (0: server maximum).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Default: linearizable for a one-shot command (each is a new session, as etcdctl),
        /// sequential inside `meridian shell` (the session carries its revision).
        /// sequential | linearizable | stale:MS (any replica at most MS behind; reports its lag).
        #[arg(long, env = "MERIDIAN_CONSISTENCY", value_parser = parse_consistency)]
        consistency: Option<Consistency>,
    },
    /// Delete KEY, or every key under it with --prefix.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// List the direct children of PATH.
    Ls {
        #[arg(default_value = "/")]
        path: String,
        /// Default: linearizable for a one-shot command (each is a new session, as etcdctl),
        /// sequential inside `meridian shell` (the session carries its revision).
        /// sequential | linearizable | stale:MS (any replica at most MS behind; reports its lag).
        #[arg(long, env = "MERIDIAN_CONSISTENCY", value_parser = parse_consistency)]
        consistency: Option<Consistency>,
    },
    /// Atomic transaction: if every --if holds, run the --then ops, else the --else ops.
    Txn {
        /// 'value KEY = V' | 'version|mod|create KEY (=|!=|>|<) N' | 'exists KEY' | 'missing KEY'
        #[arg(long = "if")]
        compare: Vec<String>,
        /// 'put KEY VALUE' | 'del KEY' | 'delprefix PREFIX' | 'get KEY'
        #[arg(long = "then")]
        success: Vec<String>,
        #[arg(long = "else")]
        failure: Vec<String>,
    },
    /// Stream changes of KEY (or under it with --prefix), from --rev (default: now).
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Stop after this many changes (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// The node's groups: leader, term, log, commit and applied indexes, members.
    Status,
}

pub async fn run_one(client: Client, format: Format, verb: Verb) -> anyhow::Result<ExitCode> {
    if let Verb::Put(args @ PutArgs { value: None, .. }) = verb {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the value from stdin")?;
        return finish(format, put(&client, args, buf).await);
    }
    if let Verb::Watch {
        key,
        prefix,
        rev,
        count,
    } = verb
    {
        return watch(&client, format, key, prefix, rev, count).await;
    }
    finish(format, run_verb(&client, verb, DefaultRead::OneShot).await)
}

fn finish(format: Format, res: Result<Rendered, meridian_sdk::Error>) -> anyhow::Result<ExitCode> {
    match res {
        Ok(r) => {
            r.print(format);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_error(format, &e);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_error(format: Format, e: &meridian_sdk::Error) {
    match format {
        Format::Json => println!("{}", error_json(e)),
        Format::Human => eprintln!("error: {e}"),
    }
}

async fn put(
    client: &Client,
    args: PutArgs,
    value: Vec<u8>,
) -> Result<Rendered, meridian_sdk::Error> {
    let r = client
        .put_request(pb::PutRequest {
            key: args.key.into_bytes(),
            value,
            expected_version: args.expected_version,
            expected_mod_revision: args.expected_mod_revision,
            sequential: args.sequential,
            lease: args.lease,
            prev_kv: args.prev_kv,
            session: None,
        })
        .await?;
    let rev = r.header.as_ref().map_or(0, |h| h.revision);
    if !r.succeeded {
        let current = r.current.as_ref().map(kv_json);
        return Ok(Rendered {
            human: format!("NOT WRITTEN {} (condition failed)", r.key),
            json: json!({"succeeded": false, "key": r.key, "current": current, "header": header_json(r.header.as_ref())}),
        });
    }
    let mut human = format!("OK {} revision {rev}", r.key);
    if let Some(p) = &r.prev_kv {
        human.push_str(&format!(
            "\nprevious: {}",
            String::from_utf8_lossy(&p.value)
        ));
    }
    Ok(Rendered {
        human,
        json: json!({"succeeded": true, "key": r.key, "revision": rev, "prev_kv": r.prev_kv.as_ref().map(kv_json), "header": header_json(r.header.as_ref())}),
    })
}

/// How a command reads when it does not say: a one-shot command is a session of one
/// operation, so only a linearizable read shows it what earlier commands wrote.
#[derive(Clone, Copy)]
enum DefaultRead {
    OneShot,
    Session,
}

fn read_level(given: Option<Consistency>, default: DefaultRead) -> Consistency {
    match (given, default) {
        (Some(c), _) => c,
        (None, DefaultRead::OneShot) => Consistency::Linearizable,
        (None, DefaultRead::Session) => Consistency::Sequential,
    }
}

async fn run_verb(
    client: &Client,
    verb: Verb,
    default: DefaultRead,
) -> Result<Rendered, meridian_sdk::Error> {
    match verb {
        Verb::Put(mut args) => {
            let value = args.value.take().unwrap_or_default().into_bytes();
            put(client, args, value).await
        }
        Verb::Get {
            key,
            prefix: false,
            consistency,
            ..
        } => {
            let r = client
                .get_with(&key, read_level(consistency, default))
                .await?;
            match &r.kv {
                Some(kv) => Ok(Rendered {
                    human: String::from_utf8_lossy(&kv.value).into_owned(),
                    json: json!({"found": true, "kv": kv_json(kv), "header": header_json(r.header.as_ref())}),
                }),
                None => Err(meridian_sdk::Error::Other {
                    code: tonic::Code::NotFound,
                    message: format!("key {key} not found"),
                }),
            }
        }
        Verb::Get {
            key,
            prefix: true,
            limit,
            consistency,
        } => {
            let r = client
                .range(
                    pb::RangeRequest {
                        prefix: key.into_bytes(),
                        limit,
                        ..Default::default()
                    },
                    read_level(consistency, default),
                )
                .await?;
            let human = r
                .kvs
                .iter()
                .map(|kv| format!("{}\n{}", kv.key, String::from_utf8_lossy(&kv.value)))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Rendered {
                human,
                json: json!({"kvs": r.kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": r.more, "header": header_json(r.header.as_ref())}),
            })
        }
        Verb::Del {
            key,
            prefix,
            expected_version,
        } => {
            let r = client
                .delete(pb::DeleteRequest {
                    key: key.into_bytes(),
                    prefix,
                    expected_version,
                    ..Default::default()
                })
                .await?;
            if !r.succeeded {
                return Ok(Rendered {
                    human: "NOT DELETED (condition failed)".into(),
                    json: json!({"succeeded": false, "deleted": 0, "header": header_json(r.header.as_ref())}),
                });
            }
            Ok(Rendered {
                human: format!("{}", r.deleted),
                json: json!({"succeeded": true, "deleted": r.deleted, "header": header_json(r.header.as_ref())}),
            })
        }
        Verb::Ls { path, consistency } => {
            let mut children = Vec::new();
            let mut after = Vec::new();
            let mut header = None;
            loop {
                let r = client
                    .list(
                        pb::ListRequest {
                            path: path.clone().into_bytes(),
                            after: after.clone(),
                            ..Default::default()
                        },
                        read_level(consistency, default),
                    )
                    .await?;
                header = r.header.or(header);
                if let Some(last) = r.children.last() {
                    after = last.clone().into_bytes();
                }
                children.extend(r.children);
                if !r.more {
                    break;
                }
            }
            Ok(Rendered {
                human: children.join("\n"),
                json: json!({"children": children, "header": header_json(header.as_ref())}),
            })
        }
        Verb::Txn {
            compare,
            success,
            failure,
        } => {
            let bad = |m: String| meridian_sdk::Error::InvalidArgument {
                rule: "txn_syntax".into(),
                message: m,
            };
            let req = pb::TxnRequest {
                compare: compare
                    .iter()
                    .map(|c| txn_parse::compare(c))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                success: success
                    .iter()
                    .map(|o| txn_parse::op(o))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                failure: failure
                    .iter()
                    .map(|o| txn_parse::op(o))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                session: None,
            };
            let r = client.txn(req).await?;
            let mut lines = vec![if r.succeeded {
                "SUCCESS".to_string()
            } else {
                "FAILURE".to_string()
            }];
            let mut results = Vec::new();
            for res in &r.results {
                match &res.result {
                    Some(pb::txn_op_result::Result::Put(p)) => {
                        lines.push(format!("OK {}", p.key));
                        results.push(json!({"put": {"key": p.key, "succeeded": p.succeeded}}));
                    }
                    Some(pb::txn_op_result::Result::Delete(d)) => {
                        lines.push(format!("{}", d.deleted));
                        results.push(json!({"delete": {"deleted": d.deleted}}));
                    }
                    Some(pb::txn_op_result::Result::Get(g)) => {
                        lines.push(g.kv.as_ref().map_or(String::new(), |kv| {
                            String::from_utf8_lossy(&kv.value).into_owned()
                        }));
                        results.push(json!({"get": g.kv.as_ref().map(kv_json)}));
                    }
                    None => {}
                }
            }
            Ok(Rendered {
                human: lines.join("\n"),
                json: json!({"succeeded": r.succeeded, "results": results, "header": header_json(r.header.as_ref())}),
            })
        }
        Verb::Status => {
            let s = client.status(true).await?;
            Ok(render_status(&s))
        }
        Verb::Watch { .. } => Err(meridian_sdk::Error::Config("watch cannot run here".into())),
    }
}

async fn watch(
    client: &Client,
    format: Format,
    key: String,
    prefix: bool,
    rev: i64,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if rev < 0 {
        let e = meridian_sdk::Error::InvalidArgument {
            rule: "negative_revision".into(),
            message: format!("--rev is {rev}; revisions are never negative"),
        };
        print_error(format, &e);
        return Ok(ExitCode::FAILURE);
    }
    let mut w = client.watch(&key, prefix, rev as u64);
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|c| seen >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        let ev = tokio::select! {
            ev = w.next() => ev,
            _ = crate::wait_for_signal() => return Ok(ExitCode::SUCCESS),
        };
        match ev {
            Ok(WatchEvent::Changes { revision, events }) => {
                for e in &events {
                    seen += 1;
                    match format {
                        Format::Json => {
                            println!("{}", json!({"revision": revision, "event": event_json(e)}))
                        }
                        Format::Human => {
                            let kind = if e.r#type == pb::event::EventType::Delete as i32 {
                                "DELETE"
                            } else {
                                "PUT"
                            };
                            let kv = e.kv.clone().unwrap_or_default();
                            println!(
                                "{kind} {} {} (revision {revision})",
                                kv.key,
                                String::from_utf8_lossy(&kv.value)
                            );
                        }
                    }
                }
            }
            Ok(WatchEvent::Progress { .. }) => {}
            Err(e) => {
                print_error(format, &e);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

/// One line of `meridian shell`: the same verbs as the command line.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct ShellLine {
    #[command(subcommand)]
    verb: Verb,
}

/// Runs every line of stdin in one session; prints one result line per command. Exits
/// non-zero if any command failed.
pub async fn shell(client: Client, format: Format) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut failed = false;
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let result = match shlex::split(trimmed) {
            None => Err(meridian_sdk::Error::InvalidArgument {
                rule: "shell_syntax".into(),
                message: format!("unbalanced quotes in {trimmed:?}"),
            }),
            Some(words) => match ShellLine::try_parse_from(words) {
                Err(e) => Err(meridian_sdk::Error::InvalidArgument {
                    rule: "shell_syntax".into(),
                    message: e
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or("bad command")
                        .to_string(),
                }),
                Ok(ShellLine {
                    verb: Verb::Watch { .. },
                }) => Err(meridian_sdk::Error::InvalidArgument {
                    rule: "shell_syntax".into(),
                    message: "watch streams forever; run it as its own command".into(),
                }),
                Ok(ShellLine { verb }) => run_verb(&client, verb, DefaultRead::Session).await,
            },
        };
        match result {
            Ok(r) => match format {
                Format::Json => println!("{}", r.json),
                Format::Human => println!("{}", r.human.replace('\n', " | ")),
            },
            Err(e) => {
                failed = true;
                match format {
                    Format::Json => println!("{}", error_json(&e)),
                    Format::Human => println!("error: {e}"),
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn lag_text(ms: u64) -> String {
    if ms == u64::MAX {
        "?".into()
    } else {
        format!("{ms}ms")
    }
}

/// `meridian status`: every group, its leader, and each replica's applied index and lag, from
/// the answering node and every node it could reach.
fn render_status(s: &pb::StatusResponse) -> Rendered {
    let mut all: Vec<&pb::StatusResponse> = vec![s];
    all.extend(s.nodes.iter());
    all.sort_by_key(|n| n.node);
    let mut groups: std::collections::BTreeMap<u64, Vec<(&pb::StatusResponse, &pb::GroupStatus)>> =
        std::collections::BTreeMap::new();
    for n in &all {
        for g in &n.groups {
            groups.entry(g.group).or_default().push((n, g));
        }
    }
    let mut human = format!(
        "answered by node {} ({}) in region {}, version {}; {} nodes reporting",
        s.node,
        s.address,
        s.region,
        s.version,
        all.len()
    );
    let mut json_groups = Vec::new();
    for (id, replicas) in &groups {
        let name = replicas.first().map_or("", |(_, g)| g.name.as_str());
        let leader = replicas.iter().find(|(_, g)| g.state == "Leader");
        let (commit, term, leader_node) =
            leader.map_or((0, 0, 0), |(n, g)| (g.committed, g.term, n.node));
        human.push_str(&format!(
            "\ngroup {id} {name}: leader {} term {term} commit {commit}",
            if leader_node == 0 {
                "none".to_string()
            } else {
                format!("node {leader_node}")
            }
        ));
        let mut rows = Vec::new();
        for (n, g) in replicas {
            let lag_entries = leader
                .and_then(|(_, lg)| lg.members.iter().find(|m| m.node == n.node))
                .map(|m| m.lag_entries);
            human.push_str(&format!(
                "\n  node {:<3} {:<14} {:<7} {:<9} applied {:<8} lag {} entries, {}",
                n.node,
                n.region,
                g.role,
                g.state,
                g.applied,
                lag_entries.map_or("?".into(), |e| e.to_string()),
                lag_text(g.lag_ms)
            ));
            rows.push(json!({
                "node": n.node, "region": n.region, "address": n.address, "role": g.role,
                "state": g.state, "applied": g.applied, "last_log_index": g.last_log_index,
                "lag_entries": lag_entries, "lag_ms": (g.lag_ms != u64::MAX).then_some(g.lag_ms),
                "syncs_sent": g.syncs_sent, "synced_reads": g.synced_reads,
                "compacted_revision": g.compacted_revision,
            }));
        }
        // Drift as the leader's replica (else the first) sees the membership.
        let drift = leader
            .or(replicas.first())
            .map(|(_, g)| g.drift.clone())
            .unwrap_or_default();
        for d in &drift {
            human.push_str(&format!("\n  drift: {d}"));
        }
        json_groups.push(json!({
            "group": id, "name": name, "leader": leader_node, "term": term, "committed": commit,
            "replicas": rows, "drift": drift,
        }));
    }
    for u in &s.unreachable {
        human.push_str(&format!("\nunreachable: {u}"));
    }
    // Refused requests (tokens, TLS handshakes, peer admission; docs/security.md), per node.
    let refused: Vec<(u64, u64)> = all
        .iter()
        .filter(|n| n.auth_refused > 0)
        .map(|n| (n.node, n.auth_refused))
        .collect();
    if !refused.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|(node, r)| format!("node {node}: {r}"))
            .collect();
        human.push_str(&format!("\nrefused requests: {}", list.join(", ")));
    }
    let refused_json: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .map(|n| (n.node.to_string(), json!(n.auth_refused)))
        .collect();
    Rendered {
        human,
        json: json!({
            "node": s.node, "address": s.address, "region": s.region, "version": s.version,
            "groups": json_groups, "unreachable": s.unreachable, "auth_refused": refused_json,
        }),
    }
}
