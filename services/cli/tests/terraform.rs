//! The offline checks of `terraform/` (issue 18, terraform/README.md): the shipped modules and
//! a rendered `terraform.tfvars.json` pass `scripts/terraform-check`; copies broken on purpose
//! (a reference, a module output, a module argument, the formatting) are caught, each by name.
//! The tools are installed by `scripts/test` (scripts/tf-tools).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `scripts/terraform-check DIR ARGS`: (passed, stdout and stderr).
fn check(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(repo().join("scripts/terraform-check"))
        .arg(dir)
        .args(args)
        .output()
        .expect("run scripts/terraform-check");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            if e.file_name() != ".terraform" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A copy of terraform/ with `from` replaced by `to` in `file` (which must contain it).
fn broken(dir: &Path, name: &str, file: &str, from: &str, to: &str) -> PathBuf {
    let copy = dir.join(name);
    copy_dir(&repo().join("terraform"), &copy);
    let path = copy.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} has no {from:?} to break");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    copy
}

#[test]
fn the_shipped_terraform_passes_and_broken_copies_are_caught() {
    common::watchdog(std::time::Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = dir.path().join("rendered");
    let o = Command::new(common::BIN)
        .args(["topology", "render"])
        .arg(repo().join("topology/local-3region.toml"))
        .arg("--out")
        .arg(&rendered)
        .arg("--insecure")
        .output()
        .expect("render");
    assert!(o.status.success(), "{o:?}");
    let tfvars = rendered.join("terraform.tfvars.json");
    let tfvars = tfvars.to_str().expect("utf-8");

    let (ok, out) = check(&repo().join("terraform"), &["--tfvars", tfvars]);
    assert!(
        ok,
        "the shipped terraform/ fails its offline checks:\n{out}"
    );
    assert!(out.contains("passes every offline check"), "{out}");

    let cases = [
        (
            "reference",
            "modules/region/main.tf",
            "ip_cidr_range = var.subnet_cidr",
            "ip_cidr_range = var.subnet_cidrs",
            "undeclared variable var.subnet_cidrs",
        ),
        (
            "output",
            "outputs.tf",
            "r.endpoint",
            "r.endpoints",
            "module.region has no output 'endpoints'",
        ),
        (
            "argument",
            "main.tf",
            "  machine_type      = var.machine_type",
            "  machine_typo      = var.machine_type",
            "declares no variable 'machine_typo'",
        ),
        (
            "template",
            "modules/region/main.tf",
            "      unit_name     = each.value.unit_name\n",
            "",
            "uses 'unit_name', which is not passed",
        ),
        (
            "resource",
            "modules/region/main.tf",
            "google_compute_disk.data[each.key]",
            "google_compute_disk.date[each.key]",
            "no resource google_compute_disk.date",
        ),
        (
            "format",
            "variables.tf",
            "  type        = string",
            "  type = string",
            "terraform fmt",
        ),
        (
            "syntax",
            "outputs.tf",
            "output \"endpoints\" {",
            "output \"endpoints\" {{",
            "does not parse",
        ),
    ];
    for (name, file, from, to, expect) in cases {
        let copy = broken(dir.path(), name, file, from, to);
        let (ok, out) = check(&copy, &[]);
        assert!(!ok, "a broken {name} ({file}) passed:\n{out}");
        assert!(
            out.contains(expect),
            "a broken {name}: {expect:?} not said:\n{out}"
        );
    }

    // A tfvars that does not fit the variables.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tfvars).expect("read")).expect("json");
    v["regions"]["us-east"]["nodes"]["1"]["unit_text"] = "x".into();
    v["regions"]["eu-west"]["nodes"]["4"]
        .as_object_mut()
        .expect("node")
        .remove("node_toml");
    let bad = dir.path().join("bad.tfvars.json");
    std::fs::write(&bad, v.to_string()).expect("write");
    let (ok, out) = check(
        &repo().join("terraform"),
        &["--tfvars", bad.to_str().expect("utf-8")],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("node 1: 'unit_text' is not an attribute"),
        "{out}"
    );
    assert!(out.contains("node 4: 'node_toml' is missing"), "{out}");
}
