//! `meridian snapshot save|status|restore` (docs/operations.md, "Backup and restore"): every
//! group's state at a linearizable point in one checksummed file, and a new cluster's data
//! directories built from it. The file format and the restore are `meridian_storage::backup`.

use crate::output::{Format, Rendered};
use anyhow::Context;
use meridian_sdk::Client;
use meridian_storage::backup::{self, GroupEntry, Manifest};
use meridian_topology::Topology;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save every group's state (each at a revision, the placement map at its epoch, leases
    /// and locks) to FILE, with a checksum. Needs `admin` on `/`.
    Save {
        file: PathBuf,
        /// Longest wait for each group's copy, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
    /// Check FILE whole (checksum, every group's copy) and describe it.
    Status { file: PathBuf },
    /// Build a new cluster's data from FILE: the data directory of node --node of TOPOLOGY,
    /// or without --node every node's, as DIR/node-<ID> (the layout `meridian dev` uses).
    /// The directories must not hold the groups yet. Nothing is written unless FILE checks.
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        topology: PathBuf,
        #[arg(long)]
        node: Option<u64>,
    },
}

pub async fn run(
    client: impl FnOnce() -> anyhow::Result<Client>,
    format: Format,
    cmd: SnapshotCmd,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCmd::Save { file, timeout_s } => {
            save(&client()?, format, &file, Duration::from_secs(timeout_s)).await
        }
        SnapshotCmd::Status { file } => {
            let (m, _) = backup::read(&file)?;
            describe(&file, &m, None).print(format);
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCmd::Restore {
            file,
            data_dir,
            topology,
            node,
        } => restore(format, &file, &data_dir, &topology, node).await,
    }
}

fn describe(file: &Path, m: &Manifest, took: Option<Duration>) -> Rendered {
    let mut human = format!(
        "{}: topology {}, placement epoch {}, {} groups",
        file.display(),
        m.topology,
        m.placement_epoch,
        m.groups.len()
    );
    for g in &m.groups {
        human.push_str(&format!(
            "\n  group {:>2} {:<14} revision {:>8}  {:>8} keys  {:>5} leases  {:>10} bytes",
            g.id, g.name, g.revision, g.keys, g.leases, g.bytes
        ));
    }
    if let Some(t) = took {
        human.push_str(&format!("\nin {:.2} s", t.as_secs_f64()));
    }
    Rendered {
        json: json!({
            "file": file, "topology": m.topology, "placement_epoch": m.placement_epoch,
            "created_unix_ms": m.created_unix_ms, "groups": m.groups,
            "seconds": took.map(|t| t.as_secs_f64()),
        }),
        human,
    }
}

async fn save(
    client: &Client,
    format: Format,
    file: &Path,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let placement = client
        .placement()
        .await
        .context("reading the placement map")?;
    let mut groups: Vec<u64> = placement.groups.iter().map(|g| g.id).collect();
    groups.sort_unstable();
    anyhow::ensure!(!groups.is_empty(), "the placement map names no group");
    let mut entries = Vec::new();
    let mut copies = Vec::new();
    let mut topology = String::new();
    for g in groups {
        let copy = client
            .group_snapshot(g, timeout)
            .await
            .with_context(|| format!("copying group {g}"))?;
        // What goes into the file must read back: check before writing.
        backup::decode(g, &copy.data)?;
        topology = copy.topology.clone();
        entries.push(GroupEntry {
            id: copy.group,
            name: copy.name,
            revision: copy.revision,
            bytes: copy.data.len() as u64,
            keys: copy.keys,
            leases: copy.leases,
        });
        copies.push(copy.data);
    }
    let manifest = Manifest {
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        topology,
        placement_epoch: placement.epoch,
        groups: entries,
    };
    backup::write(file, &manifest, &copies)?;
    describe(file, &manifest, Some(started.elapsed())).print(format);
    Ok(ExitCode::SUCCESS)
}

async fn restore(
    format: Format,
    file: &Path,
    data_dir: &Path,
    topology: &Path,
    node: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let t = Topology::load(topology)?;
    let (m, copies) = backup::read(file)?;
    // Every group of the file must be the topology's group of that id and name, and every
    // group of the topology must be in the file.
    for g in &m.groups {
        let spec = t.group(meridian_types::GroupId(g.id)).with_context(|| {
            format!(
                "{}: the file's group {} ({}) is not in the topology",
                topology.display(),
                g.id,
                g.name
            )
        })?;
        anyhow::ensure!(
            spec.name == g.name,
            "{}: group {} is {:?} there but {:?} in the file: restore with the topology it was saved from",
            topology.display(),
            g.id,
            spec.name,
            g.name
        );
    }
    for spec in &t.groups {
        anyhow::ensure!(
            m.groups.iter().any(|g| g.id == spec.id.0),
            "{}: group {} ({}) is not in the file",
            topology.display(),
            spec.id.0,
            spec.name
        );
    }
    let targets: Vec<(u64, PathBuf)> = match node {
        Some(id) => {
            anyhow::ensure!(t.node(id).is_some(), "{}: no node {id}", topology.display());
            vec![(id, data_dir.to_path_buf())]
        }
        None => t
            .nodes
            .iter()
            .map(|n| (n.id, data_dir.join(format!("node-{}", n.id))))
            .collect(),
    };
    let copy_of: BTreeMap<u64, &Vec<u8>> = m
        .groups
        .iter()
        .zip(&copies)
        .map(|(g, c)| (g.id, c))
        .collect();
    let mut restored = Vec::new();
    for (id, dir) in targets {
        let store = meridian_storage::NodeStore::open(&dir)
            .with_context(|| format!("opening {}", dir.display()))?;
        for (group, _) in t.groups_of_node(id) {
            let entry = m
                .groups
                .iter()
                .find(|g| g.id == group.0)
                .context("group checked above")?;
            let voters: BTreeMap<u64, String> = t
                .voters(group)
                .iter()
                .map(|n| (n.id, n.address.clone()))
                .collect();
            backup::restore_group(
                &store,
                group,
                copy_of[&group.0].clone(),
                entry.revision,
                &voters,
            )
            .await
            .with_context(|| format!("node {id} ({})", dir.display()))?;
        }
        restored.push(json!({"node": id, "data_dir": dir}));
    }
    let human = format!(
        "restored {} groups of {} into {} node data director{} in {:.2} s",
        m.groups.len(),
        file.display(),
        restored.len(),
        if restored.len() == 1 { "y" } else { "ies" },
        started.elapsed().as_secs_f64()
    );
    Rendered {
        json: json!({"file": file, "nodes": restored, "groups": m.groups,
                     "seconds": started.elapsed().as_secs_f64()}),
        human,
    }
    .print(format);
    Ok(ExitCode::SUCCESS)
}
