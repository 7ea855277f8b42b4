//! The constraint graph: an edge `a -> b` says every legal total order puts `a` before `b`.
//!
//! Nodes `0..ops` are the history's operations (numbered as in `Prepared`); nodes past that are
//! virtual "level barriers" between two batches of a group's writes, which keep the graph linear
//! in size when many writes share a revision. Everything here is iterative: a session of a
//! million operations is a path of a million nodes, and must not overflow a stack.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::history::OpKind;
use crate::prepare::Prepared;

/// Nodes of a first-found cycle from which a shortest cycle is searched; each costs one BFS.
const CYCLE_SHORTENING_STARTS_MAX: usize = 16;

/// Why one operation must precede another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// Consecutive operations of one session.
    SessionOrder,
    /// Writes of one group at consecutive revisions (directly or through a barrier node).
    RevisionOrder,
    /// A write precedes a read that returned its value.
    ReadsFrom,
    /// A read precedes the write that next overwrote the value it returned.
    OverwrittenLater,
    /// A read that found its key absent precedes the key's first write.
    AbsentBeforeFirstWrite,
}

pub(crate) struct Graph {
    edges: Vec<Vec<(usize, Why)>>,
    ops: usize,
}

impl Graph {
    pub(crate) fn build(prepared: &Prepared<'_>) -> Graph {
        let ops = prepared.ops.len();
        let mut graph = Graph {
            edges: vec![Vec::new(); ops],
            ops,
        };
        graph.add_session_order(prepared);
        let next_write = graph.add_revision_order(prepared);
        graph.add_read_edges(prepared, &next_write);
        graph
    }

    /// True for an operation, false for a barrier node.
    pub(crate) fn is_op(&self, node: usize) -> bool {
        node < self.ops
    }

    fn add_edge(&mut self, from: usize, to: usize, why: Why) {
        self.edges[from].push((to, why));
    }

    fn add_node(&mut self) -> usize {
        self.edges.push(Vec::new());
        self.edges.len() - 1
    }

    /// Ops are numbered session by session, so program order links consecutive included ops of
    /// the same session (a dropped write is skipped, not a break in the chain). A write the
    /// client got no answer for is ordered after what its session did before it, but nothing of
    /// its session is ordered after it: an unanswered write may still take effect later (the
    /// contract in docs/consistency.md — read before retrying), as Jepsen's checkers treat a
    /// process whose operation ended `:info` as gone. The chain of answered operations runs
    /// past it unbroken.
    fn add_session_order(&mut self, prepared: &Prepared<'_>) {
        // The session's last included operation that got an answer.
        let mut previous: Option<usize> = None;
        for (id, flat) in prepared.ops.iter().enumerate() {
            if !prepared.included[id] {
                continue;
            }
            if let Some(previous) = previous {
                if prepared.ops[previous].session == flat.session {
                    self.add_edge(previous, id, Why::SessionOrder);
                }
            }
            if !matches!(flat.op.kind, OpKind::Write { revision: None, .. }) {
                previous = Some(id);
            }
        }
    }

    /// Chains each group's writes by revision, a batch (one revision) being one level; returns
    /// for each write the next write to the same key, the order reads are judged against.
    fn add_revision_order(&mut self, prepared: &Prepared<'_>) -> Vec<Option<usize>> {
        // BTreeMaps so barrier node numbers, hence witnesses, do not depend on hashing.
        let mut by_group: BTreeMap<u64, Vec<(u64, usize)>> = BTreeMap::new();
        let mut by_key: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
        for (id, revision) in prepared.write_revision.iter().enumerate() {
            let Some(revision) = *revision else {
                continue;
            };
            let op = prepared.ops[id].op;
            by_group.entry(op.group).or_default().push((revision, id));
            by_key
                .entry(op.kind.key())
                .or_default()
                .push((revision, id));
        }
        for writes in by_group.values_mut() {
            writes.sort_unstable();
            let levels: Vec<&[(u64, usize)]> = writes.chunk_by(|a, b| a.0 == b.0).collect();
            for pair in levels.windows(2) {
                if let [earlier, later] = pair {
                    self.link_levels(earlier, later);
                }
            }
        }
        let mut next_write = vec![None; self.ops];
        for writes in by_key.values_mut() {
            // Validation guarantees distinct revisions per key: a total order.
            writes.sort_unstable();
            for pair in writes.windows(2) {
                if let [(_, earlier), (_, later)] = pair {
                    next_write[*earlier] = Some(*later);
                }
            }
        }
        next_write
    }

    /// Every write of `earlier` precedes every write of `later`: direct edges when one side is
    /// a single write, otherwise through one barrier node (|a| + |b| edges, not |a| * |b|).
    fn link_levels(&mut self, earlier: &[(u64, usize)], later: &[(u64, usize)]) {
        if earlier.len() == 1 || later.len() == 1 {
            for &(_, from) in earlier {
                for &(_, to) in later {
                    self.add_edge(from, to, Why::RevisionOrder);
                }
            }
            return;
        }
        let barrier = self.add_node();
        for &(_, from) in earlier {
            self.add_edge(from, barrier, Why::RevisionOrder);
        }
        for &(_, to) in later {
            self.add_edge(barrier, to, Why::RevisionOrder);
        }
    }

