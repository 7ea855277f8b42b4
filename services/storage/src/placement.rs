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

/// The map as encoded before `profiles` existed.
#[derive(serde::Deserialize)]
struct PlacementMapV1 {
    epoch: u64,
    regions: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    groups: std::collections::BTreeMap<meridian_types::GroupId, meridian_types::GroupPlacement>,
    domains: Vec<meridian_types::DomainPlacement>,
    moves_done: Vec<meridian_types::MoveRecord>,
}

/// Reads an encoded map: this version's, or one written before `profiles` existed (bincode has
/// no optional fields: the old shape is read when the new one runs out of bytes).
fn decode(bytes: &[u8]) -> Option<PlacementMap> {
    if let Ok(map) = bincode::deserialize::<PlacementMap>(bytes) {
        return Some(map);
    }
    let old: PlacementMapV1 = bincode::deserialize(bytes).ok()?;
    Some(PlacementMap {
        epoch: old.epoch,
        regions: old.regions,
        groups: old.groups,
        domains: old.domains,
        moves_done: old.moves_done,
        profiles: Default::default(),
    })
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
            profiles: BTreeMap::new(),
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

    /// A map written before `profiles` existed (the old shape, as bincode wrote it) still
    /// reads, with no profiles; a map with profiles reads back with them.
    #[test]
    fn maps_written_before_profiles_still_read() {
        #[derive(serde::Serialize)]
        struct Old {
            epoch: u64,
            regions: BTreeMap<String, BTreeMap<String, String>>,
            groups: BTreeMap<GroupId, GroupPlacement>,
            domains: Vec<DomainPlacement>,
            moves_done: Vec<meridian_types::MoveRecord>,
        }
        let m = seed();
        let old = bincode::serialize(&Old {
            epoch: 9,
            regions: m.regions.clone(),
            groups: m.groups.clone(),
            domains: m.domains.clone(),
            moves_done: Vec::new(),
        })
        .unwrap();
        let read = decode(&old).expect("an old map reads");
        assert_eq!(
            (read.epoch, read.domains, read.profiles.len()),
            (9, m.domains.clone(), 0)
        );
        let mut new = seed();
        new.profiles
            .insert("/a/".into(), meridian_types::ReadProfile::GlobalReads);
        let back = decode(&bincode::serialize(&new).unwrap()).expect("a new map reads");
        assert_eq!(back, new);
        assert_eq!(decode(b"\x01\x02"), None, "garbage is no map");
    }
}
