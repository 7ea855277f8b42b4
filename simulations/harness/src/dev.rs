//! `meridian dev` in a child process, for every harness and benchmark program: started with its
//! data in a temporary directory, waited for until its ready file appears, killed on drop; client
//! options and endpoints from the ready file.

use anyhow::{bail, Context, Result};
use meridian_sdk::{Client, Options};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `meridian dev` in a child process, killed on drop.
pub struct Dev {
    pub child: Child,
    /// The ready file's JSON (regions, endpoints, token, CA, HTTP listeners, …).
    pub ready: serde_json::Value,
    dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// `MERIDIAN dev --port PORT EXTRA…` with its data in a temporary directory, once ready
    /// (120 s at most). `BENCH_DEV_LOG=FILE` keeps the cluster's log.
    pub fn start(meridian: &Path, port: u16, extra: &[&str]) -> Result<Dev> {
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let child = Command::new(meridian)
            .args(["dev", "--port", &port.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("MERIDIAN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("BENCH_DEV_LOG") {
                Some(f) => Stdio::from(std::fs::File::create(f)?),
                None => Stdio::null(),
            })
            .spawn()
            .with_context(|| format!("starting {} dev", meridian.display()))?;
        let mut dev = Dev {
            child,
            ready: serde_json::Value::Null,
            dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(t) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str(&t) {
                    dev.ready = v;
                    return Ok(dev);
                }
            }
            if let Some(status) = dev.child.try_wait()? {
                bail!("meridian dev exited with {status}");
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("meridian dev did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Dev::start`] with the running `meridian` binary (the harnesses run inside it).
    pub fn start_here(port: u16, extra: &[&str]) -> Result<Dev> {
        let exe = std::env::current_exe().context("locating the meridian binary")?;
        Self::start(&exe, port, extra)
    }

    /// The temporary directory holding the cluster's data (and whatever a harness keeps there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Client options with the dev's root token, over TLS with its CA (unless insecure).
    pub fn options(&self) -> Result<Options> {
        let options = Options {
            token: self.ready["token"].as_str().map(str::to_string),
            ..Options::default()
        };
        Ok(match self.ready["ca"].as_str() {
            Some(ca) => options.with_tls(Path::new(ca), None)?,
            None => options,
        })
    }

    /// A session with `region`'s first router.
    pub fn client(&self, region: &str) -> Result<Client> {
        let ep = self.ready["regions"][region]["endpoint"]
            .as_str()
            .with_context(|| format!("no region {region}"))?;
        Ok(Client::new(vec![ep.to_string()], self.options()?)?)
    }

    /// `region`'s router endpoints.
    pub fn endpoints(&self, region: &str) -> Result<Vec<String>> {
        Ok(self.ready["regions"][region]["endpoints"]
            .as_array()
            .with_context(|| format!("no region {region}"))?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect())
    }
}

/// The node leading `group` and its term, asked of every node in `nodes` (id, address): the
/// highest term among those that say they lead it. A node that does not answer within a second
/// is passed over.
pub async fn leader_of<'a>(
    nodes: impl IntoIterator<Item = (u64, &'a str)>,
    options: &Options,
    group: u64,
) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    for (id, addr) in nodes {
        let Ok(c) = Client::new(
            vec![addr.to_string()],
            Options {
                call_timeout: Duration::from_secs(1),
                rpc_timeout: Duration::from_secs(1),
                ..options.clone()
            },
        ) else {
            continue;
        };
        let Ok(s) = c.status(false).await else {
            continue;
        };
        for g in s
            .groups
            .iter()
            .filter(|g| g.group == group && g.state == "Leader")
        {
            if best.is_none_or(|(t, _)| g.term > t) {
                best = Some((g.term, id));
            }
        }
    }
    best.map(|(term, id)| (id, term))
}
