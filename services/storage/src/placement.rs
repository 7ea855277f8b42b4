//! The placement map inside the global group's state: one key, [`PLACEMENT_KEY`], that no
//! client path can name. Storing it as a key gives it persistence, snapshots, history and the
//! applied-change notices for free; its `mod_revision` is the map's epoch. Changes are judged
//! by `meridian_placement::apply` — a refusal changes nothing.

use crate::kv::KvState;
use meridian_types::{
    CommandResult, Event, PlacementChange, PlacementMap, Rejection, PLACEMENT_KEY,
};

impl KvState {
    /// The epoch of the committed placement map (its key's `mod_revision`), without decoding
    /// it: followers decode only when this moved.
    pub fn placement_epoch(&self) -> Option<u64> {
        self.keys.get(PLACEMENT_KEY).map(|kv| kv.mod_revision)
    }

    /// The committed placement map, if this group holds one.
    pub fn placement_map(&self) -> Option<PlacementMap> {
        let kv = self.keys.get(PLACEMENT_KEY)?;
        decode(&kv.value)
    }

    pub(crate) fn apply_placement(
        &mut self,
        revision: u64,
        change: &PlacementChange,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        let current = self.placement_map();
        match meridian_placement::apply(current.as_ref(), change, revision) {
            Err(r) => CommandResult::Rejected(Rejection {
                rule: r.rule.to_string(),
                message: r.message,
            }),
            Ok(None) => CommandResult::Applied,
            Ok(Some(map)) => match bincode::serialize(&map) {
                Ok(value) => {
                    self.put_internal(revision, PLACEMENT_KEY, value, events);
                    CommandResult::Applied
                }
                Err(e) => CommandResult::Rejected(Rejection {
                    rule: "internal".into(),
                    message: format!("encoding the placement map: {e}"),
                }),
            },
        }
    }
}

fn decode(bytes: &[u8]) -> Option<PlacementMap> {
    bincode::deserialize(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::{Command, DomainPlacement, GroupId, GroupPlacement};
    use std::collections::BTreeMap;

    fn seed() -> PlacementMap {
        PlacementMap {
            epoch: 0,
            regions: BTreeMap::from([("r".to_string(), BTreeMap::new())]),
            groups: BTreeMap::from([(
                GroupId(1),
                GroupPlacement {
                    name: "g".into(),
                    voters: BTreeMap::from([("r".to_string(), 3)]),
                    learners: BTreeMap::new(),
                },
            )]),
            domains: vec![DomainPlacement {
                prefix: "/a/".into(),
                group: GroupId(1),
                policy: None,
                moving: None,
                since: 0,
            }],
            moves_done: Vec::new(),
        }
    }

    /// The map is stored at its epoch, survives a second seed unchanged, and a refused change
    /// leaves state and events untouched.
    #[test]
    fn stored_once_and_refusals_change_nothing() {
        let mut s = KvState::default();
        let (r, ev) = s.apply(4, &Command::Placement(PlacementChange::Seed(seed())));
        assert_eq!(r, CommandResult::Applied);
        assert_eq!(ev.len(), 1);
        assert_eq!(s.placement_map().map(|m| m.epoch), Some(4));
        let (_, ev) = s.apply(
            5,
            &Command::Placement(PlacementChange::Seed(PlacementMap::default())),
        );
        assert!(ev.is_empty());
        assert_eq!(s.placement_map().map(|m| m.domains.len()), Some(1));
        let before = s.keys.clone();
        let (r, ev) = s.apply(
            6,
            &Command::Placement(PlacementChange::SetPolicy {
                prefix: "/nope/".into(),
                policy: None,
                expected_epoch: None,
            }),
        );
        assert!(matches!(r, CommandResult::Rejected(ref x) if x.rule == "unknown_domain"));
        assert!(ev.is_empty());
        assert_eq!(s.keys, before);
    }
}
