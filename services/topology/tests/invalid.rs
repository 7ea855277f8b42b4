//! Every validation rule, one file per broken rule: the error names the line, the location
//! and the problem, and nothing else is reported.

use meridian_topology::Topology;
use meridian_types::GroupId;

/// A valid 3-region topology: regions a, b, c; nodes 1-3 in a, 4-6 in b, 7-9 in c;
/// regional groups 1 "a", 2 "b", 3 "c"; global group 10; domains /a/, /b/, /c/, /g/.
fn base() -> String {
    let mut t = String::from("name = \"t\"\n");
    for r in ["a", "b", "c"] {
        t += &format!("\n[[regions]]\nname = \"{r}\"\n");
    }
    for id in 1..=9u64 {
        let r = ["a", "b", "c"][((id - 1) / 3) as usize];
        t += &format!("\n[[nodes]]\nid = {id}\nregion = \"{r}\"\naddress = \"10.0.0.{id}:7400\"\n");
    }
    t += "\n[rtt_ms]\na = { b = 10, c = 20 }\nb = { a = 10, c = 30 }\nc = { a = 20, b = 30 }\n";
    for (id, r, voters, learners) in [
        (1, "a", "1, 2, 3", "\"b\", \"c\""),
        (2, "b", "4, 5, 6", "\"a\", \"c\""),
        (3, "c", "7, 8, 9", "\"a\", \"b\""),
    ] {
        t += &format!(
            "\n[[groups]]\nid = {id}\nname = \"{r}\"\nkind = \"regional\"\nhome = \"{r}\"\nvoters = [{voters}]\nlearner_regions = [{learners}]\n"
        );
    }
    t += "\n[[groups]]\nid = 10\nname = \"global\"\nkind = \"global\"\nvoters = [1, 4, 7]\n";
    for (p, g) in [("/a/", "a"), ("/b/", "b"), ("/c/", "c"), ("/g/", "global")] {
        t += &format!("\n[[domains]]\nprefix = \"{p}\"\ngroup = \"{g}\"\n");
    }
    t
}

/// `base()` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    let t = base();
    assert!(t.contains(from), "base has no {from:?}");
    t.replacen(from, to, 1)
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in text"));
    text[..at].matches('\n').count() + 1
}

/// Parses `text`, expects it to fail with exactly the `expected` problems, each given as
/// fragments of its printed line: (location, message).
fn check(text: &str, expected: &[(&str, &str)]) {
    let err = match Topology::parse(text, "t.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    let printed = err.to_string();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "expected {} problems, got:\n{printed}",
        expected.len()
    );
    assert_eq!(
        err.problems.len(),
        lines.len(),
        "one line per problem:\n{printed}"
    );
    for (location, message) in expected {
        assert!(
            lines.iter().any(|l| {
                l.starts_with("t.toml: ") && l.contains(location) && l.contains(message)
            }),
            "no problem at {location:?} saying {message:?} in:\n{printed}"
        );
    }
}

/// The base file itself is valid, so each test below breaks exactly one rule.
#[test]
fn base_is_valid() {
    if let Err(e) = Topology::parse(&base(), "t.toml") {
        panic!("{e}");
    }
}

/// A node in a region that is not declared.
#[test]
fn unknown_region() {
    let t = base() + "\n[[nodes]]\nid = 10\nregion = \"mars\"\naddress = \"10.0.0.10:7400\"\n";
    let line = line_of(&t, "region = \"mars\"");
    check(
        &t,
        &[(
            &format!("line {line}: nodes[9] (id 10).region"),
            "unknown region \"mars\" (known regions: a, b, c)",
        )],
    );
}

/// A voter id that no node has.
#[test]
fn unknown_node() {
    let t = edit("voters = [1, 2, 3]", "voters = [1, 2, 3, 42]");
    check(
        &t,
        &[(
            &format!(
                "line {}: groups[0] (\"a\").voters[3]",
                line_of(&t, "voters = [1, 2, 3, 42]")
            ),
            "unknown node id 42",
        )],
    );
}

