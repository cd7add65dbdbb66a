//! The default rule packs shipped inside the binary (the TOML files in `rules/packs/`).
//! They are ordinary rule files: operators can read them, copy them and override them.

use crate::load::RuleSource;

/// (pack name, file text) for every shipped pack.
const PACKS: &[(&str, &str)] = &[
    ("tilt", include_str!("../packs/tilt.toml")),
    ("water-gb3838", include_str!("../packs/water-gb3838.toml")),
];

/// The shipped packs as rule sources named `builtin:<pack>`.
pub fn builtin_packs() -> Vec<RuleSource> {
    PACKS
        .iter()
        .map(|(name, text)| RuleSource { name: format!("builtin:{name}"), text: (*text).to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EventKind, SubjectId};
    use crate::load::RuleSet;
    use crate::scope::{SensorKind, Subject};

    fn engine_for(kind: SensorKind) -> Engine {
        let rules = RuleSet::compile(&builtin_packs()).expect("shipped packs compile");
        let subject = Subject { id: "s1".into(), kind, site: "site".into(), building: None, grid: None };
        Engine::new(rules, &[subject])
    }

    fn fired(engine: &mut Engine, samples: &[(i64, &[(&str, f64)])]) -> Vec<String> {
        let mut events = Vec::new();
        for (at, fields) in samples {
            engine.observe(SubjectId(0), *at, fields, &mut events);
        }
        events
            .iter()
            .filter(|e| e.kind == EventKind::Fired)
            .map(|e| engine.rule(e.rule).id.clone())
            .collect()
    }

    #[test]
    fn shipped_packs_compile() {
        let rules = RuleSet::compile(&builtin_packs()).expect("shipped packs compile");
        assert!(rules.rules.len() >= 5);
    }

    #[test]
    fn tilt_pack_fires_danger_past_seven_per_mille() {
        let mut e = engine_for(SensorKind::Tilt);
        let minute = 60_000;
        let samples: Vec<(i64, &[(&str, f64)])> =
            (0..3).map(|i| (i * minute, &[("x", 0.30), ("y", 0.30)][..])).collect();
        let ids = fired(&mut e, &samples);
        assert!(ids.contains(&"tilt-danger".to_string()), "{ids:?}");
    }

    #[test]
    fn tilt_pack_stays_quiet_below_the_ladder() {
        let mut e = engine_for(SensorKind::Tilt);
        let samples: Vec<(i64, &[(&str, f64)])> = (0..120).map(|i| (i * 60_000, &[("x", 0.05), ("y", -0.05)][..])).collect();
        assert!(fired(&mut e, &samples).is_empty());
    }

    #[test]
    fn water_pack_fires_when_oxygen_leaves_class_three() {
        let mut e = engine_for(SensorKind::Water);
        let samples: Vec<(i64, &[(&str, f64)])> = (0..12).map(|i| (i * 60_000, &[("do", 4.9), ("ph", 7.2)][..])).collect();
        assert_eq!(fired(&mut e, &samples), vec!["water-do-below-class-iii"]);
    }

    #[test]
    fn water_pack_accepts_class_three_oxygen() {
        let mut e = engine_for(SensorKind::Water);
        let samples: Vec<(i64, &[(&str, f64)])> = (0..30).map(|i| (i * 60_000, &[("do", 5.0), ("ph", 7.2), ("nh3n", 1.0)][..])).collect();
        assert!(fired(&mut e, &samples).is_empty());
    }
}
