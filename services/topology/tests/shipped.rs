//! The shipped topology files validate, and the queries the rest of Meridian relies on
//! answer as the files' comments promise.

use meridian_topology::{GroupKind, Role, Topology};
use meridian_types::GroupId;
use std::path::Path;

const LOCAL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../topology/local-3region.toml"
);
const FIVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../topology/five-region.toml"
);

fn load(path: &str) -> Topology {
    match Topology::load(Path::new(path)) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

fn ids(nodes: Vec<&meridian_topology::NodeSpec>) -> Vec<u64> {
    nodes.into_iter().map(|n| n.id).collect()
}

/// Both shipped files parse and pass every rule, with the expected shape.
#[test]
fn shipped_files_validate() {
    let local = load(LOCAL);
    assert_eq!(local.name, "local-3region");
    assert_eq!(
        (
            local.regions.len(),
            local.nodes.len(),
            local.groups.len(),
            local.domains.len()
        ),
        (3, 9, 4, 4)
    );
    assert_eq!(
        local
            .region("eu-west")
            .map(|r| r.tags["jurisdiction"].as_str()),
        Some("eu")
    );
    assert_eq!(
        local.node(8).map(|n| n.address.as_str()),
        Some("127.0.3.2:7400")
    );
    assert_eq!(
        local.group_by_name("global").map(|g| g.id),
        Some(GroupId(10))
    );
    assert_eq!(
        local.global_group().map(|g| g.kind),
        Some(GroupKind::Global)
    );
    assert_eq!(local.global_group().and_then(|g| g.home.clone()), None);

    let five = load(FIVE);
    assert_eq!(
        (
            five.regions.len(),
            five.nodes.len(),
            five.groups.len(),
            five.domains.len()
        ),
        (5, 15, 6, 7)
    );
    assert_eq!(five.global_group().map(|g| g.voters.len()), Some(5));
}

/// A regional group's voters are its home nodes and its learners every node of its learner
/// regions; the global group's learners are every other node of its voters' regions.
#[test]
fn voters_and_learners() {
    let t = load(LOCAL);
    assert_eq!(ids(t.voters(GroupId(1))), vec![1, 2, 3]);
    assert_eq!(ids(t.learners(GroupId(1))), vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(ids(t.voters(GroupId(2))), vec![4, 5, 6]);
    assert_eq!(ids(t.learners(GroupId(2))), vec![1, 2, 3, 7, 8, 9]);
    assert_eq!(ids(t.voters(GroupId(10))), vec![1, 4, 7]);
    assert_eq!(ids(t.learners(GroupId(10))), vec![2, 3, 5, 6, 8, 9]);
    assert!(t.voters(GroupId(99)).is_empty());
    assert!(t.learners(GroupId(99)).is_empty());

    let five = load(FIVE);
    assert_eq!(ids(five.voters(GroupId(10))), vec![1, 4, 7, 10, 13]);
    assert_eq!(five.learners(GroupId(10)).len(), 10);
}

/// Every node hosts every group of local-3region: its own region's and the global one as a
/// voter (or a global learner), the other regions' as a learner.
#[test]
fn groups_of_node() {
    let t = load(LOCAL);
    use Role::{Learner, Voter};
    let g = GroupId;
    assert_eq!(
        t.groups_of_node(1),
        vec![
            (g(1), Voter),
            (g(2), Learner),
            (g(3), Learner),
            (g(10), Voter)
        ]
    );
    assert_eq!(
        t.groups_of_node(5),
        vec![
            (g(1), Learner),
            (g(2), Voter),
            (g(3), Learner),
            (g(10), Learner)
        ]
    );
    assert_eq!(
        t.groups_of_node(9),
        vec![
            (g(1), Learner),
            (g(2), Learner),
            (g(3), Voter),
            (g(10), Learner)
        ]
    );
    assert!(t.groups_of_node(42).is_empty());
}

/// Round trips are symmetric, 0 within a region or for unknown names, and a group's widest
/// round trip spans all its members, learners included.
#[test]
fn round_trips() {
    let t = load(LOCAL);
    assert_eq!(t.rtt_ms("us-east", "eu-west"), 75);
    assert_eq!(t.rtt_ms("eu-west", "us-east"), 75);
    assert_eq!(t.rtt_ms("ap-northeast", "us-east"), 170);
    assert_eq!(t.rtt_ms("us-east", "us-east"), 0);
    assert_eq!(t.rtt_ms("us-east", "mars"), 0);
    // Group 1's voters are all in us-east, but its learners reach eu-west and ap-northeast.
    assert_eq!(t.group_max_rtt_ms(GroupId(1)), 240);
    assert_eq!(t.group_max_rtt_ms(GroupId(10)), 240);
    assert_eq!(t.group_max_rtt_ms(GroupId(99)), 0);
    // Its voters' own widest round trip is 0 (one region); the global group's voters span all.
    assert_eq!(t.voters_max_rtt_ms(GroupId(1)), 0);
    assert_eq!(t.voters_max_rtt_ms(GroupId(10)), 240);
    assert_eq!(t.voters_max_rtt_ms(GroupId(99)), 0);

    let five = load(FIVE);
    assert_eq!(five.rtt_ms("eu-central", "ap-northeast"), 265);
    assert_eq!(five.group_max_rtt_ms(GroupId(1)), 265);
}

/// Longest prefix wins, nested domains included, and a bare domain name belongs to its domain.
#[test]
fn placement_longest_prefix() {
    let local = load(LOCAL).placement();
    assert_eq!(
        local.group_of("/us-east/orders/17"),
        Some((GroupId(1), "/us-east/"))
    );
    assert_eq!(local.group_of("/us-east"), Some((GroupId(1), "/us-east/")));
    assert_eq!(
        local.group_of("/global/locks/deploy"),
        Some((GroupId(10), "/global/"))
    );
    assert_eq!(local.group_of("/us-eastern/x"), None);
    assert_eq!(local.group_of("/elsewhere/x"), None);

    let five = load(FIVE);
    let p = five.placement();
    let eu_central = five.group_by_name("eu-central").map(|g| g.id);
    let eu_west = five.group_by_name("eu-west").map(|g| g.id);
    assert_eq!(
        p.group_of("/eu-west/payments/tx-17").map(|(g, _)| g),
        eu_central
    );
    assert_eq!(
        p.group_of("/eu-west/payments"),
        eu_central.map(|g| (g, "/eu-west/payments/"))
    );
    assert_eq!(p.group_of("/eu-west/users/ada").map(|(g, _)| g), eu_west);
    assert_eq!(p.group_of("/eu-west/paymentsX").map(|(g, _)| g), eu_west);
}

/// A scan under a prefix touches its owner plus every nested domain's owner.
#[test]
fn groups_under() {
    let five = load(FIVE);
    let p = five.placement();
    assert_eq!(p.groups_under("/eu-west/"), vec![GroupId(3), GroupId(4)]);
    assert_eq!(p.groups_under("/eu-west/payments/"), vec![GroupId(4)]);
    assert_eq!(p.groups_under("/eu-west/users/"), vec![GroupId(3)]);
    assert_eq!(p.groups_under("/us-east/"), vec![GroupId(1)]);
    assert_eq!(p.groups_under("/").len(), 6);
    assert!(p.groups_under("/nowhere/").is_empty());
}

/// A plain peer list becomes one region, one group of all peers, owning everything — even with
/// a single node, since dev clusters are not held to the 3-voter rule.
#[test]
fn single_region_shape() {
    let t = Topology::single_region("dev", &[(1, "127.0.0.1:7400".to_string())]);
    assert_eq!(t.regions.len(), 1);
    assert_eq!(ids(t.voters(GroupId(1))), vec![1]);
    assert!(t.learners(GroupId(1)).is_empty());
    assert_eq!(t.groups_of_node(1), vec![(GroupId(1), Role::Voter)]);
    assert_eq!(t.group_max_rtt_ms(GroupId(1)), 0);
    assert!(t.global_group().is_none());
    assert_eq!(t.placement().group_of("/any/key"), Some((GroupId(1), "/")));
    assert_eq!(
        t.group(GroupId(1)).and_then(|g| g.home.as_deref()),
        Some("dev")
    );
}

/// A file that cannot be read is one problem naming the file, not a panic.
#[test]
fn unreadable_file() {
    let err = match Topology::load(Path::new("/nonexistent/topology.toml")) {
        Ok(_) => panic!("loaded a missing file"),
        Err(e) => e,
    };
    assert_eq!(err.problems.len(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/topology.toml: cannot read"),
        "{text}"
    );
}

/// compliance-3region: local-3region plus group eu-private (voters in eu-west, no learner
/// anywhere else) owning /eu-west/pii/ (forward) and /eu-west/pii-strict/ (strict), both
/// allowed only where jurisdiction = eu. Adding a us-east learner to it is refused, naming the
/// domain, the policy and the region.
#[test]
fn compliance_file_keeps_eu_data_in_the_eu() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../topology/compliance-3region.toml"
    );
    let t = load(path);
    let private = t.group_by_name("eu-private").expect("eu-private group").id;
    assert_eq!(ids(t.voters(private)), vec![4, 5, 6]);
    assert!(t.learners(private).is_empty());
    for n in 1..=9 {
        let hosts = t.groups_of_node(n).iter().any(|(g, _)| *g == private);
        assert_eq!(hosts, (4..=6).contains(&n), "node {n}");
    }
    let modes: Vec<(String, String)> = t
        .domains
        .iter()
        .filter_map(|d| d.policy.as_ref().map(|p| (d.prefix.clone(), p.to_string())))
        .collect();
    assert_eq!(
        modes,
        vec![
            (
                "/eu-west/pii/".to_string(),
                "allowed = jurisdiction:eu, mode = forward".to_string()
            ),
            (
                "/eu-west/pii-strict/".to_string(),
                "allowed = jurisdiction:eu, mode = strict".to_string()
            ),
        ]
    );
    let text = std::fs::read_to_string(path).expect("read");
    let broken = text.replacen(
        "voters = [4, 5, 6]\nlearner_regions = []",
        "voters = [4, 5, 6]\nlearner_regions = [\"us-east\"]",
        1,
    );
    assert_ne!(broken, text);
    let e = Topology::parse(&broken, "c.toml").expect_err("a us-east learner breaks the policy");
    let printed = e.to_string();
    for needle in [
        "/eu-west/pii/",
        "jurisdiction:eu",
        "us-east",
        "/eu-west/pii-strict/",
    ] {
        assert!(printed.contains(needle), "{needle:?} not in {printed}");
    }
}

fn group_named(t: &Topology, name: &str) -> GroupId {
    t.groups
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no group {name}"))
        .id
}

/// Live membership against the file: nothing when they agree, one line per node otherwise.
#[test]
fn drift_names_each_member_that_differs_from_the_file() {
    let local = load(LOCAL);
    let us = group_named(&local, "us-east");
    let voters: std::collections::BTreeSet<u64> = ids(local.voters(us)).into_iter().collect();
    let learners: std::collections::BTreeSet<u64> = ids(local.learners(us)).into_iter().collect();
    assert!(local.drift(us, &voters, &learners).is_empty());

    // Node 3 replaced by node 10; node 4 promoted by hand.
    let mut v = voters.clone();
    v.remove(&3);
    v.insert(10);
    v.insert(4);
    let mut l = learners.clone();
    l.remove(&4);
    assert_eq!(
        local.drift(us, &v, &l),
        vec![
            "node 3 is not a member of the group; the topology makes it a voter",
            "node 4 is a voter of the group; the topology makes it a learner",
            "node 10 is a voter of the group; the topology makes it not a member",
        ]
    );
}

/// A whole cluster against the file: every group's drift, a group nobody could report on, and a
/// group the file does not declare.
#[test]
fn live_drift_covers_every_group_of_the_file_and_of_the_cluster() {
    let local = load(LOCAL);
    let mut live = std::collections::BTreeMap::new();
    for g in &local.groups {
        let v = ids(local.voters(g.id)).into_iter().collect();
        let l = ids(local.learners(g.id)).into_iter().collect();
        live.insert(g.id, (v, l));
    }
    assert!(local.live_drift(&live).is_empty());
    let us = group_named(&local, "us-east");
    let eu = group_named(&local, "eu-west");
    if let Some((v, _)) = live.get_mut(&us) {
        v.remove(&3);
    }
    live.remove(&eu);
    live.insert(GroupId(99), Default::default());
    let d = local.live_drift(&live);
    assert_eq!(d.len(), 3, "{d:#?}");
    assert!(
        d[0].contains("node 3 is not a member") && d[0].contains("(us-east)"),
        "{d:#?}"
    );
    assert!(
        d[1].contains("(eu-west)") && d[1].contains("no leader answered"),
        "{d:#?}"
    );
    assert_eq!(
        d[2],
        "group 99 runs but the topology declares no such group"
    );
}