/// One direction of a pair left out.
#[test]
fn missing_round_trip() {
    let t = edit("b = { a = 10, c = 30 }", "b = { a = 10 }");
    check(
        &t,
        &[(
            &format!("line {}: rtt_ms.b.c", line_of(&t, "b = { a = 10 }")),
            "missing round trip from b to c",
        )],
    );
}

/// The two directions of a pair disagree; both values are named.
#[test]
fn asymmetric_round_trip() {
    let t = edit("c = { a = 20, b = 30 }", "c = { a = 25, b = 30 }");
    check(
        &t,
        &[(
            "rtt_ms.a.c",
            "asymmetric round trip: a -> c is 20 ms but c -> a is 25 ms",
        )],
    );
}

/// Zero between distinct regions and non-zero to itself are both refused.
#[test]
fn bad_round_trip_values() {
    let t = edit("a = { b = 10, c = 20 }", "a = { a = 3, b = 0, c = 20 }");
    check(
        &t,
        &[
            ("rtt_ms.a.a", "round trip to itself must be 0"),
            ("rtt_ms.a.b", "must be >= 1 ms, got 0"),
        ],
    );
}

/// Two domains with the same prefix; both indices are named.
#[test]
fn overlapping_domain() {
    let t = base() + "\n[[domains]]\nprefix = \"/b/\"\ngroup = \"a\"\n";
    check(
        &t,
        &[(
            "domains[4] (\"/b/\").prefix",
            "overlapping domains: domains[1] and domains[4] both claim \"/b/\"",
        )],
    );
}

/// Nested domains are not overlapping: the longest prefix wins.
#[test]
fn nested_domain_is_fine() {
    let t = base() + "\n[[domains]]\nprefix = \"/b/deep/\"\ngroup = \"a\"\n";
    let topology = match Topology::parse(&t, "t.toml") {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        topology.placement().group_of("/b/deep/x").map(|(g, _)| g),
        Some(GroupId(1))
    );
}

/// A domain whose group does not exist.
#[test]
fn unowned_domain() {
    let t = base() + "\n[[domains]]\nprefix = \"/z/\"\ngroup = \"nope\"\n";
    check(
        &t,
        &[(
            &format!(
                "line {}: domains[4] (\"/z/\").group",
                line_of(&t, "group = \"nope\"")
            ),
            "unowned domain: no group is named \"nope\"",
        )],
    );
}

/// Two voters cannot survive the loss of one.
#[test]
fn fewer_than_three_voters() {
    let t = edit("voters = [4, 5, 6]", "voters = [4, 5]");
    check(
        &t,
        &[(
            "groups[1] (\"b\").voters",
            "a group needs at least 3 voters to survive the loss of one; it has 2",
        )],
    );
}

/// A regional group's voter living in another region; the node and its region are named.
#[test]
fn voter_outside_home_region() {
    let t = edit("voters = [7, 8, 9]", "voters = [7, 8, 1]");
    check(
        &t,
        &[(
            "groups[2] (\"c\").voters[2]",
            "voter node 1 is in region \"a\", outside the group's home region \"c\"",
        )],
    );
}

/// Two nodes with one id.
#[test]
fn duplicate_node_id() {
    let t = base() + "\n[[nodes]]\nid = 4\nregion = \"b\"\naddress = \"10.0.0.99:7400\"\n";
    check(
        &t,
        &[(
            &format!(
                "line {}: nodes[9] (id 4).id",
                line_of(&t, "id = 4\nregion = \"b\"\naddress = \"10.0.0.99")
            ),
            "duplicate node id 4: nodes[3] already uses it",
        )],
    );
}

/// Two nodes with one address.
#[test]
fn duplicate_address() {
    let t = base() + "\n[[nodes]]\nid = 10\nregion = \"b\"\naddress = \"10.0.0.5:7400\"\n";
    check(
        &t,
        &[(
            "nodes[9] (id 10).address",
            "duplicate address \"10.0.0.5:7400\": nodes[4] (id 5) already uses it",
        )],
    );
}

