//! Online domain moves (docs/placement.md, "online moves"): the driver and the copy step.
//!
//! A move is a durable state of the placement map in the global group; this module only ever
//! acts on what the map says, so a crash of whoever drives it loses nothing — the next leader of
//! the global group reads the map and repeats the step it stands at (every step is idempotent)
//! or, before the import, rolls the move back.
//!
//! | map step    | who does what                                                          |
//! |-------------|------------------------------------------------------------------------|
//! | `Begun`     | the driver asks a voter of the target for the copy: it pre-copies the subtree in pages (`Export` at the source, `Stage` at the target, writes go on), freezes the source (`FreezeAfter`: writes and reads under the prefix stop there; the answer is what changed since the first page), imports that (`ImportDelta` — from here the target owns the prefix) and commits `CommitMove{at}` in the global group |
//! | `Committed` | routers follow the map; the driver has the source release its copy in slices (`ReleaseSome`), then `FinishMove` |
//! | `Aborted`   | rolled back (a refused freeze, or a copy stuck for a minute, and the target's `Discard` came before any import): the source `Unfreeze`s, then `FinishMove` |
//!
//! **The import decides.** A router whose request the frozen source refuses hands it to the
//! move's target (`handover`: a write as `Command::AfterImport`, a read at the target's replica
//! once it holds the import) instead of waiting for its map, so the pause is the freeze's
//! answer crossing to the target, not a commit in the global group. So a rollback must ask the
//! target first: its `Discard` either comes before the import (which then changes nothing) or
//! finds it, and the move is committed instead (`abort`). The moved data never passes through
//! the driver: the copy runs on a replica of the target group, which the global group has
//! checked against every policy of the moved domains.

use crate::ctx::NodeCtx;
use crate::error::{Error, Result};
use meridian_consensus::GroupHandle;
use meridian_proto::peer::forward_client::ForwardClient;
use meridian_proto::peer::{MoveCopyReply, MoveCopyRequest};
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_types::hlc::Timestamp;
use meridian_types::{
    Command, CommandResult, DomainPlacement, GroupId, MoveCommand, MoveState, MoveStep,
    PlacementChange, PlacementMap,
};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the driver looks at the map when nothing wakes it.
const DRIVE_TICK: Duration = Duration::from_millis(200);
/// Pause after a step that failed for a reason that may pass (a leader election, a timeout).
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// A move that cannot get its source frozen or its copy made for this long (counted again
/// after a copy attempt that ran long enough to have made progress) is rolled back.
const STUCK_MAX: Duration = Duration::from_secs(60);
/// Most keys of one pre-copy page (each also bounded to 1 MiB by the source).
const PAGE_KEYS: u32 = 1000;
/// Most keys one release slice drops at the source.
const RELEASE_SLICE_KEYS: u32 = 1000;
/// Least pause between release slices and between pre-copy pages, leaving the replicas of both
/// groups room for other work (nobody waits for these steps); `limits.move_keys_per_s` may
/// space them more.
const SLICE_GAP: Duration = Duration::from_millis(30);
/// Longest the driver waits for one copy (a paced pre-copy of a large subtree takes minutes;
/// a copy that cannot make progress fails sooner, each of its steps within the write deadline).
const COPY_DEADLINE: Duration = Duration::from_secs(900);
/// A copy attempt that ran this long made progress: the stuck clock starts again after it.
const COPY_PROGRESS: Duration = Duration::from_secs(10);

/// Spaces the bulk steps of a move (pre-copy pages, release slices) to at most `per_s` keys a
/// second (0: no limit) and at least [`SLICE_GAP`] apart.
struct Pace {
    start: tokio::time::Instant,
    keys: u64,
    per_s: u64,
}