    /// A read sits after the write it returned and before that write's successor on the key;
    /// a read of an absent key sits before the key's first write.
    fn add_read_edges(&mut self, prepared: &Prepared<'_>, next_write: &[Option<usize>]) {
        let mut first_write: HashMap<&str, (u64, usize)> = HashMap::new();
        for (id, revision) in prepared.write_revision.iter().enumerate() {
            if let Some(revision) = *revision {
                let key = prepared.ops[id].op.kind.key();
                let first = first_write.entry(key).or_insert((revision, id));
                if revision < first.0 {
                    *first = (revision, id);
                }
            }
        }
        for (id, flat) in prepared.ops.iter().enumerate() {
            let OpKind::Read { key, .. } = &flat.op.kind else {
                continue;
            };
            match prepared.reads_from[id] {
                Some(write) => {
                    self.add_edge(write, id, Why::ReadsFrom);
                    if let Some(next) = next_write[write] {
                        self.add_edge(id, next, Why::OverwrittenLater);
                    }
                }
                None => {
                    if let Some(&(_, first)) = first_write.get(key.as_str()) {
                        self.add_edge(id, first, Why::AbsentBeforeFirstWrite);
                    }
                }
            }
        }
    }

    /// Kahn's algorithm. `Ok`: every node, each after all its predecessors. `Err`: which nodes
    /// were emitted; the rest contain a cycle (each of them has an unemitted predecessor).
    pub(crate) fn topological_order(&self) -> Result<Vec<usize>, Vec<bool>> {
        let nodes = self.edges.len();
        let mut in_degree = vec![0usize; nodes];
        for edges in &self.edges {
            for &(to, _) in edges {
                in_degree[to] += 1;
            }
        }
        let mut ready: VecDeque<usize> = (0..nodes).filter(|&n| in_degree[n] == 0).collect();
        let mut order = Vec::with_capacity(nodes);
        let mut emitted = vec![false; nodes];
        while let Some(node) = ready.pop_front() {
            emitted[node] = true;
            order.push(node);
            for &(to, _) in &self.edges[node] {
                in_degree[to] -= 1;
                if in_degree[to] == 0 {
                    ready.push_back(to);
                }
            }
        }
        if order.len() == nodes {
            Ok(order)
        } else {
            Err(emitted)
        }
    }

    /// A cycle among the unemitted nodes, each node with the edge it leaves by; short where
    /// cheaply possible, since a person has to read it.
    pub(crate) fn find_cycle(&self, emitted: &[bool]) -> Vec<(usize, Why)> {
        let mut best = self.any_cycle(emitted);
        // A stale read lies on every cycle it causes, so the shortest cycle through it is the
        // clearest explanation: search from reads placed before an overwrite first.
        let is_read_bound =
            |why: &Why| matches!(why, Why::OverwrittenLater | Why::AbsentBeforeFirstWrite);
        let starts: Vec<usize> = best
            .iter()
            .filter(|(_, why)| is_read_bound(why))
            .chain(best.iter().filter(|(_, why)| !is_read_bound(why)))
            .map(|&(node, _)| node)
            .take(CYCLE_SHORTENING_STARTS_MAX)
            .collect();
        for start in starts {
            if let Some(shorter) = self.cycle_through_shorter_than(start, best.len(), emitted) {
                best = shorter;
            }
        }
        best
    }

    /// Iterative depth-first search; the first back edge closes a cycle on the stack.
    fn any_cycle(&self, emitted: &[bool]) -> Vec<(usize, Why)> {
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let mut colour = vec![WHITE; self.edges.len()];
        // (node, index of the next edge to try)
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in 0..self.edges.len() {
            if emitted[root] || colour[root] != WHITE {
                continue;
            }
            colour[root] = GREY;
            stack.push((root, 0));
            while let Some(top) = stack.len().checked_sub(1) {
                let (node, next) = stack[top];
                let Some(&(to, _)) = self.edges[node].get(next) else {
                    colour[node] = BLACK;
                    stack.pop();
                    continue;
                };
                stack[top].1 += 1;
                if emitted[to] {
                    continue;
                }
                match colour[to] {
                    WHITE => {
                        colour[to] = GREY;
                        stack.push((to, 0));
                    }
                    GREY => {
                        let from = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                        // Each frame's last tried edge is the one it left by.
                        return stack[from..]
                            .iter()
                            .map(|&(n, tried)| (n, self.edges[n][tried.saturating_sub(1)].1))
                            .collect();
                    }
                    _ => {}
                }
            }
        }
        Vec::new()
    }

    /// Breadth-first search from `start` back to itself over unemitted nodes, abandoned once no
    /// cycle of fewer than `nodes_max` nodes remains possible.
    fn cycle_through_shorter_than(
        &self,
        start: usize,
        nodes_max: usize,
        emitted: &[bool],
    ) -> Option<Vec<(usize, Why)>> {
        // node -> (parent, edge from parent); a map, as a bounded search touches few nodes.
        let mut reached: HashMap<usize, (usize, Why)> = HashMap::new();
        let mut queue = VecDeque::from([(start, 0usize)]);
        while let Some((node, distance)) = queue.pop_front() {
            // Closing the cycle from here makes it `distance + 1` nodes long, and BFS only
            // goes further from here on.
            if distance + 1 >= nodes_max {
                return None;
            }
            for &(to, why) in &self.edges[node] {
                if emitted[to] {
                    continue;
                }
                if to == start {
                    let mut cycle = vec![(node, why)];
                    let mut at = node;
                    while at != start {
                        let &(parent, why) = reached.get(&at)?;
                        cycle.push((parent, why));
                        at = parent;
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if let Entry::Vacant(entry) = reached.entry(to) {
                    entry.insert((node, why));
                    queue.push_back((to, distance + 1));
                }
            }
        }
        None
    }
}
