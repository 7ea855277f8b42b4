//! The operations a token can grant.

use std::fmt;
use std::str::FromStr;

/// What a request does. `read`: get, range, `ls`, status of a key's group; `write`: put,
/// delete, txn (a txn needs `read` on every key it compares or reads and `write` on every key
/// it writes); `watch`: watch a key or prefix; `lease`: grant, keep alive, revoke leases under a
/// prefix; `lock`: locks and elections named under a prefix; `admin`: placement (moves,
/// policies), membership, revocation and minting through the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read,
    Write,
    Watch,
    Lease,
    Lock,
    Admin,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Read,
        Op::Write,
        Op::Watch,
        Op::Lease,
        Op::Lock,
        Op::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Watch => "watch",
            Op::Lease => "lease",
            Op::Lock => "lock",
            Op::Admin => "admin",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|o| o.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown operation {s:?}: expected one of read, write, watch, lease, lock, admin"
                )
            })
    }
}

/// A set of operations, written `read,watch` (or `all`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpSet(std::collections::BTreeSet<Op>);

impl OpSet {
    pub fn all() -> Self {
        Self(Op::ALL.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, op: Op) -> bool {
        self.0.contains(&op)
    }

    pub fn iter(&self) -> impl Iterator<Item = Op> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Op> for OpSet {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl FromStr for OpSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "all" {
            return Ok(Self::all());
        }
        let set: OpSet = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if set.is_empty() {
            return Err(
                "name at least one operation (read, write, watch, lease, lock, admin)".into(),
            );
        }
        Ok(set)
    }
}

impl fmt::Display for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Op::name).collect();
        f.write_str(&names.join(","))
    }
}
