//! Disk faults under real `meridian server` processes (issue 17, item 3). A small LD_PRELOAD
//! shim, compiled here with the machine's C compiler, makes the node's own files fail: `fsync`
//! and `fdatasync` return EIO, `write` returns ENOSPC (a full disk), or a write is torn (half of
//! it reaches the file, then the process is SIGKILLed, as on a power cut mid-write). Faults
//! touch only files in the node's data directory and switch on and off through a control
//! file, so the node starts healthy and the test chooses the moment.
//!
//! What must hold (fsyncgate): after a failed write or fsync the node acknowledges nothing more
//! and stops (exit status 74); restarted on a healthy disk it serves every write it had
//! acknowledged. A data directory whose bytes were altered is refused at start, by checksum,
//! with a message saying so, and nothing is served from it.

mod common;

use common::ProcCluster;
use meridian_sdk::{Client, Consistency, Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shim (its variables are not `MERIDIAN_`: those are config overrides). Mode = first word
/// of `$FAULT_SHIM_CTL`; only fds whose path contains `$FAULT_SHIM_PATH` (the node's data
/// directory) are touched — checked first, so sockets cost one readlink. `open`/`read` are not
/// intercepted, so reading the control file cannot recurse; errno is kept across the checks.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int mode_is(const char *want) {
    const char *ctl = getenv("FAULT_SHIM_CTL");
    if (!ctl) return 0;
    int fd = open(ctl, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[32] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 && strncmp(buf, want, strlen(want)) == 0;
}

static int under_dir(int fd) {
    const char *part = getenv("FAULT_SHIM_PATH");
    if (!part || !*part) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strstr(path, part) != NULL;
}

static int fault(const char *mode, int fd) {
    int saved = errno;
    int hit = under_dir(fd) && mode_is(mode);
    errno = saved;
    return hit;
}

#define REAL(name, type) static type real_##name; if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

typedef int (*sync_fn)(int);
int fsync(int fd) {
    REAL(fsync, sync_fn);
    if (fault("fsync-eio", fd)) { errno = EIO; return -1; }
    return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync, sync_fn);
    if (fault("fsync-eio", fd)) { errno = EIO; return -1; }
    return real_fdatasync(fd);
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write, write_fn);
    if (fault("enospc", fd)) { errno = ENOSPC; return -1; }
    if (count > 1 && fault("tear", fd)) {
        real_write(fd, buf, count / 2);
        raise(SIGKILL);
    }
    return real_write(fd, buf, count);
}

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
    REAL(pwrite64, pwrite_fn);
    if (fault("enospc", fd)) { errno = ENOSPC; return -1; }
    return real_pwrite64(fd, buf, count, off);
}

typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
ssize_t writev(int fd, const struct iovec *iov, int n) {
    REAL(writev, writev_fn);
    if (fault("enospc", fd)) { errno = ENOSPC; return -1; }
    return real_writev(fd, iov, n);
}
"#;

/// Exit status of `meridian server` after a storage failure (EX_IOERR).
const STORAGE_FAILURE_EXIT: i32 = 74;