impl Pace {
    fn new(per_s: u64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            keys: 0,
            per_s,
        }
    }

    /// After a step that moved `keys` keys: waits until the next may start.
    async fn after(&mut self, keys: u64) {
        self.keys += keys;
        let now = tokio::time::Instant::now();
        let mut next = now + SLICE_GAP;
        if let Some(ms) = self.keys.saturating_mul(1000).checked_div(self.per_s) {
            next = next.max(self.start + Duration::from_millis(ms));
        }
        tokio::time::sleep_until(next).await;
    }
}
/// Test hook (`limits.move_step_pause_ms`, 0 in production): pause at each point of a move —
/// the driver before the copy and before the release, the copy between the freeze and the
/// import — so process tests can kill nodes at a chosen step.
async fn test_pause(ctx: &NodeCtx, point: &str) {
    let ms = ctx.limits.move_step_pause_ms;
    if ms > 0 {
        tracing::info!(point, "move: test pause of {ms} ms");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Runs on every voter of the global group; acts only while this node leads it. Ends on
/// shutdown.
pub async fn drive(ctx: Arc<NodeCtx>, global: GroupHandle, mut shutdown: watch::Receiver<bool>) {
    let mut epochs = ctx.placement.subscribe();
    // When this driver first saw each move stuck before its import (move id → since).
    let mut stuck: std::collections::BTreeMap<u64, Instant> = Default::default();
    loop {
        let leads = global.raft.metrics().borrow_watched().state == ServerState::Leader;
        let mut progressed = false;
        if leads {
            let map = ctx.placement.current().map.clone();
            if let Some((domain, m)) = next_move(&map) {
                match step(&ctx, &map, &domain, &m, &mut stuck).await {
                    Ok(()) => progressed = true,
                    Err(e) => {
                        tracing::warn!(prefix = %domain.prefix, id = m.id, step = %m.step, "move step failed, will retry: {e}");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
        if progressed {
            continue;
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = epochs.changed() => {}
            _ = tokio::time::sleep(DRIVE_TICK) => {}
        }
    }
}

/// The move to work on: the oldest one under way.
fn next_move(map: &PlacementMap) -> Option<(DomainPlacement, MoveState)> {
    map.domains
        .iter()
        .filter_map(|d| d.moving.clone().map(|m| (d.clone(), m)))
        .min_by_key(|(_, m)| m.id)
}

/// Nested domains of `prefix` that stay where they are.
fn nested(map: &PlacementMap, prefix: &str) -> Vec<String> {
    map.domains
        .iter()
        .filter(|d| d.prefix != prefix && d.prefix.starts_with(prefix))
        .map(|d| d.prefix.clone())
        .collect()
}

/// Runs the step the map says `m` stands at; the map moving on is the proof it ran.
async fn step(
    ctx: &NodeCtx,
    map: &PlacementMap,
    domain: &DomainPlacement,
    m: &MoveState,
    stuck: &mut std::collections::BTreeMap<u64, Instant>,
) -> Result<()> {
    let prefix = domain.prefix.clone();
    let id = m.id;
    match m.step {
        MoveStep::Begun => {
            let since = *stuck.entry(id).or_insert_with(Instant::now);
            if since.elapsed() > STUCK_MAX {
                return abort(
                    ctx,
                    map,
                    &prefix,
                    m,
                    format!(
                        "the copy did not complete within {} s (the source or the target group \
                         kept failing; see the log of the global group's leader)",
                        STUCK_MAX.as_secs()
                    ),
                )
                .await;
            }
            test_pause(ctx, "begun").await;
            let epoch = ctx.placement.epoch();
            let attempt = Instant::now();
            let reply = match copy(ctx, map, &prefix, m).await {
                Ok(reply) => reply,
                Err(e) => {
                    if attempt.elapsed() > COPY_PROGRESS {
                        stuck.insert(id, Instant::now());
                    }
                    return Err(e);
                }
            };
            if !reply.refused.is_empty() {
                return abort(ctx, map, &prefix, m, reply.refused).await;
            }
            tracing::info!(%prefix, id, keys = reply.keys, at = reply.import_revision, "move: copied and committed");
            // The copy committed the new owner; look again once this router has it.
            ctx.placement
                .wait_epoch(
                    epoch + 1,
                    Duration::from_millis(ctx.limits.sync_wait_ms_max),
                )
                .await;
            Ok(())
        }
        MoveStep::Aborted => {
            stuck.remove(&id);
            roll_back(ctx, map, &prefix, m).await
        }
        MoveStep::Committed => {
            stuck.remove(&id);
            test_pause(ctx, "committed").await;
            // In slices, so the source's replicas never apply one huge entry.
            let mut pace = Pace::new(ctx.limits.move_keys_per_s);
            loop {
                let release = MoveCommand::ReleaseSome {
                    prefix: prefix.clone(),
                    epoch: id,
                    limit: RELEASE_SLICE_KEYS,
                };
                match ctx.commit(m.from, Command::Move(release)).await? {
                    (_, CommandResult::Released { left: 0 }) => break,
                    (_, CommandResult::Released { .. }) => {
                        pace.after(RELEASE_SLICE_KEYS as u64).await
                    }
                    (_, CommandResult::Rejected(r)) => {
                        // The source holds no freeze of this move: nothing of it to drop.
                        tracing::warn!(%prefix, id, "move: release refused: {}", r.message);
                        break;
                    }
                    (_, other) => {
                        return Err(Error::Internal(format!("release answered {other:?}")))
                    }
                }
            }
            change(
                ctx,
                PlacementChange::FinishMove {
                    prefix: prefix.clone(),
                    id,
                },
            )
            .await?;
            tracing::info!(%prefix, id, "move: finished, the source dropped its copy");
            Ok(())
        }
    }
}

/// Rolls the move back — unless the target already imported it. The target's log decides:
/// its `Discard` either comes first (a late import changes nothing; the rollback is recorded in
/// the global group, then the cleanup of step `Aborted` runs) or finds the import, which is
/// where the target took the subtree over (writes may have followed it), and the move is
/// committed instead.
async fn abort(
    ctx: &NodeCtx,
    map: &PlacementMap,
    prefix: &str,
    m: &MoveState,
    reason: String,
) -> Result<()> {
    let discard = MoveCommand::Discard {
        prefix: prefix.to_string(),
        id: m.id,
        except: nested(map, prefix),
    };
    match ctx.commit(m.to, Command::Move(discard)).await? {
        (_, CommandResult::Applied) => {}
        (_, CommandResult::Imported { at }) => {
            tracing::info!(%prefix, id = m.id, at, "move: the target already imported it; committing instead of rolling back");
            return change(
                ctx,
                PlacementChange::CommitMove {
                    prefix: prefix.to_string(),
                    id: m.id,
                    at,
                },
            )
            .await;
        }
        (_, other) => {
            return Err(Error::Internal(format!(
                "rolling back a move: the target answered the discard with {other:?}"
            )))
        }
    }
    tracing::warn!(%prefix, id = m.id, "rolling the move back: {reason}");
    change(
        ctx,
        PlacementChange::AbortMove {
            prefix: prefix.to_string(),
            id: m.id,
            reason,
        },
    )
    .await
}

/// Step `Aborted`: the target drops whatever a pre-copy staged (an import cannot have
/// happened: the rollback was recorded only after the target's discard), the source takes
/// writes again, and the move is over.
async fn roll_back(ctx: &NodeCtx, map: &PlacementMap, prefix: &str, m: &MoveState) -> Result<()> {
    let discard = MoveCommand::Discard {
        prefix: prefix.to_string(),
        id: m.id,
        except: nested(map, prefix),
    };
    applied(ctx, m.to, discard, "the target", "discard").await?;
    let unfreeze = MoveCommand::Unfreeze {
        prefix: prefix.to_string(),
        epoch: m.id,
    };
    applied(ctx, m.from, unfreeze, "the source", "unfreeze").await?;
    change(
        ctx,
        PlacementChange::FinishMove {
            prefix: prefix.to_string(),
            id: m.id,
        },
    )
    .await?;
    tracing::warn!(%prefix, id = m.id, "move rolled back: {}", m.aborted.as_deref().unwrap_or(""));
    Ok(())
}

/// Commits a rollback step in `group`, which must apply it.
async fn applied(
    ctx: &NodeCtx,
    group: GroupId,
    cmd: MoveCommand,
    who: &str,
    what: &str,
) -> Result<()> {
    match ctx.commit(group, Command::Move(cmd)).await? {
        (_, CommandResult::Applied) => Ok(()),
        (_, other) => Err(Error::Internal(format!(
            "rolling back a move: {who} answered the {what} with {other:?}"
        ))),
    }
}

/// Commits a change of the map in the global group. A refusal means the map moved on under
/// this driver (another leader ran the step): not an error, the next look sees it.
async fn change(ctx: &NodeCtx, change: PlacementChange) -> Result<()> {
    let global = ctx
        .topology
        .global_group()
        .map(|g| g.id)
        .ok_or_else(|| Error::Internal("a move without a global group".into()))?;
    let (rev, result) = ctx.commit(global, Command::Placement(change)).await?;
    if let CommandResult::Rejected(r) = result {
        // The map moved on under this driver; look again once this replica shows it.
        tracing::info!(rule = %r.rule, "move step already taken: {}", r.message);
        tokio::time::sleep(RETRY_PAUSE).await;
        return Ok(());
    }
    // Act on the map this entry produced, not on the one before it.
    ctx.placement
        .wait_epoch(rev, Duration::from_millis(ctx.limits.sync_wait_ms_max))
        .await;
    Ok(())
}

/// Asks a voter of the target group (nearest first) to copy the subtree.
async fn copy(
    ctx: &NodeCtx,
    map: &PlacementMap,
    prefix: &str,
    m: &MoveState,
) -> Result<MoveCopyReply> {
    let timeout = COPY_DEADLINE;
    let request = MoveCopyRequest {
        prefix: prefix.to_string(),
        id: m.id,
        from: m.from.0,
        to: m.to.0,
        except: nested(map, prefix),
    };
    let mut last = Error::Unavailable(format!("group {} has no voters", m.to));
    for addr in ctx.voter_addresses(m.to) {
        let channel = match ctx.pool.channel(&addr) {
            Ok(c) => c,
            Err(e) => {
                last = Error::Unavailable(format!("voter at {addr}: {e}"));
                continue;
            }
        };
        let mut client = ForwardClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_BYTES);
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(timeout);
        match client.move_copy(req).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(s) => {
                last = Error::Unavailable(format!(
                    "copying {prefix} at the target's voter {addr}: {}",
                    s.message()
                ))
            }
        }
    }
    Err(last)
}

/// The copy step, on a voter of the target group: the source's answer to a (repeated) freeze
/// is the subtree; it is imported into the target once per move id.
pub async fn serve_copy(ctx: &NodeCtx, req: MoveCopyRequest) -> Result<MoveCopyReply> {
    let (from, to) = (GroupId(req.from), GroupId(req.to));
    let refused = |r: meridian_types::Rejection| MoveCopyReply {
        refused: format!("{}: {}", r.rule, r.message),
        ..Default::default()
    };
    ctx.group(to)?;
    let rolled_back = || MoveCopyReply {
        refused: "move_step: the move was rolled back before its import".into(),
        ..Default::default()
    };
    // The pre-copy: pages of the subtree, read at the source while writes go on, staged at
    // the target where no client sees them yet. The first page's revision bounds what the
    // freeze must still carry.
    let mut after_key = String::new();
    let mut after = None;
    let mut count = 0u64;
    let mut imported = None;
    let mut pace = Pace::new(ctx.limits.move_keys_per_s);
    loop {
        let export = MoveCommand::Export {
            prefix: req.prefix.clone(),
            except: req.except.clone(),
            after: after_key.clone(),
            limit: PAGE_KEYS,
        };
        let page = match ctx.commit(from, Command::Move(export)).await? {
            (rev, CommandResult::Exported(page)) => {
                after.get_or_insert(rev);
                page
            }
            (_, CommandResult::Rejected(r)) => return Ok(refused(r)),
            (_, other) => return Err(Error::Internal(format!("export answered {other:?}"))),
        };
        let Some(last) = page.last() else { break };
        after_key = last.key.clone();
        let keys = page.len() as u64;
        count += keys;
        let stage = MoveCommand::Stage {
            prefix: req.prefix.clone(),
            id: req.id,
            keys: page,
        };
        match ctx.commit(to, Command::Move(stage)).await? {
            (_, CommandResult::Applied) => {}
            (_, CommandResult::Imported { at: 0 }) => return Ok(rolled_back()),
            // A copy before this one already imported: commit what it did.
            (_, CommandResult::Imported { at }) => {
                imported = Some(at);
                break;
            }
            (_, CommandResult::Rejected(r)) => return Ok(refused(r)),
            (_, other) => return Err(Error::Internal(format!("stage answered {other:?}"))),
        }
        pace.after(keys).await;
    }
    let at = match imported {
        Some(at) => at,
        None => {
            // The pause begins: the freeze answers only what changed during the pre-copy and
            // how many keys there are; their names only if a key was deleted meanwhile.
            let mut names = false;
            loop {
                let freeze = MoveCommand::FreezeAfter {
                    prefix: req.prefix.clone(),
                    epoch: req.id,
                    except: req.except.clone(),
                    after: after.unwrap_or(0),
                    names,
                };
                let frozen_at = Instant::now();
                // The freeze's commit timestamp is above every write of the prefix at the
                // source (none commits after it): the import commits above it, so the
                // moved keys' timestamps keep increasing across the move.
                let (changed, count, present, frozen_ts) = match ctx
                    .commit_at(from, Command::Move(freeze), Timestamp::ZERO)
                    .await?
                {
                    (
                        _,
                        CommandResult::Delta {
                            changed,
                            count,
                            present,
                        },
                        ts,
                    ) => (changed, count, present, ts.unwrap_or_default()),
                    (_, CommandResult::Rejected(r), _) => return Ok(refused(r)),
                    (_, other, _) => {
                        return Err(Error::Internal(format!("freeze answered {other:?}")))
                    }
                };
                tracing::info!(prefix = %req.prefix, id = req.id, changed = changed.len(), count, names, freeze_ms = frozen_at.elapsed().as_millis() as u64, "move: frozen at the source");
                test_pause(ctx, "frozen").await;
                let import_at = Instant::now();
                let import = MoveCommand::ImportDelta {
                    prefix: req.prefix.clone(),
                    id: req.id,
                    except: req.except.clone(),
                    changed,
                    present: names.then_some(present),
                    count,
                };
                // The import's revision comes with its answer (a repeat answers the first
                // one's), so nothing here waits for this replica to apply it.
                let answer = ctx.commit_at(to, Command::Move(import), frozen_ts).await?;
                match (answer.0, answer.1) {
                    (_, CommandResult::Imported { at: 0 }) => return Ok(rolled_back()),
                    (_, CommandResult::Imported { at }) => {
                        tracing::info!(prefix = %req.prefix, id = req.id, at, import_ms = import_at.elapsed().as_millis() as u64, "move: imported at the target");
                        break at;
                    }
                    (_, CommandResult::Rejected(r)) if r.rule == "names_needed" && !names => {
                        names = true;
                    }
                    // A pre-copy that missed a key (it cannot, unless a bug): the next copy
                    // starts over; the move is rolled back if it keeps failing.
                    (_, CommandResult::Rejected(r)) if r.rule == "bad_import" => {
                        return Err(Error::Internal(format!("import refused: {}", r.message)))
                    }
                    (_, CommandResult::Rejected(r)) => return Ok(refused(r)),
                    (_, other) => {
                        return Err(Error::Internal(format!("import answered {other:?}")))
                    }
                }
            }
        }
    };
    let global = ctx
        .topology
        .global_group()
        .map(|g| g.id)
        .ok_or_else(|| Error::Internal("a move without a global group".into()))?;
    let commit = PlacementChange::CommitMove {
        prefix: req.prefix,
        id: req.id,
        at,
    };
    if let (_, CommandResult::Rejected(r)) = ctx.commit(global, Command::Placement(commit)).await? {
        // Already committed (a repeated copy), or rolled back meanwhile: the map says which.
        tracing::info!(rule = %r.rule, "move commit not taken: {}", r.message);
    }
    Ok(MoveCopyReply {
        import_revision: at,
        keys: count,
        refused: String::new(),
    })
}

/// Where a request that `from` refused with `WrongGroup{epoch}` can go before this router's
/// map shows the move committed: the target of move `epoch` of the domain holding `scopes`
/// (all of them inside it),
/// when the map shows that move under way from `from` and this node holds a replica of the
/// target (to serve its reads and to carry the session). The request then goes as
/// `Command::AfterImport`, which the target takes only once it holds the import.
pub fn handover(
    ctx: &NodeCtx,
    from: GroupId,
    epoch: u64,
    scopes: &[(&str, bool)],
) -> Option<GroupId> {
    let current = ctx.placement.current();
    let domain = current.lookup.domain_of(scopes.first()?.0)?;
    let d = current
        .map
        .domains
        .iter()
        .find(|d| d.prefix == domain.prefix)?;
    let m = d.moving.as_ref()?;
    let inside = scopes.iter().all(|(k, _)| k.starts_with(d.prefix.as_str()));
    (inside
        && m.id == epoch
        && m.from == from
        && m.step == MoveStep::Begun
        && ctx.host.get(m.to).is_some())
    .then_some(m.to)
}

/// Waits (until `until`) for this node's replica of `group` to hold move `id`'s import; its
/// revision, or `None` when the move was rolled back or the import did not arrive in time.
pub async fn imported(
    ctx: &NodeCtx,
    group: GroupId,
    id: u64,
    until: tokio::time::Instant,
) -> Option<u64> {
    let h = ctx.host.get(group)?;
    loop {
        if let Some(at) = h.shared.read().import_outcome(id) {
            return (at > 0).then_some(at);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
