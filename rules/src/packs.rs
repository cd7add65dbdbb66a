//! The default rule packs shipped inside the binary (the TOML files in `rules/packs/`).
//! They are ordinary rule files: operators can read them, copy them and override them.
//!
//! The tests below are built from the standards' own tables: for every class and boundary, a
//! value just inside must stay quiet and a value just outside must reach the level.

use crate::load::RuleSource;

/// (pack name, file text) for every shipped pack.
const PACKS: &[(&str, &str)] = &[
    ("tilt", include_str!("../packs/tilt.toml")),
    ("water-gb3838", include_str!("../packs/water-gb3838.toml")),
    ("drinking-gb5749", include_str!("../packs/drinking-gb5749.toml")),
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
    use crate::severity::Severity;
    use std::collections::BTreeMap;

    const MIN: i64 = 60_000;

    fn engine_for(kind: SensorKind, tags: &[(&str, &str)]) -> Engine {
        let rules = RuleSet::compile(&builtin_packs()).expect("shipped packs compile");
        let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let subject = Subject { id: "s1".into(), kind, site: "site".into(), building: None, grid: None, tags: tags.into(), interval_ms: MIN };
        Engine::new(rules, &[subject])
    }

    /// Feeds the same fields once a minute for `minutes` and returns the worst (rule, severity)
    /// reached, ignoring device rules.
    fn worst(engine: &mut Engine, fields: &[(&str, f64)], minutes: i64) -> Option<(String, Severity)> {
        let mut events = Vec::new();
        for m in 0..=minutes {
            engine.observe(SubjectId(0), m * MIN, fields, &mut events);
            engine.tick(m * MIN, &mut events);
        }
        events
            .iter()
            .filter(|e| e.kind != EventKind::Cleared && !engine.rule(e.rule).device)
            .map(|e| (e.severity, engine.rule(e.rule).id.clone()))
            .max()
            .map(|(severity, id)| (id, severity))
    }

    fn surface(class: &str) -> Engine {
        engine_for(SensorKind::Water, &[("use", "surface"), ("water_class", class)])
    }

    /// A healthy sample for the other fields, so only the field under test can fire.
    fn water(field: &str, value: f64) -> Vec<(&str, f64)> {
        let mut fields = vec![("do", 9.0), ("nh3n", 0.05), ("ph", 7.5)];
        fields.retain(|(name, _)| *name != field);
        fields.push((field, value));
        fields
    }

    const CLASSES: [&str; 5] = ["I", "II", "III", "IV", "V"];
    const DO_LIMITS: [f64; 5] = [7.5, 6.0, 5.0, 3.0, 2.0];
    const NH3N_LIMITS: [f64; 5] = [0.15, 0.5, 1.0, 1.5, 2.0];

    #[test]
    fn shipped_packs_compile() {
        let rules = RuleSet::compile(&builtin_packs()).expect("shipped packs compile");
        assert!(rules.rules.len() >= 25, "{}", rules.rules.len());
    }

    /// The level a value one class worse than the target should reach.
    fn expected(target: usize, worse_class: usize) -> Severity {
        match worse_class {
            _ if worse_class >= 5 => Severity::Danger,
            w if w == target + 1 => Severity::Warning,
            _ => Severity::Alarm,
        }
    }

    #[test]
    fn dissolved_oxygen_boundaries_for_every_target_class() {
        for (target, class) in CLASSES.iter().enumerate() {
            for (boundary, &limit) in DO_LIMITS.iter().enumerate().skip(target) {
                let inside = worst(&mut surface(class), &water("do", limit), 12);
                let outside = worst(&mut surface(class), &water("do", limit - 0.01), 12);
                let deeper = if boundary + 1 < 5 { boundary + 1 } else { 5 };
                let expected_inside = (boundary > target).then(|| expected(target, boundary));
                assert_eq!(inside.map(|w| w.1), expected_inside, "class {class}: DO {limit} is inside class {}", CLASSES[boundary]);
                assert_eq!(outside.map(|w| w.1), Some(expected(target, deeper)), "class {class}: DO {} is outside class {}", limit - 0.01, CLASSES[boundary]);
            }
        }
    }

    #[test]
    fn ammonia_boundaries_for_every_target_class() {
        for (target, class) in CLASSES.iter().enumerate() {
            for (boundary, &limit) in NH3N_LIMITS.iter().enumerate().skip(target) {
                let inside = worst(&mut surface(class), &water("nh3n", limit), 32);
                let outside = worst(&mut surface(class), &water("nh3n", limit + 0.01), 32);
                let deeper = if boundary + 1 < 5 { boundary + 1 } else { 5 };
                let expected_inside = (boundary > target).then(|| expected(target, boundary));
                assert_eq!(inside.map(|w| w.1), expected_inside, "class {class}: NH3-N {limit} is inside class {}", CLASSES[boundary]);
                assert_eq!(outside.map(|w| w.1), Some(expected(target, deeper)), "class {class}: NH3-N {} is outside class {}", limit + 0.01, CLASSES[boundary]);
            }
        }
    }

    #[test]
    fn ph_must_stay_within_six_to_nine_in_every_class() {
        for class in CLASSES {
            for (ph, fires) in [(6.0, false), (5.99, true), (9.0, false), (9.01, true)] {
                let reached = worst(&mut surface(class), &water("ph", ph), 12);
                assert_eq!(reached.is_some(), fires, "class {class}, pH {ph}: {reached:?}");
            }
        }
    }

    #[test]
    fn turbidity_and_conductivity_are_judged_against_the_sites_usual_level() {
        // (ratio to the installation baseline, expected level) just inside and just outside
        // each boundary of domain.md §3: +30% notice, 2× alarm.
        let cases = [(1.29, None), (1.31, Some(Severity::Notice)), (1.99, Some(Severity::Notice)), (2.01, Some(Severity::Alarm))];
        for field in ["turbidity", "conductivity"] {
            for (ratio, expected) in cases {
                let mut e = surface("III");
                let usual = 40.0;
                e.set_baseline(SubjectId(0), field, usual);
                let reached = worst(&mut e, &water(field, usual * ratio), 95);
                assert_eq!(reached.as_ref().map(|w| w.1), expected, "{field} at {ratio}× usual: {reached:?}");
                if let Some((id, _)) = reached {
                    assert!(id.starts_with(&format!("water-{field}")), "{id}");
                }
            }
        }
    }

    #[test]
    fn the_usual_level_is_learned_over_the_first_week() {
        let mut e = surface("III");
        let mut events = Vec::new();
        let hour = 60 * MIN;
        for h in 0..=(7 * 24) {
            e.observe(SubjectId(0), h * hour, &water("turbidity", 12.0), &mut events);
        }
        for m in 1..=95 {
            e.observe(SubjectId(0), 7 * 24 * hour + m * MIN, &water("turbidity", 30.0), &mut events);
            e.tick(7 * 24 * hour + m * MIN, &mut events);
        }
        let ids: Vec<_> = events.iter().map(|ev| (e.rule(ev.rule).id.as_str(), ev.kind, ev.severity)).collect();
        assert_eq!(ids.last(), Some(&("water-turbidity-above-usual", EventKind::Changed, Severity::Alarm)), "30 NTU is 2.5× the usual 12: {ids:?}");
        assert!(ids.iter().all(|(id, _, _)| *id == "water-turbidity-above-usual"), "{ids:?}");
        assert_eq!(e.baseline(SubjectId(0), "turbidity", crate::signal::BaselineSpec::Learn { window_ms: 7 * 24 * hour }), Some(12.0));
    }

    #[test]
    fn a_ph_jump_of_more_than_one_unit_in_an_hour_is_critical() {
        let mut e = surface("III");
        let mut events = Vec::new();
        for m in 0..10 {
            e.observe(SubjectId(0), m * MIN, &water("ph", 7.2), &mut events);
        }
        for m in 10..14 {
            e.observe(SubjectId(0), m * MIN, &water("ph", 8.4), &mut events);
        }
        let ids: Vec<_> = events.iter().map(|ev| (e.rule(ev.rule).id.as_str(), ev.severity)).collect();
        assert_eq!(ids, vec![("water-ph-jump", Severity::Danger)]);
    }

    #[test]
    fn drinking_water_boundaries() {
        let cases: [(&str, f64, Option<Severity>); 10] = [
            ("turbidity", 1.0, None),
            ("turbidity", 1.01, Some(Severity::Alarm)),
            ("turbidity", 3.01, Some(Severity::Danger)),
            ("ph", 6.5, None),
            ("ph", 6.49, Some(Severity::Alarm)),
            ("ph", 8.51, Some(Severity::Alarm)),
            ("cl2", 0.05, None),
            ("cl2", 0.049, Some(Severity::Alarm)),
            ("cl2", 0.019, Some(Severity::Danger)),
            ("cl2", 2.01, Some(Severity::Alarm)),
        ];
        for (field, value, expected) in cases {
            let mut e = engine_for(SensorKind::Water, &[("use", "drinking")]);
            let mut fields = vec![("turbidity", 0.3), ("ph", 7.2), ("cl2", 0.4), ("nh3n", 0.1), ("codmn", 1.0)];
            fields.retain(|(name, _)| *name != field);
            fields.push((field, value));
            assert_eq!(worst(&mut e, &fields, 12).map(|w| w.1), expected, "{field} = {value}");
        }
    }

    #[test]
    fn drinking_points_are_not_judged_as_surface_water() {
        let mut e = engine_for(SensorKind::Water, &[("use", "drinking")]);
        assert!(e.rules_for(SubjectId(0)).iter().all(|r| !r.id.starts_with("water-") || r.id == "water-no-data" || r.id == "water-ph-out-of-range"));
        assert_eq!(worst(&mut e, &[("do", 1.0), ("turbidity", 0.3), ("ph", 7.2), ("cl2", 0.4)], 12), None);
    }

    fn tilt_degrees(permille: f64) -> f64 {
        (permille / 1000.0).atan().to_degrees()
    }

    #[test]
    fn tilt_ladder_boundaries_from_the_domain_table() {
        let cases = [
            (0.99, None),
            (1.01, Some(Severity::Notice)),
            (1.99, Some(Severity::Notice)),
            (2.01, Some(Severity::Warning)),
            (3.99, Some(Severity::Warning)),
            (4.01, Some(Severity::Alarm)),
            (6.99, Some(Severity::Alarm)),
            (7.01, Some(Severity::Danger)),
        ];
        for (permille, expected) in cases {
            let mut e = engine_for(SensorKind::Tilt, &[]);
            e.set_baseline(SubjectId(0), "x", 0.35);
            e.set_baseline(SubjectId(0), "y", -0.2);
            let fields = [("x", 0.35 + tilt_degrees(permille)), ("y", -0.2)];
            let reached = worst(&mut e, &fields, 70);
            assert_eq!(reached.as_ref().map(|w| w.1), expected, "{permille}‰: {reached:?}");
            if let Some((id, _)) = reached {
                assert_eq!(id, "tilt-change");
            }
        }
    }

    #[test]
    fn mounting_offset_is_learned_not_alarmed() {
        let mut e = engine_for(SensorKind::Tilt, &[]);
        // A box mounted 0.8° off plumb (far past 7‰ as an absolute angle).
        assert_eq!(worst(&mut e, &[("x", 0.8), ("y", 0.1)], 26 * 60), None);
    }

    #[test]
    fn slow_creep_must_last_two_consecutive_months_to_reach_alarm() {
        // One reading per hour for 61 days; the wall leans 0.6‰ per 30 days for the first
        // month, then `second_month` per 30 days.
        let run = |second_month: f64| {
            let mut e = engine_for(SensorKind::Tilt, &[]);
            e.set_baseline(SubjectId(0), "x", 0.0);
            e.set_baseline(SubjectId(0), "y", 0.0);
            let mut events = Vec::new();
            for h in 0..=(61 * 24) {
                let days = h as f64 / 24.0;
                let permille = if days <= 30.0 { days / 30.0 * 0.6 } else { 0.6 + (days - 30.0) / 30.0 * second_month };
                e.observe(SubjectId(0), h * 60 * MIN, &[("x", tilt_degrees(permille)), ("y", 0.0)], &mut events);
            }
            events.iter().filter(|ev| ev.kind == EventKind::Fired).map(|ev| e.rule(ev.rule).id.clone()).collect::<Vec<_>>()
        };
        let steady = run(0.6);
        assert!(steady.contains(&"tilt-creep-two-months".to_string()), "{steady:?}");
        let stopped = run(0.2);
        assert!(stopped.contains(&"tilt-creep-month".to_string()), "{stopped:?}");
        assert!(!stopped.contains(&"tilt-creep-two-months".to_string()), "the second month stayed under 0.5‰: {stopped:?}");
    }

    #[test]
    fn sudden_jump_is_an_emergency_on_its_own() {
        let mut e = engine_for(SensorKind::Tilt, &[]);
        let mut events = Vec::new();
        for m in 0..30 {
            let x = if m < 20 { 0.02 } else { 0.15 };
            e.observe(SubjectId(0), m * MIN, &[("x", x), ("y", 0.0)], &mut events);
        }
        let ids: Vec<_> = events.iter().map(|ev| (e.rule(ev.rule).id.as_str(), ev.kind, ev.severity)).collect();
        assert_eq!(ids, vec![("tilt-sudden", EventKind::Fired, Severity::Danger)]);
    }

    #[test]
    fn a_single_spike_does_not_survive_the_median_filter() {
        let mut e = engine_for(SensorKind::Tilt, &[]);
        let mut events = Vec::new();
        for m in 0..30 {
            let x = if m == 20 { 0.5 } else { 0.02 };
            e.observe(SubjectId(0), m * MIN, &[("x", x), ("y", 0.0)], &mut events);
        }
        assert!(events.is_empty(), "{events:?}");
    }
}
