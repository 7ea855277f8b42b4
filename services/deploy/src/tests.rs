use super::*;
use meridian_server::config::SecurityMode;
use meridian_server::NodeConfig;

const LOCAL: &str = include_str!("../../../topology/local-3region.toml");
const KEY: &str = "ed25519/3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

fn secure() -> Options {
    Options {
        security: Security::Secure {
            root_public_key: KEY.into(),
        },
        ..Options::default()
    }
}

fn file<'a>(files: &'a [File], path: &str) -> &'a str {
    &files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not rendered"))
        .text
}

/// A rendered node.toml, loaded as `meridian server --config` loads it.
fn load(text: &str) -> NodeConfig {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).expect("write");
    let cfg = NodeConfig::load(Some(&path)).expect("a rendered node.toml loads");
    cfg.validate().expect("and is valid");
    cfg
}

#[test]
fn the_same_topology_renders_the_same_bytes() {
    let a = render(LOCAL, "topology/local-3region.toml", &secure()).expect("render");
    let b = render(LOCAL, "/elsewhere/local-3region.toml", &secure()).expect("render");
    assert_eq!(
        a, b,
        "the bytes depend only on the topology and the options"
    );
    let paths: Vec<&str> = a.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths.len(), 1 + 9 * 2 + 1, "{paths:?}");
    assert_eq!(
        file(&a, "topology.toml"),
        LOCAL,
        "the topology is copied as it is"
    );
}

/// node-1 and its unit as the repository records them: a change in the output shows here.
#[test]
fn node_files_match_the_recorded_ones() {
    let files = render(LOCAL, "local-3region.toml", &secure()).expect("render");
    for (path, golden) in [
        ("node-1/node.toml", "tests/golden/node-1.toml"),
        (
            "node-1/meridian-node-1.service",
            "tests/golden/meridian-node-1.service",
        ),
    ] {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(golden);
        let text = file(&files, path);
        if std::env::var_os("DEPLOY_WRITE_GOLDEN").is_some() {
            std::fs::write(&golden, text).expect("write golden");
        }
        let want = std::fs::read_to_string(&golden).expect("golden file");
        assert_eq!(text, want, "{path} differs from {}", golden.display());
    }
}

#[test]
fn a_rendered_config_is_what_the_node_needs() {
    let files = render(LOCAL, "local-3region.toml", &secure()).expect("render");
    let cfg = load(file(&files, "node-5/node.toml"));
    assert_eq!(cfg.node_id, 5);
    assert_eq!(cfg.region, "eu-west");
    assert_eq!(cfg.cluster_name, "local-3region");
    assert_eq!(cfg.listen, "127.0.2.2:7400");
    assert_eq!(cfg.advertise.as_deref(), Some("127.0.2.2:7400"));
    assert_eq!(
        cfg.data_dir,
        std::path::Path::new("/var/lib/meridian/node-5")
    );
    assert_eq!(
        cfg.topology.as_deref(),
        Some(std::path::Path::new("/etc/meridian/topology.toml"))
    );
    let peers: Vec<(u64, &str)> = cfg
        .peers
        .iter()
        .map(|p| (p.id, p.address.as_str()))
        .collect();
    assert_eq!(
        peers,
        [
            (4, "127.0.2.1:7400"),
            (5, "127.0.2.2:7400"),
            (6, "127.0.2.3:7400")
        ]
    );
    assert_eq!(cfg.http.listen.as_deref(), Some("127.0.2.2:7401"));
    assert!(cfg.dial.is_empty());
    // Secure: tokens and mTLS both configured, so `meridian server` starts.
    assert_eq!(cfg.security.mode, SecurityMode::Secure);
    assert!(cfg.security.required().expect("secure").is_empty());
    assert_eq!(
        cfg.security.cert.as_deref(),
        Some(std::path::Path::new("/etc/meridian/tls/node-5.pem"))
    );
    assert_eq!(cfg.telemetry.otlp_endpoint, None);

    let unit = file(&files, "node-5/meridian-node-5.service");
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/meridian server --config /etc/meridian/node-5/node.toml\n"
    ));
    for line in [
        "User=meridian\n",
        "LimitNOFILE=",
        "Restart=on-failure\n",
        "ReadWritePaths=/var/lib/meridian/node-5\n",
    ] {
        assert!(unit.contains(line), "{line:?} missing:\n{unit}");
    }
}

#[test]
fn insecure_listen_any_and_other_roots() {
    let o = Options {
        config_root: "/srv/m".into(),
        data_root: "/data".into(),
        binary: "/opt/meridian/bin/meridian".into(),
        user: "mrd".into(),
        listen_any: true,
        ..Options::default()
    };
    let files = render(LOCAL, "local-3region.toml", &o).expect("render");
    let cfg = load(file(&files, "node-9/node.toml"));
    assert_eq!(cfg.listen, "0.0.0.0:7400");
    assert_eq!(cfg.advertise.as_deref(), Some("127.0.3.3:7400"));
    assert_eq!(cfg.http.listen.as_deref(), Some("0.0.0.0:7401"));
    assert_eq!(cfg.security.mode, SecurityMode::Insecure);
    assert_eq!(cfg.data_dir, std::path::Path::new("/data/node-9"));
    let unit = file(&files, "node-9/meridian-node-9.service");
    assert!(unit.contains(
        "ExecStart=/opt/meridian/bin/meridian server --config /srv/m/node-9/node.toml\n"
    ));
    assert!(unit.contains("User=mrd\n"));
    assert!(
        !unit.contains("ExecReload"),
        "an insecure node has nothing to reload (SIGHUP would end it)"
    );
    assert!(unit.contains("ExecStartPre=+/usr/bin/install -d -o mrd -g mrd -m 0700 /data/node-9\n"));
}