/// An address that is not host:port.
#[test]
fn bad_address() {
    let t = edit("address = \"10.0.0.2:7400\"", "address = \"10.0.0.2\"");
    check(&t, &[("nodes[1] (id 2).address", "has no port")]);
}

/// Two groups with one id.
#[test]
fn duplicate_group_id() {
    let t = base()
        + "\n[[groups]]\nid = 2\nname = \"b2\"\nkind = \"regional\"\nhome = \"b\"\nvoters = [4, 5, 6]\n";
    check(
        &t,
        &[(
            "groups[4] (\"b2\").id",
            "duplicate group id 2: groups[1] already uses it",
        )],
    );
}

/// Each malformed prefix is reported with the rule it breaks.
#[test]
fn bad_prefix() {
    let mut t = base();
    for p in ["/x", "y/", "/x//y/", "/x/../"] {
        t += &format!("\n[[domains]]\nprefix = \"{p}\"\ngroup = \"a\"\n");
    }
    check(
        &t,
        &[
            ("domains[4] (\"/x\").prefix", "must end with \"/\""),
            ("domains[5] (\"y/\").prefix", "must start with \"/\""),
            ("domains[6] (\"/x//y/\").prefix", "empty segment"),
            ("domains[7] (\"/x/../\").prefix", "\"..\" segment"),
        ],
    );
}

/// A global group whose voters sit in only 2 regions does not survive losing one of them.
#[test]
fn global_group_in_two_regions() {
    let t = edit("voters = [1, 4, 7]", "voters = [1, 2, 4]");
    check(
        &t,
        &[(
            &format!("line {}: groups[3] (\"global\").voters", line_of(&t, "voters = [1, 2, 4]")),
            "the global group must survive the loss of any one region: its voters are in only 2 region(s) (a, b)",
        )],
    );
}

/// Even spread over 3 regions, a region holding half the voters breaks the global rule.
#[test]
fn global_group_region_holding_half() {
    let t = edit("voters = [1, 4, 7]", "voters = [1, 2, 4, 7]");
    check(
        &t,
        &[(
            "groups[3] (\"global\").voters",
            "region \"a\" holds 2 of its 4 voters, so losing it leaves no majority",
        )],
    );
}

/// A second global group, and a global group listing one of its own voter regions as a
/// learner region.
#[test]
fn global_group_rules() {
    let t = base()
        + "\n[[groups]]\nid = 11\nname = \"global2\"\nkind = \"global\"\nvoters = [2, 5, 8]\nlearner_regions = [\"a\"]\n";
    check(
        &t,
        &[
            (
                "groups[4] (\"global2\").kind",
                "at most one global group; groups[3] is already global",
            ),
            (
                "groups[4] (\"global2\").learner_regions[0]",
                "region \"a\" already holds a voter of the global group",
            ),
        ],
    );
}

