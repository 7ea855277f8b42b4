//! The nemesis's node processes: started under libfaketime, signalled (kill, stop, continue),
//! restarted, and their wall clocks jumped — each on its own.

use crate::dev::Dev;
use anyhow::{bail, Context, Result};
use meridian_sdk::Options;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster's node processes: each restarted by the nemesis under libfaketime with its own
/// offset file, so that its wall clock can jump on its own.
pub(super) struct Nodes {
    argv: BTreeMap<u64, Vec<String>>,
    address: BTreeMap<u64, String>,
    pid: BTreeMap<u64, u32>,
    children: BTreeMap<u64, Child>,
    paused: Vec<u64>,
    dir: PathBuf,
    libfaketime: PathBuf,
    options: Options,
}

impl Nodes {
    pub(super) fn of(dev: &Dev, libfaketime: &Path) -> Result<Nodes> {
        let mut n = Nodes {
            argv: BTreeMap::new(),
            address: BTreeMap::new(),
            pid: BTreeMap::new(),
            children: BTreeMap::new(),
            paused: Vec::new(),
            dir: dev.dir().to_path_buf(),
            libfaketime: libfaketime.to_path_buf(),
            options: dev.options()?,
        };
        let nodes = dev.ready["nodes"]
            .as_object()
            .context("the ready file lists no node processes (is this `dev --processes`?)")?;
        for (id, v) in nodes {
            let id: u64 = id.parse().context("a node id in the ready file")?;
            let argv: Vec<String> = v["restart"]
                .as_array()
                .context("a node's restart command")?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            if argv.is_empty() {
                bail!("node {id} has an empty restart command");
            }
            n.argv.insert(id, argv);
            n.address
                .insert(id, v["address"].as_str().context("address")?.to_string());
            n.pid.insert(id, v["pid"].as_u64().context("pid")? as u32);
        }
        Ok(n)
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        self.argv.keys().copied().collect()
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("clock-{id}"))
    }

    pub(super) fn signal(&mut self, id: u64, sig: &str) -> Result<()> {
        let pid = self.pid[&id];
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill {sig} node {id} (pid {pid}) failed");
        }
        match sig {
            "-STOP" => self.paused.push(id),
            "-CONT" => self.paused.retain(|p| *p != id),
            "-KILL" => {
                self.paused.retain(|p| *p != id);
                if let Some(mut c) = self.children.remove(&id) {
                    let _ = c.wait();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Waits (5 s at most) until node `id`'s killed process is gone: no process, or a zombie
    /// its parent has not reaped yet.
    pub(super) fn wait_gone(&self, id: u64) -> Result<()> {
        let pid = self.pid[&id];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // The state is the field after the command's closing parenthesis.
            let dead = state
                .as_deref()
                .and_then(|s| s.rsplit_once(')'))
                .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
            if dead {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {id} (pid {pid}) is still running 5 s after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts node `id` again on its data, under libfaketime with its wall clock where its
    /// offset file says.
    pub(super) fn start(&mut self, id: u64) -> Result<()> {
        let argv = &self.argv[&id];
        let clock = self.clock_file(id);
        if !clock.exists() {
            std::fs::write(&clock, "+0\n")?;
        }
        let log = std::fs::File::create(self.dir.join(format!("node-{id}.log")))?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LD_PRELOAD", &self.libfaketime)
            .env("FAKETIME_TIMESTAMP_FILE", &clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("MERIDIAN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("restarting node {id}"))?;
        self.pid.insert(id, child.id());
        self.children.insert(id, child);
        Ok(())
    }

    pub(super) fn jump(&self, id: u64, offset: &str) -> Result<()> {
        std::fs::write(self.clock_file(id), format!("{offset}\n"))
            .with_context(|| format!("moving node {id}'s clock"))
    }

    /// The node leading `group` (paused nodes are not asked).
    pub(super) async fn leader(&self, group: u64) -> Option<u64> {
        let asked = self
            .address
            .iter()
            .filter(|(id, _)| !self.paused.contains(id))
            .map(|(id, a)| (*id, a.as_str()));
        crate::dev::leader_of(asked, &self.options, group)
            .await
            .map(|(id, _)| id)
    }

    /// Undoes every fault still standing: resumes paused nodes, starts dead ones, sets every
    /// clock right.
    pub(super) fn heal(&mut self) -> Result<()> {
        for id in self.paused.clone() {
            self.signal(id, "-CONT")?;
        }
        for id in self.ids() {
            self.jump(id, "+0")?;
            let dead = match self.children.get_mut(&id) {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if dead {
                self.start(id)?;
            }
        }
        Ok(())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for id in self.paused.clone() {
            let _ = self.signal(id, "-CONT");
        }
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