#[test]
fn the_wan_emulator_dials_other_regions_through_relays() {
    let o = Options {
        wan_emulator: true,
        ..Options::default()
    };
    let files = render(LOCAL, "local-3region.toml", &o).expect("render");
    let cfg = load(file(&files, "node-1/node.toml"));
    // Node 1 (us-east, region 0) reaches the 6 nodes of the other regions through relays of
    // viewer 0; its own region directly.
    assert_eq!(cfg.dial.len(), 6, "{:?}", cfg.dial);
    assert_eq!(cfg.dial["127.0.2.1:7400"], relay_address(0, 4, 7400));
    assert!(!cfg.dial.contains_key("127.0.1.2:7400"));
    let args = file(&files, "wan-proxy.args");
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines[..2], ["--topology", "/etc/meridian/topology.toml"]);
    // 3 regions x 6 nodes elsewhere.
    assert_eq!(lines.iter().filter(|l| **l == "--relay").count(), 18);
    assert!(lines.contains(&"eu-west,us-east,127.201.0.1:7400,127.0.1.1:7400"));
}

#[test]
fn terraform_variables_describe_regions_nodes_and_roles() {
    let files = render(LOCAL, "local-3region.toml", &secure()).expect("render");
    let v: serde_json::Value =
        serde_json::from_str(file(&files, "terraform.tfvars.json")).expect("json");
    assert_eq!(v["cluster_name"], "local-3region");
    assert_eq!(v["regions"].as_object().expect("regions").len(), 3);
    let us = &v["regions"]["us-east"];
    assert_eq!(us["subnet_cidr"], "127.0.1.0/24");
    assert_eq!(us["tags"]["jurisdiction"], "us");
    let n1 = &us["nodes"]["1"];
    assert_eq!(n1["private_ip"], "127.0.1.1");
    assert_eq!(n1["port"], 7400);
    assert_eq!(n1["http_port"], 7401);
    assert_eq!(n1["roles"]["us-east"], "voter");
    assert_eq!(n1["roles"]["global"], "voter");
    assert_eq!(n1["roles"]["eu-west"], "learner");
    assert_eq!(n1["node_toml"], file(&files, "node-1/node.toml"));
    assert_eq!(n1["unit_name"], "meridian-node-1.service");
    assert_eq!(v["topology_toml"], LOCAL);
    assert_eq!(us["nodes"].as_object().expect("nodes").len(), 3);
}

#[test]
fn refusals_say_what_is_wrong() {
    let err = |text: &str, o: &Options| render(text, "t.toml", o).expect_err("refused").to_string();
    // What `topology check` refuses.
    let broken = LOCAL.replace("voters = [1, 2, 3]", "voters = [1, 2, 42]");
    let e = err(&broken, &secure());
    let check = Topology::parse(&broken, "t.toml")
        .expect_err("check refuses")
        .to_string();
    assert_eq!(e, check);
    assert!(e.contains("42"), "{e}");
    assert!(err("name = ", &secure()).contains("t.toml"));
    let e = err(
        LOCAL,
        &Options {
            config_root: "etc/m".into(),
            ..secure()
        },
    );
    assert!(e.contains("--config-root") && e.contains("absolute"), "{e}");
    let e = err(
        LOCAL,
        &Options {
            data_root: "/var/lib/my data".into(),
            ..secure()
        },
    );
    assert!(e.contains("--data-root"), "{e}");
    let e = err(
        LOCAL,
        &Options {
            user: "Root!".into(),
            ..secure()
        },
    );
    assert!(e.contains("--user"), "{e}");
    let e = err(
        LOCAL,
        &Options {
            security: Security::Secure {
                root_public_key: "ed25519/zz".into(),
            },
            ..Options::default()
        },
    );
    assert!(e.contains("--root-public-key"), "{e}");
    let far = LOCAL.replace("127.0.3.3:7400", "10.3.0.3:7400");
    let e = err(
        &far,
        &Options {
            wan_emulator: true,
            ..Options::default()
        },
    );
    assert!(e.contains("node 9") && e.contains("loopback"), "{e}");
    let odd = LOCAL.replace("name = \"local-3region\"", "name = \"local%3region\"");
    assert_ne!(odd, LOCAL);
    let e = err(&odd, &secure());
    assert!(e.contains("local%3region") && e.contains("systemd"), "{e}");
    let top = LOCAL.replace("127.0.3.3:7400", "127.0.3.3:65535");
    let e = err(&top, &Options::default());
    assert!(e.contains("node 9") && e.contains("65535"), "{e}");
}
