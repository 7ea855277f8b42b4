//! The placement map inside the global group's state: one key, [`PLACEMENT_KEY`], that no
//! client path can name. Storing it as a key gives it persistence, snapshots, history and the
//! applied-change notices for free; its `mod_revision` is the map's epoch. Changes are judged
//! by `meridian_placement::apply` — a refusal changes nothing.

use crate::kv::KvState;
use meridian_types::{
    CommandResult, Event, PlacementChange, PlacementMap, Rejection, PLACEMENT_KEY, PROFILES_KEY,
};

impl KvState {
    /// The epoch of the committed placement map (its key's `mod_revision`), without decoding
    /// it: followers decode only when this moved.
    pub fn placement_epoch(&self) -> Option<u64> {
        self.keys.get(PLACEMENT_KEY).map(|kv| kv.mod_revision)
    }

    /// The committed placement map, if this group holds one, with its timestamp profiles
    /// (kept under their own key: see [`PROFILES_KEY`]).
    pub fn placement_map(&self) -> Option<PlacementMap> {
        let kv = self.keys.get(PLACEMENT_KEY)?;
        let mut map = decode(&kv.value)?;
        if let Some(p) = self.keys.get(PROFILES_KEY) {
            map.profiles = bincode::deserialize(&p.value).unwrap_or_default();
        }
        Some(map)
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
            Ok(Some(map)) => match (bincode::serialize(&map), bincode::serialize(&map.profiles)) {
                (Ok(value), Ok(profiles)) => {
                    // The map's key always moves (its epoch is this revision): followers
                    // notice every change, a profile's included.
                    self.put_internal(revision, PLACEMENT_KEY, value, events);
                    let before = current.map(|m| m.profiles).unwrap_or_default();
                    if map.profiles != before {
                        self.put_internal(revision, PROFILES_KEY, profiles, events);
                    }
                    CommandResult::Applied
                }
                (Err(e), _) | (_, Err(e)) => CommandResult::Rejected(Rejection {
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

    /// Profiles live under their own key, so the map's encoding (and a seed entry in an older
    /// log) is what it was: bytes of a map without the field still decode, and a profile set
    /// once reads back with the map after later changes.
    #[test]
    fn profiles_live_beside_the_map_whose_encoding_is_unchanged() {
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
        assert_eq!(
            bincode::serialize(&PlacementMap { epoch: 9, ..seed() }).unwrap(),
            old
        );
        let mut s = KvState::default();
        s.apply(4, &Command::Placement(PlacementChange::Seed(seed())));
        let (r, _) = s.apply(
            5,
            &Command::Placement(PlacementChange::SetProfile {
                prefix: "/a/".into(),
                profile: Some(meridian_types::ReadProfile::GlobalReads),
                expected_epoch: None,
            }),
        );
        assert_eq!(r, CommandResult::Applied);
        let (r, _) = s.apply(
            6,
            &Command::Placement(PlacementChange::SetPolicy {
                prefix: "/a/".into(),
                policy: None,
                expected_epoch: None,
            }),
        );
        assert_eq!(r, CommandResult::Applied);
        let map = s.placement_map().expect("map");
        assert_eq!(map.epoch, 6);
        assert_eq!(
            map.profiles.get("/a/"),
            Some(&meridian_types::ReadProfile::GlobalReads)
        );
        assert_eq!(s.placement_epoch(), Some(6));
    }
}