/// The global group's learner regions add the regions without a voter; voter regions get
/// learners on their other nodes automatically.
#[test]
fn global_learner_regions_add_voterless_regions() {
    let t = base().replace(
        "[[regions]]\nname = \"c\"\n",
        "[[regions]]\nname = \"c\"\n\n[[regions]]\nname = \"d\"\n",
    ) + "\n[[nodes]]\nid = 11\nregion = \"d\"\naddress = \"10.0.0.11:7400\"\n"
        + "\n[rtt_ms.d]\na = 5\nb = 5\nc = 5\n";
    let t = t
        .replace("a = { b = 10, c = 20 }", "a = { b = 10, c = 20, d = 5 }")
        .replace("b = { a = 10, c = 30 }", "b = { a = 10, c = 30, d = 5 }")
        .replace("c = { a = 20, b = 30 }", "c = { a = 20, b = 30, d = 5 }")
        .replace(
            "voters = [1, 4, 7]\n",
            "voters = [1, 4, 7]\nlearner_regions = [\"d\"]\n",
        );
    let topology = match Topology::parse(&t, "t.toml") {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let learners: Vec<u64> = topology
        .learners(GroupId(10))
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(learners, vec![2, 3, 5, 6, 8, 9, 11]);
}

/// Regional group rules: kind, home and learner regions.
#[test]
fn regional_group_rules() {
    let t = base()
        + "\n[[groups]]\nid = 20\nname = \"r1\"\nkind = \"local\"\nvoters = [1, 2, 3]\n"
        + "\n[[groups]]\nid = 21\nname = \"r2\"\nkind = \"regional\"\nvoters = [1, 2, 3]\n"
        + "\n[[groups]]\nid = 22\nname = \"r3\"\nkind = \"regional\"\nhome = \"a\"\nvoters = [1, 2, 2, 3]\nlearner_regions = [\"a\", \"b\", \"b\", \"zz\"]\n";
    check(
        &t,
        &[
            ("groups[4] (\"r1\").kind", "unknown group kind \"local\""),
            ("groups[5] (\"r2\")", "a regional group needs `home`"),
            (
                "groups[6] (\"r3\").voters[2]",
                "node 2 is listed twice (also voters[1])",
            ),
            (
                "groups[6] (\"r3\").learner_regions[0]",
                "region \"a\" is the group's home",
            ),
            (
                "groups[6] (\"r3\").learner_regions[2]",
                "region \"b\" is listed twice",
            ),
            (
                "groups[6] (\"r3\").learner_regions[3]",
                "unknown region \"zz\"",
            ),
        ],
    );
}

/// A region with no nodes is fine until a group needs it.
#[test]
fn empty_region_needed_by_a_group() {
    let t = base()
        .replace(
            "[[regions]]\nname = \"c\"\n",
            "[[regions]]\nname = \"c\"\n\n[[regions]]\nname = \"empty\"\n",
        )
        .replace(
            "a = { b = 10, c = 20 }",
            "a = { b = 10, c = 20, empty = 1 }",
        )
        .replace(
            "b = { a = 10, c = 30 }",
            "b = { a = 10, c = 30, empty = 1 }",
        )
        .replace(
            "c = { a = 20, b = 30 }",
            "c = { a = 20, b = 30, empty = 1 }\nempty = { a = 1, b = 1, c = 1 }",
        );
    if let Err(e) = Topology::parse(&t, "t.toml") {
        panic!("an unused empty region must be fine: {e}");
    }
    let t = t.replace(
        "learner_regions = [\"b\", \"c\"]",
        "learner_regions = [\"b\", \"c\", \"empty\"]",
    );
    check(
        &t,
        &[(
            "groups[0] (\"a\").learner_regions[2]",
            "region \"empty\" has no nodes to host a learner",
        )],
    );
}

/// Broken TOML is one problem with its line and column and the parser's message.
#[test]
fn malformed_toml() {
    let t = edit("name = \"t\"", "name = \"t");
    check(&t, &[("line 1, column", "invalid TOML")]);
}

/// An unknown field is refused with its line, not ignored.
#[test]
fn unknown_field() {
    let t = edit(
        "address = \"10.0.0.3:7400\"",
        "address = \"10.0.0.3:7400\"\ncolour = \"red\"",
    );
    let line = line_of(&t, "colour");
    check(
        &t,
        &[(&format!("line {line}, column 1"), "unknown field `colour`")],
    );
}

/// A wrong type (a string where a node id goes) is a TOML problem too.
#[test]
fn wrong_type() {
    let t = edit("id = 5\n", "id = \"five\"\n");
    check(
        &t,
        &[(
            &format!("line {}, column", line_of(&t, "\"five\"")),
            "invalid TOML",
        )],
    );
}

/// An empty file lacks everything a topology needs; each missing part is named.
#[test]
fn empty_topology() {
    check(
        "name = \"\"\n",
        &[
            ("line 1: name", "the topology needs a name"),
            ("regions", "at least one region"),
            ("nodes", "at least one node"),
            ("groups", "at least one group"),
        ],
    );
}

/// Several problems in one file are all reported, one line each, in file order of sections.
#[test]
fn several_problems_all_reported() {
    let t = edit("voters = [4, 5, 6]", "voters = [4, 5]")
        .replace("b = { a = 10, c = 30 }", "b = { a = 10, c = 31 }")
        .replace("address = \"10.0.0.9:7400\"", "address = \"10.0.0.8:7400\"")
        .replace("group = \"global\"", "group = \"globl\"")
        + "\n[[nodes]]\nid = 12\nregion = \"mars\"\naddress = \"10.0.0.12:7400\"\n";
    check(
        &t,
        &[
            (
                "nodes[8] (id 9).address",
                "duplicate address \"10.0.0.8:7400\"",
            ),
            ("nodes[9] (id 12).region", "unknown region \"mars\""),
            (
                "rtt_ms.b.c",
                "asymmetric round trip: b -> c is 31 ms but c -> b is 30 ms",
            ),
            ("groups[1] (\"b\").voters", "at least 3 voters"),
            ("domains[3] (\"/g/\").group", "unowned domain"),
        ],
    );
    let err = Topology::parse(&t, "t.toml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("t.toml: line "),
        "FILE: LOCATION: MESSAGE, got {first}"
    );
}

/// A policy that a replica of the domain's group breaks is refused, naming the domain, the
/// policy and the offending regions (here region a's learners of group b).
#[test]
fn residency_policy_broken_by_a_learner() {
    let t = edit(
        "prefix = \"/b/\"\ngroup = \"b\"\n",
        "prefix = \"/b/\"\ngroup = \"b\"\npolicy = { allowed = [\"b\", \"c\"], mode = \"strict\" }\n",
    );
    let line = line_of(&t, "policy = ");
    check(
        &t,
        &[(
            &format!("line {line}: domains[1] (\"/b/\").policy"),
            "domain /b/ has policy (allowed = b,c, mode = strict) but its group b (g2) keeps replicas (voters or learners) in a,",
        )],
    );
}

/// A policy naming a tag no region carries, or a region that does not exist, is refused;
/// so is an unknown mode.
#[test]
fn residency_policy_names_unknown_things() {
    let tag = edit(
        "prefix = \"/b/\"\ngroup = \"b\"\n",
        "prefix = \"/b/\"\ngroup = \"b\"\npolicy = { allowed = [\"jurisdiction:mars\"] }\n",
    );
    check(
        &tag,
        &[(
            "domains[1] (\"/b/\").policy",
            "unknown tag jurisdiction:mars",
        )],
    );
    let region = edit(
        "prefix = \"/b/\"\ngroup = \"b\"\n",
        "prefix = \"/b/\"\ngroup = \"b\"\npolicy = { allowed = [\"atlantis\"] }\n",
    );
    check(
        &region,
        &[("domains[1] (\"/b/\").policy", "unknown region \"atlantis\"")],
    );
    let mode = edit(
        "prefix = \"/b/\"\ngroup = \"b\"\n",
        "prefix = \"/b/\"\ngroup = \"b\"\npolicy = { allowed = [\"b\"], mode = \"lax\" }\n",
    );
    check(
        &mode,
        &[(
            "domains[1] (\"/b/\").policy.mode",
            "unknown policy mode \"lax\"",
        )],
    );
}

/// A group whose replicas all sit where the policy allows passes: the global group's learners
/// follow its voters, a regional group without learner regions stays home.
#[test]
fn residency_policy_satisfied() {
    let t = edit(
        "[[groups]]\nid = 10",
        "[[groups]]\nid = 4\nname = \"b-private\"\nkind = \"regional\"\nhome = \"b\"\nvoters = [4, 5, 6]\n\n[[groups]]\nid = 10",
    ) + "\n[[domains]]\nprefix = \"/b/pii/\"\ngroup = \"b-private\"\npolicy = { allowed = [\"b\"] }\n";
    let topo = Topology::parse(&t, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let d = topo
        .domains
        .iter()
        .find(|d| d.prefix == "/b/pii/")
        .expect("domain");
    assert_eq!(d.group, GroupId(4));
    assert!(d.policy.is_some());
    assert!(topo.learners(GroupId(4)).is_empty());
}