/// Builds the shim into `dir`; returns its path.
fn build_shim(dir: &Path) -> PathBuf {
    let src = dir.join("faults.c");
    let lib = dir.join("libmeridian_faults.so");
    std::fs::write(&src, SHIM).expect("write shim source");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("run cc (the C compiler builds the fault shim)");
    assert!(
        out.status.success(),
        "building the fault shim failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// A cluster of `n` nodes, each under the shim with its own control file (`fault-ID` in the
/// shim's directory, empty = healthy).
struct Faulty {
    cluster: ProcCluster,
    shim_dir: tempfile::TempDir,
}

impl Faulty {
    fn start(n: u64, subnet: u8) -> Faulty {
        let shim_dir = tempfile::tempdir().expect("tempdir");
        let lib = build_shim(shim_dir.path());
        let ctl = |id: u64| shim_dir.path().join(format!("fault-{id}"));
        for id in 1..=n {
            std::fs::write(ctl(id), "").expect("control file");
        }
        let cluster = ProcCluster::start_custom(
            ProcCluster::addresses(n, subnet),
            |_| String::new(),
            |id| {
                vec![
                    ("LD_PRELOAD".into(), lib.display().to_string()),
                    ("FAULT_SHIM_CTL".into(), ctl(id).display().to_string()),
                    // The node's data directory is `<cluster dir>/node-ID`.
                    ("FAULT_SHIM_PATH".into(), format!("/node-{id}/")),
                ]
            },
        );
        Faulty { cluster, shim_dir }
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.cluster.log_dir().join(format!("node-{id}"))
    }

    fn set_fault(&self, id: u64, mode: &str) {
        std::fs::write(self.shim_dir.path().join(format!("fault-{id}")), mode)
            .expect("write control file");
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.cluster.log_dir().join(format!("node-{id}.log")))
            .unwrap_or_default()
    }

    /// Waits for node `id`'s process to end; returns its exit status.
    fn wait_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + within;
        loop {
            let child = self.cluster.children[(id - 1) as usize]
                .as_mut()
                .expect("node was started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.cluster.children[(id - 1) as usize] = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "node {id} still runs {within:?} after its disk failed; log:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `id`, the only one, restarted on a healthy disk: it leads again, serves every
    /// write in `acked`, and takes new ones.
    async fn recovers_healthy(&mut self, id: u64, acked: std::ops::Range<usize>) {
        self.set_fault(id, "");
        self.cluster.restart(id);
        self.cluster.wait_leader(Duration::from_secs(30)).await;
        let c = self.patient(id);
        assert_all_present(&c, &acked.collect::<Vec<_>>()).await;
        put_acked(&c, 200..210).await;
    }

    /// A client of node `id` alone that gives up soon (a failing node's calls are retried
    /// until the call's deadline).
    fn client_only(&self, id: u64) -> Client {
        self.client_of(id, Duration::from_secs(3))
    }

    /// A client of node `id` alone for a healthy disk's writes: patient, so that a loaded
    /// machine does not turn a slow acknowledgement into a failed test.
    fn patient(&self, id: u64) -> Client {
        self.client_of(id, Duration::from_secs(20))
    }

    fn client_of(&self, id: u64, call_timeout: Duration) -> Client {
        Client::new(
            vec![self.cluster.addr(id).to_string()],
            Options {
                call_timeout,
                rpc_timeout: Duration::from_secs(2).min(call_timeout),
                ..Options::default()
            },
        )
        .expect("client")
    }
}

fn value(i: usize) -> String {
    format!("acked-value-{i:04}")
}

/// Puts `/disk/kNNNN` for every `i` in `range` through `c`; every put must be acknowledged.
async fn put_acked(c: &Client, range: std::ops::Range<usize>) {
    for i in range {
        c.put(&format!("/disk/k{i:04}"), value(i))
            .await
            .unwrap_or_else(|e| panic!("put {i} on a healthy disk: {e}"));
    }
}

/// Every key in `acked` is present with its value, read linearizably.
async fn assert_all_present(c: &Client, acked: &[usize]) {
    let kvs = c
        .range_all("/disk/", Consistency::Linearizable)
        .await
        .expect("range after restart");
    let got: std::collections::BTreeMap<String, Vec<u8>> =
        kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    for &i in acked {
        let key = format!("/disk/k{i:04}");
        assert_eq!(
            got.get(&key)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            Some(value(i)),
            "acknowledged write {key} lost"
        );
    }
}

/// One node, the only copy: once its fsync fails (EIO) no put is acknowledged, the process
/// stops with status 74 saying why, and restarted on a healthy disk it has every acknowledged
/// write and takes new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fsync_stops_the_node_before_it_acknowledges_anything() {
    common::watchdog(Duration::from_secs(240));
    let mut f = Faulty::start(1, 61);
    f.cluster.wait_leader(Duration::from_secs(30)).await;
    put_acked(&f.patient(1), 0..100).await;
    let c = f.client_only(1);

    f.set_fault(1, "fsync-eio");
    let mut refused = 0;
    for i in 100..110 {
        if let Ok(r) = c.put(&format!("/disk/k{i:04}"), value(i)).await {
            panic!("put {i} acknowledged after the fsync failed: {r:?}");
        }
        refused += 1;
    }
    assert_eq!(refused, 10);
    let status = f.wait_exit(1, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(STORAGE_FAILURE_EXIT),
        "exit status after a failed fsync; log:\n{}",
        f.log(1)
    );
    let log = f.log(1);
    assert!(
        log.contains("storage failure") && log.contains("fsync"),
        "the node says why it stopped; log:\n{log}"
    );

    f.recovers_healthy(1, 0..100).await;
}

/// Three nodes; the leader's disk fills up (every write ENOSPC). The leader stops (74) instead
/// of acknowledging, the other two elect a leader and go on, and the old leader, restarted with
/// space again, rejoins; no acknowledged write is lost before, during or after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_leader_and_the_group_goes_on_without_losing_a_write() {
    common::watchdog(Duration::from_secs(300));
    let mut f = Faulty::start(3, 62);
    let leader = f.cluster.wait_leader(Duration::from_secs(30)).await;
    let c = f.cluster.client();
    put_acked(&c, 0..100).await;
    let mut acked: Vec<usize> = (0..100).collect();

    f.set_fault(leader, "enospc");
    // Keep writing through the whole cluster while the leader fails and is replaced.
    let until = Instant::now() + Duration::from_secs(60);
    let mut i = 100;
    while acked.len() < 150 {
        assert!(
            Instant::now() < until,
            "the group took no write within 60 s of its leader's disk filling up"
        );
        let key = format!("/disk/k{i:04}");
        if c.put(&key, value(i)).await.is_ok() {
            acked.push(i);
        }
        i += 1;
    }
    let status = f.wait_exit(leader, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(STORAGE_FAILURE_EXIT),
        "exit status of the leader whose disk filled up; log:\n{}",
        f.log(leader)
    );
    let log = f.log(leader);
    assert!(
        log.contains("storage failure") && log.contains("No space left"),
        "the node says why it stopped; log:\n{log}"
    );
    let new_leader = f.cluster.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, leader);

    f.set_fault(leader, "");
    f.cluster.restart(leader);
    // The restarted node catches up: a read served by it alone sees the last write.
    let last = *acked.last().expect("acked");
    let at_old = f.client_only(leader);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = at_old
            .get_with(
                &format!("/disk/k{last:04}"),
                Consistency::Stale { max_lag_ms: 0 },
            )
            .await;
        if let Ok(Some(kv)) = r.as_ref().map(|r| r.kv.as_ref()) {
            assert_eq!(kv.value, value(last).into_bytes());
            break;
        }
        assert!(
            Instant::now() < until,
            "the restarted node did not catch up within 30 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_all_present(&f.cluster.client(), &acked).await;
}

/// One node; a write to its journal is torn (half reaches the file, then the process dies).
/// The torn batch was never fsynced, so never acknowledged: the restarted node drops it, serves
/// every acknowledged write and takes new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_write_is_dropped_and_everything_acknowledged_survives() {
    common::watchdog(Duration::from_secs(240));
    let mut f = Faulty::start(1, 63);
    f.cluster.wait_leader(Duration::from_secs(30)).await;
    put_acked(&f.patient(1), 0..100).await;
    let c = f.client_only(1);

    f.set_fault(1, "tear");
    let torn = c.put("/disk/torn", "never-acknowledged").await;
    assert!(torn.is_err(), "a put whose write was torn: {torn:?}");
    let status = f.wait_exit(1, Duration::from_secs(20));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the shim tears a write and then SIGKILLs the node: {status:?}"
    );

    f.recovers_healthy(1, 0..100).await;
}

