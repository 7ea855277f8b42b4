//! The status page (`/` on every node's HTTP listener; docs/operations.md) in a real browser:
//! headless Chromium (Debian's `chromium`; scripts/test installs it) loads it from a secure
//! 3-region `meridian dev` with the token in the address's fragment, and its DOM must show
//! every region, every group with a leader, and the domains; once the WAN emulator cuts
//! ap-northeast, the page shows that region cut and its group's replicas lagging within
//! seconds.

mod common;

use common::DevCluster;
use std::process::Command;
use std::time::{Duration, Instant};

/// Chromium: `CHROMIUM_BIN`, else `chromium` on the PATH.
fn chromium() -> String {
    std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "chromium".to_string())
}

/// The page's DOM after its script has run (Chromium's `--dump-dom`, 4 s of virtual time).
fn dom(url: &str, profile: &std::path::Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium is missing: apt-get install chromium (scripts/test does)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every opening tag in `dom` of an element whose attributes include all of `with`.
fn tags<'a>(dom: &'a str, with: &[&str]) -> Vec<&'a str> {
    dom.split('<')
        .filter_map(|t| t.split('>').next())
        .filter(|t| with.iter().all(|w| t.contains(w)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cluster_and_a_cut_region() {
    common::watchdog(Duration::from_secs(300));
    let dev = DevCluster::start(&[]);
    let token = dev.token().expect("a secure dev has a token");
    let http = dev.ready["http"]["1"]
        .as_str()
        .expect("node 1's HTTP listener")
        .to_string();
    let page = common::http::request(&http, "GET", "/", &[], "");
    assert_eq!(page.code, 200);
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{http}/#token={token}");

    // Every region, every group with a known leader, every domain; nothing lagging.
    let start = Instant::now();
    let before = loop {
        let d = dom(&url, profile.path());
        let led = tags(&d, &["class=\"group", "data-leader="])
            .iter()
            .filter(|t| !t.contains("data-leader=\"0\""))
            .count();
        if led == 4 && tags(&d, &["data-lagging=\"true\""]).is_empty() {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the page never showed 4 groups with leaders and nothing lagging:\n{d}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for region in ["us-east", "eu-west", "ap-northeast"] {
        assert_eq!(
            tags(
                &before,
                &["class=\"region\"", &format!("data-region=\"{region}\"")]
            )
            .len(),
            1,
            "region {region} on the page:\n{before}"
        );
    }
    for prefix in ["/us-east/", "/eu-west/", "/ap-northeast/", "/global/"] {
        assert_eq!(
            tags(
                &before,
                &["class=\"domain\"", &format!("data-prefix=\"{prefix}\"")]
            )
            .len(),
            1,
            "domain {prefix} on the page"
        );
    }
    // 4 groups: 3 regional of 9 replicas each, the global one on every node too.
    assert_eq!(tags(&before, &["class=\"replica"]).len(), 36, "{before}");
    assert!(
        before.contains("<div id=\"error\"></div>"),
        "the page shows an error:\n{before}"
    );

    // Cut ap-northeast off: the page shows it cut and its group's replicas elsewhere lagging.
    dev.wan(&["cut-region", "ap-northeast"]);
    let cut_at = Instant::now();
    loop {
        let d = dom(&url, profile.path());
        let cut = tags(
            &d,
            &["class=\"region cut\"", "data-region=\"ap-northeast\""],
        )
        .len()
            == 1;
        let lagging = tags(
            &d,
            &["data-group=\"ap-northeast\"", "data-lagging=\"true\""],
        )
        .len();
        if cut && lagging >= 6 {
            // Other regions' own groups are not shown lagging.
            assert!(
                tags(&d, &["data-group=\"us-east\"", "class=\"replica lagging\""]).is_empty(),
                "{d}"
            );
            break;
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "the cut region never showed (cut {cut}, {lagging} lagging replicas):\n{d}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("the cut showed within {:?}", cut_at.elapsed());
}