/// One node; after a clean stop one byte of an acknowledged value is flipped in its journal.
/// The node refuses to start, naming the checksum and the directory, and never serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_journal_is_refused_at_start_and_never_served() {
    common::watchdog(Duration::from_secs(240));
    let mut f = Faulty::start(1, 64);
    f.cluster.wait_leader(Duration::from_secs(30)).await;
    put_acked(&f.patient(1), 0..100).await;
    f.cluster.kill(1);

    // Flip one byte of value 42 wherever it lies in the node's files.
    let needle = value(42).into_bytes();
    let mut flipped = Vec::new();
    for entry in walk(&f.data_dir(1)) {
        let mut bytes = std::fs::read(&entry).expect("read data file");
        let mut hit = false;
        let mut at = 0;
        while let Some(pos) = find(&bytes[at..], &needle) {
            let p = at + pos + needle.len() - 1;
            bytes[p] ^= 0x01;
            hit = true;
            at = p + 1;
        }
        if hit {
            std::fs::write(&entry, &bytes).expect("write data file");
            flipped.push(entry);
        }
    }
    assert!(
        !flipped.is_empty(),
        "value 42 was found in none of the node's files"
    );

    f.cluster.restart(1);
    let status = f.wait_exit(1, Duration::from_secs(30));
    assert!(
        !status.success(),
        "a node over a corrupted journal started ({flipped:?})"
    );
    let log = f.log(1);
    assert!(
        log.contains("corrupt")
            && log.to_lowercase().contains("checksum")
            && log.contains("refusing to start"),
        "the node says its data does not check out; log:\n{log}"
    );
    let r = f
        .client_only(1)
        .get_with("/disk/k0042", Consistency::Stale { max_lag_ms: 0 })
        .await;
    assert!(r.is_err(), "served from a corrupted store: {r:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An in-process `meridian dev` cluster (all nine nodes in one process) stops with status 74
/// when one node's fsync fails, instead of going on with a node that can acknowledge nothing
/// (and which, shut down, would let fjall fsync what the failed fsync lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_dev_cluster_stops_at_a_node_storage_failure() {
    common::watchdog(Duration::from_secs(240));
    let shim_dir = tempfile::tempdir().expect("tempdir");
    let lib = build_shim(shim_dir.path());
    let ctl = shim_dir.path().join("fault");
    std::fs::write(&ctl, "").expect("control file");
    let (lib, ctl_env) = (lib.display().to_string(), ctl.display().to_string());
    let mut dev = common::DevCluster::start_env(
        &["--no-wan"],
        "warn",
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAULT_SHIM_CTL", ctl_env.as_str()),
            // The dev's node directories are `<data dir>/node-ID`.
            ("FAULT_SHIM_PATH", "/node-1/"),
        ],
    );
    let c = dev.client("us-east", Duration::from_secs(5));
    common::put_settled(&c, "/us-east/disk/a", "1", Duration::from_secs(60)).await;

    std::fs::write(&ctl, "fsync-eio").expect("set the fault");
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < until,
            "meridian dev still runs after node 1's fsync failed; log:\n{}",
            dev.log()
        );
        // Writes to us-east's group reach node 1's log.
        let _ = c.put("/us-east/disk/b", "2").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.code(),
        Some(STORAGE_FAILURE_EXIT),
        "exit status; log:\n{}",
        dev.log()
    );
    let log = dev.log();
    assert!(
        log.contains("meridian node 1: storage failure"),
        "the cluster names the node and why it stopped; log:\n{log}"
    );
}
