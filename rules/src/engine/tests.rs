use super::*;
use crate::load::RuleSource;
use crate::scope::SensorKind;

const MIN: Millis = 60_000;

const RULES: &str = r#"
[[rule]]
id = "tilt"
kind = "tilt"
value = "permille(hypot(x, y))"
baseline = "learn 1h"
unit = "‰"

[[rule.level]]
severity = "warning"
above = 2.0
clear_below = 1.8

[[rule.level]]
severity = "danger"
above = 7.0
clear_below = 6.5
for = "1m"

[[rule]]
id = "do-low"
kind = "water"
value = "do"
below = 5
clear_above = 5.5
severity = "warning"

[[rule]]
id = "silent"
no_data = "2x"
severity = "alarm"

[[rule]]
id = "stuck"
kind = "water"
value = "do"
flat_line = 3
"#;

fn subject(id: &str, kind: SensorKind) -> Subject {
    Subject { id: id.into(), kind, site: "s".into(), building: None, grid: None, tags: Default::default(), interval_ms: 10 * MIN }
}

fn engine() -> Engine {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: RULES.into() }]).unwrap();
    Engine::new(rules, &[subject("house-1", SensorKind::Tilt), subject("pond-1", SensorKind::Water)])
}

fn ids(engine: &Engine, events: &[RuleEvent]) -> Vec<(String, EventKind, Severity)> {
    events.iter().map(|e| (engine.rule(e.rule).id.clone(), e.kind, e.severity)).collect()
}

/// 0.4011° is 7‰.
fn degrees(permille: f64) -> f64 {
    (permille / 1000.0).atan().to_degrees()
}

#[test]
fn rules_apply_by_kind() {
    let e = engine();
    let names = |s| e.rules_for(SubjectId(s)).iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(names(0), vec!["tilt", "silent"]);
    assert_eq!(names(1), vec!["do-low", "silent", "stuck"]);
}

#[test]
fn tilt_is_judged_from_the_learned_baseline() {
    let mut e = engine();
    let mut events = Vec::new();
    // A box mounted 0.3° off plumb: that is its baseline, not a tilt.
    for m in 0..=60 {
        e.observe(SubjectId(0), m * MIN, &[("x", 0.3), ("y", 0.0)], &mut events);
    }
    assert!(events.is_empty(), "mounting offset is not an alarm: {:?}", ids(&e, &events));
    assert_eq!(e.baseline(SubjectId(0), "x", BaselineSpec::Learn { window_ms: 60 * MIN }), Some(0.3f32 as f64));
    // The wall then leans 8‰ further.
    for m in 61..=63 {
        e.observe(SubjectId(0), m * MIN, &[("x", 0.3 + degrees(8.0)), ("y", 0.0)], &mut events);
    }
    assert_eq!(ids(&e, &events), vec![("tilt".into(), EventKind::Fired, Severity::Warning), ("tilt".into(), EventKind::Changed, Severity::Danger)]);
    assert_eq!(events[1].previous, Some(Severity::Warning));
    assert!((events[1].value - 8.0).abs() < 0.01, "{}", events[1].value);
}

#[test]
fn whether_a_rule_is_open_for_a_sensor_is_told() {
    let mut e = engine();
    let rule = |id: &str| RuleId(e.rules().iter().position(|r| r.id == id).unwrap());
    let (do_low, silent, tilt) = (rule("do-low"), rule("silent"), rule("tilt"));
    assert_eq!(e.open(SubjectId(1), do_low), Some((false, None)));
    assert_eq!(e.open(SubjectId(1), tilt), None, "tilt does not apply to the water probe");
    let mut events = Vec::new();
    e.observe(SubjectId(1), 0, &[("do", 4.0)], &mut events);
    assert_eq!(e.open(SubjectId(1), do_low), Some((true, None)));
    e.observe(SubjectId(1), MIN, &[("do", 6.0)], &mut events);
    assert_eq!(e.open(SubjectId(1), do_low), Some((false, None)));
    assert_eq!(e.open(SubjectId(1), silent), Some((false, None)));
    assert_eq!(e.open(SubjectId(9), do_low), None, "no such sensor");
}

#[test]
fn calibrated_baseline_takes_precedence() {
    let mut e = engine();
    e.set_baseline(SubjectId(0), "x", 0.1);
    e.set_baseline(SubjectId(0), "y", 0.0);
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("x", 0.1 + degrees(3.0)), ("y", 0.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("tilt".into(), EventKind::Fired, Severity::Warning)]);
}

#[test]
fn silent_sensor_raises_no_data_after_twice_its_interval() {
    let mut e = engine();
    let mut events = Vec::new();
    e.observe(SubjectId(1), 0, &[("do", 7.0)], &mut events);
    e.tick(0, &mut events);
    e.tick(20 * MIN, &mut events);
    assert!(events.is_empty());
    e.tick(20 * MIN + 1, &mut events);
    let fired: Vec<_> = ids(&e, &events);
    assert!(fired.contains(&("silent".into(), EventKind::Fired, Severity::Alarm)), "{fired:?}");
    events.clear();
    e.observe(SubjectId(1), 25 * MIN, &[("do", 7.1)], &mut events);
    assert_eq!(ids(&e, &events), vec![("silent".into(), EventKind::Cleared, Severity::Alarm)]);
}

#[test]
fn readings_refused_as_out_of_order_are_not_silence() {
    // Its clock went back: its readings come on time, older than its last judged one.
    let mut e = engine();
    let mut events = Vec::new();
    let pond = |e: &Engine, events: &[RuleEvent]| {
        events.iter().filter(|ev| ev.subject == SubjectId(1)).map(|ev| (e.rule(ev.rule).id.clone(), ev.kind)).collect::<Vec<_>>()
    };
    e.tick(0, &mut events);
    e.observe(SubjectId(1), 0, &[("do", 7.0)], &mut events);
    for m in (10..=60).step_by(10) {
        e.tick(m * MIN, &mut events);
        assert_eq!(e.observe(SubjectId(1), -m * MIN, &[("do", 7.0)], &mut events), Observed::OutOfOrder);
        e.heard_unjudged(SubjectId(1), &mut events);
    }
    e.tick(60 * MIN + 1, &mut events);
    assert_eq!(pond(&e, &events), vec![], "heard every ten minutes, though none was judged");
    // Silent for real, then one more unjudged reading: it is heard again.
    e.tick(90 * MIN, &mut events);
    assert_eq!(pond(&e, &events), vec![("silent".into(), EventKind::Fired)]);
    events.clear();
    e.heard_unjudged(SubjectId(1), &mut events);
    assert_eq!(pond(&e, &events), vec![("silent".into(), EventKind::Cleared)]);
}

#[test]
fn readings_stamped_hours_behind_the_engines_clock_are_data_not_silence() {
    // A device clock two hours behind the box's (or a backlog): every reading arrives on time
    // but is stamped two hours back. Before, each tick found it silent and each reading cleared
    // it: a fired and a cleared every reading.
    let mut e = engine();
    let mut events = Vec::new();
    for m in 0..=120 {
        e.tick(m * MIN, &mut events);
        if m % 10 == 0 {
            e.observe(SubjectId(1), m * MIN - 120 * MIN, &[("do", 7.0 + m as f64 / 1000.0)], &mut events);
        }
    }
    let pond = |e: &Engine, events: &[RuleEvent]| {
        events.iter().filter(|ev| ev.subject == SubjectId(1)).map(|ev| (e.rule(ev.rule).id.clone(), ev.kind)).collect::<Vec<_>>()
    };
    assert_eq!(pond(&e, &events), vec![], "heard every ten minutes");
    // Then it goes quiet: silent after twice its interval, counted from the last arrival.
    e.tick(141 * MIN, &mut events);
    assert_eq!(pond(&e, &events), vec![("silent".to_string(), EventKind::Fired)]);
}

#[test]
fn stuck_probe_raises_flat_line() {
    let mut e = engine();
    let mut events = Vec::new();
    for m in 0..3 {
        e.observe(SubjectId(1), m * MIN, &[("do", 7.25)], &mut events);
    }
    assert_eq!(ids(&e, &events), vec![("stuck".into(), EventKind::Fired, Severity::Warning)]);
    assert!(e.rule(events[0].rule).device);
}

#[test]
fn out_of_order_sample_is_not_evaluated() {
    let mut e = engine();
    let mut events = Vec::new();
    assert_eq!(e.observe(SubjectId(1), 1_000, &[("do", 6.0)], &mut events), Observed::Evaluated);
    assert_eq!(e.observe(SubjectId(1), 500, &[("do", 1.0)], &mut events), Observed::OutOfOrder);
    assert!(events.is_empty());
}

#[test]
fn last_at_is_the_time_of_the_last_judged_sample_and_survives_a_snapshot() {
    let mut e = engine();
    assert_eq!(e.last_at(SubjectId(1)), None);
    e.observe(SubjectId(1), 1_000, &[("do", 6.0)], &mut Vec::new());
    e.observe(SubjectId(1), 500, &[("do", 6.0)], &mut Vec::new());
    assert_eq!(e.last_at(SubjectId(1)), Some(1_000), "an out-of-order sample is not judged");
    let mut restored = engine();
    restored.restore(&e.snapshot());
    assert_eq!(restored.last_at(SubjectId(1)), Some(1_000));
    assert_eq!(restored.last_at(SubjectId(7)), None, "unknown subject");
}

#[test]
fn unknown_subject_is_reported() {
    let mut e = engine();
    assert_eq!(e.observe(SubjectId(7), 0, &[("do", 1.0)], &mut Vec::new()), Observed::UnknownSubject);
}

#[test]
fn nan_value_is_treated_as_missing() {
    let mut e = engine();
    let mut events = Vec::new();
    e.observe(SubjectId(1), 0, &[("do", f64::NAN)], &mut events);
    assert!(events.is_empty());
    e.observe(SubjectId(1), 1, &[("do", 4.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("do-low".into(), EventKind::Fired, Severity::Warning)]);
}

#[test]
fn rules_with_the_same_signal_stage_share_it() {
    let rules = RuleSet::compile(&crate::packs::builtin_packs()).unwrap();
    let e = Engine::new(rules, &[subject("house-1", SensorKind::Tilt)]);
    let slot = &e.slots[0];
    let plan = e.plan_of(slot);
    let states = e.states.of(slot, plan);
    assert_eq!((states.checks.len(), plan.checks.len()), (17, 17));
    // tilt-change and the three creep rules take the same daily level once; out-of-range and
    // angles-frozen the raw vector, flat-line the raw vector with the temperature; tilt-danger and tilt-lean-fast
    // the one-hour median; tilt-sudden and tilt-erratic each their change from the recent level
    // (steady / median); axis-missing the fields it lacks; thermometer-impossible the
    // temperature out of its range; thermometer-jumped the temperature's change from its recent
    // level. A box alone on its house has no tilt-box-moved.
    assert_eq!(states.stages.len(), 9, "{:?}", plan.stages.iter().map(|&rule| e.rules[usize::from(rule)].id.clone()).collect::<Vec<_>>());
}

#[test]
fn sensors_that_run_the_same_checks_share_one_plan() {
    let mut sources = crate::packs::builtin_packs();
    sources.push(RuleSource { name: "agree".into(), text: AGREEING.into() });
    let rules = RuleSet::compile(&sources).unwrap();
    let subjects = [
        subject("t1", SensorKind::Tilt),
        subject("t2", SensorKind::Tilt),
        subject("w1", SensorKind::Water),
        in_building("roof", "b1"),
        in_building("wall", "b1"),
        in_building("other", "b2"),
    ];
    let e = Engine::new(rules, &subjects);
    let plans: Vec<u32> = e.slots.iter().map(|slot| slot.plan).collect();
    assert_eq!(plans[0], plans[1], "two tilt boxes without a building");
    assert_ne!(plans[0], plans[2], "a tilt box and a water probe");
    assert_eq!(plans[3], plans[4], "two boxes of one building vote in the same agreements");
    assert_ne!(plans[3], plans[5], "another building has its own agreements");
    assert_eq!(e.plans.len(), 4);
    let states: usize = e.slots.iter().map(|slot| e.plan_of(slot).checks.len()).sum();
    assert_eq!(e.states.checks.len(), states, "every sensor's checks, one after another");
    assert_eq!(e.slots[5].at.checks as usize, states - e.plan_of(&e.slots[5]).checks.len(), "the last sensor's come last");
}

#[test]
fn an_override_applies_only_to_the_sensors_it_scopes() {
    let rules = "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n[[rule.override]]\nsensors = [\"fish-pond\"]\nbelow = 3\n";
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: rules.into() }]).unwrap();
    let mut e = Engine::new(rules, &[subject("canal", SensorKind::Water), subject("fish-pond", SensorKind::Water)]);
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("do", 4.0)], &mut events);
    e.observe(SubjectId(1), 0, &[("do", 4.0)], &mut events);
    assert_eq!(events.len(), 1, "4 mg/L is low for the canal, fine for the fish pond");
    assert_eq!((events[0].subject, events[0].variant), (SubjectId(0), None));
    e.observe(SubjectId(1), 1, &[("do", 2.9)], &mut events);
    assert_eq!((events[1].subject, events[1].variant), (SubjectId(1), Some(0)));
    assert_eq!(
        e.rule(events[1].rule).level(events[1].variant, events[1].severity).map(|l| l.bound),
        Some(crate::rule::Bound::Below { trigger: 3.0, clear: 3.0 })
    );
}

const AGREEING: &str = r#"
[[rule]]
id = "tilt-house"
kind = "tilt"
value = "x"
agree = 2
[[rule.level]]
severity = "alarm"
above = 4.0
[[rule.level]]
severity = "danger"
above = 7.0
"#;

fn in_building(id: &str, building: &str) -> Subject {
    Subject { building: Some(building.into()), ..subject(id, SensorKind::Tilt) }
}

#[test]
fn one_box_of_a_building_alone_raises_nothing_two_agreeing_do() {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: AGREEING.into() }]).unwrap();
    let boxes = [in_building("b7-east", "B7"), in_building("b7-west", "B7"), in_building("b7-north", "B7")];
    let mut e = Engine::new(rules, &boxes);
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("x", 9.0)], &mut events);
    e.observe(SubjectId(1), 0, &[("x", 0.5)], &mut events);
    assert!(events.is_empty(), "one box at 9 while the others are quiet: {:?}", ids(&e, &events));
    e.observe(SubjectId(1), MIN, &[("x", 5.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("tilt-house".into(), EventKind::Fired, Severity::Alarm)], "two boxes agree on alarm");
    let agreement = events[0].agreement.expect("a building event");
    assert_eq!((agreement.agreeing, agreement.of), (2, 3));
    assert_eq!((events[0].subject, events[0].value, events[0].since), (SubjectId(0), 5.0, MIN));
    e.observe(SubjectId(2), 2 * MIN, &[("x", 8.0)], &mut events);
    assert_eq!(ids(&e, &events)[1], ("tilt-house".into(), EventKind::Changed, Severity::Danger));
    assert_eq!(events[1].agreement.map(|a| a.agreeing), Some(2));
    e.observe(SubjectId(0), 3 * MIN, &[("x", 0.1)], &mut events);
    assert_eq!(ids(&e, &events)[2], ("tilt-house".into(), EventKind::Changed, Severity::Alarm));
    e.observe(SubjectId(1), 4 * MIN, &[("x", 0.1)], &mut events);
    assert_eq!(ids(&e, &events)[3], ("tilt-house".into(), EventKind::Cleared, Severity::Alarm));
    assert_eq!(events.len(), 4);
}

#[test]
fn agreement_is_per_building_and_a_lone_box_decides_its_own_house() {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: AGREEING.into() }]).unwrap();
    let boxes = [in_building("b7-east", "B7"), in_building("b8-only", "B8"), subject("loose", SensorKind::Tilt)];
    let mut e = Engine::new(rules, &boxes);
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("x", 9.0)], &mut events);
    e.observe(SubjectId(2), 0, &[("x", 9.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("tilt-house".into(), EventKind::Fired, Severity::Danger); 2], "a house with one box follows it");
    assert_eq!(events[0].agreement.map(|a| (a.agreeing, a.of)), Some((1, 1)));
    assert_eq!((events[1].subject, events[1].agreement), (SubjectId(2), None), "a sensor without a building is judged on its own");
    events.clear();
    e.observe(SubjectId(1), 0, &[("x", 0.1)], &mut events);
    assert!(events.is_empty(), "B8 is another house");
}

#[test]
fn a_box_whose_neighbours_went_silent_decides_its_house_alone() {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: AGREEING.into() }]).unwrap();
    let boxes = [in_building("b7-east", "B7"), in_building("b7-west", "B7")];
    let mut e = Engine::new(rules, &boxes);
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("x", 0.1)], &mut events);
    e.observe(SubjectId(1), 0, &[("x", 0.1)], &mut events);
    // West reported 23 hours ago (a gap of its link): it still votes, and east alone raises
    // nothing.
    e.observe(SubjectId(0), 23 * 60 * MIN, &[("x", 9.0)], &mut events);
    assert!(events.is_empty(), "{:?}", ids(&e, &events));
    // A day and more of silence: west has died, and east decides its house as a lone box does.
    e.observe(SubjectId(0), 25 * 60 * MIN, &[("x", 9.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("tilt-house".into(), EventKind::Fired, Severity::Danger)]);
    assert_eq!(events[0].agreement.map(|a| (a.agreeing, a.of)), Some((1, 2)));
    // West back, quiet: it votes again, and the house is not confirmed any more.
    e.observe(SubjectId(1), 25 * 60 * MIN + MIN, &[("x", 0.1)], &mut events);
    assert_eq!(ids(&e, &events)[1], ("tilt-house".into(), EventKind::Cleared, Severity::Danger));
}

#[test]
fn building_state_is_recomputed_after_a_restore_without_new_events() {
    let rules = || RuleSet::compile(&[RuleSource { name: "t".into(), text: AGREEING.into() }]).unwrap();
    let boxes = [in_building("b7-east", "B7"), in_building("b7-west", "B7")];
    let mut before = Engine::new(rules(), &boxes);
    let mut events = Vec::new();
    before.observe(SubjectId(0), 0, &[("x", 5.0)], &mut events);
    before.observe(SubjectId(1), 0, &[("x", 5.0)], &mut events);
    assert_eq!(events.len(), 1);
    let mut after = Engine::new(rules(), &boxes);
    after.restore(&before.snapshot());
    events.clear();
    after.observe(SubjectId(0), MIN, &[("x", 5.5)], &mut events);
    assert!(events.is_empty(), "the building's incident is still open, not fired again: {:?}", ids(&after, &events));
    after.observe(SubjectId(0), 2 * MIN, &[("x", 0.0)], &mut events);
    assert_eq!(ids(&after, &events), vec![("tilt-house".into(), EventKind::Cleared, Severity::Alarm)]);
}

#[test]
fn ratio_to_baseline_compares_against_the_sites_usual_level() {
    let rules = r#"
[[rule]]
id = "turbidity-up"
kind = "water"
value = "turbidity"
baseline = "learn 1h"
from_baseline = "ratio"
above = 1.3
severity = "notice"
"#;
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: rules.into() }]).unwrap();
    let mut e = Engine::new(rules, &[subject("canal", SensorKind::Water)]);
    let mut events = Vec::new();
    for m in 0..=60 {
        e.observe(SubjectId(0), m * MIN, &[("turbidity", 10.0)], &mut events);
    }
    e.observe(SubjectId(0), 61 * MIN, &[("turbidity", 12.9)], &mut events);
    assert!(events.is_empty(), "+29% is within the usual");
    e.observe(SubjectId(0), 62 * MIN, &[("turbidity", 13.2)], &mut events);
    assert_eq!(ids(&e, &events), vec![("turbidity-up".into(), EventKind::Fired, Severity::Notice)]);
    assert!((events[0].value - 1.32).abs() < 1e-9, "{}", events[0].value);
}

#[test]
fn a_resolve_during_the_clear_hold_clears_and_the_next_breach_fires_again() {
    // Back inside at 5.2, not past the clear level 5.3: only a person can end it before 5.3 for a day.
    let rules = "[[rule]]\nid = \"do-low\"\nkind = \"water\"\nvalue = \"do\"\nbelow = 5\nclear_above = 5.3\nclear_for = \"1d\"\nseverity = \"alarm\"\n";
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: rules.into() }]).unwrap();
    let mut e = Engine::new(rules, &[subject("canal", SensorKind::Water)]);
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("do", 4.0)], &mut events);
    assert!(!e.end_clear_holds(SubjectId(0), "do-low", MIN, &mut events), "still below: nothing to end");
    e.observe(SubjectId(0), 2 * MIN, &[("do", 5.2)], &mut events);
    assert!(!e.end_clear_holds(SubjectId(0), "other", 3 * MIN, &mut events));
    assert!(e.end_clear_holds(SubjectId(0), "do-low", 3 * MIN, &mut events));
    e.observe(SubjectId(0), 4 * MIN, &[("do", 4.0)], &mut events);
    let kinds: Vec<_> = events.iter().map(|event| (event.kind, event.at)).collect();
    assert_eq!(kinds, [(EventKind::Fired, 0), (EventKind::Cleared, 3 * MIN), (EventKind::Fired, 4 * MIN)]);
    assert_eq!(events[1].value, 5.2, "the clear shows the last value judged");
}

/// Ten thousand sensors with a dozen rules each: these sizes are most of the engine's memory.
#[test]
fn per_sensor_states_stay_small() {
    use std::mem::size_of;
    assert!(size_of::<CheckState>() <= 24, "CheckState {}", size_of::<CheckState>());
    assert!(size_of::<StageState>() <= 8, "StageState {}", size_of::<StageState>());
    assert!(size_of::<Learned>() <= 16, "Learned {}", size_of::<Learned>());
    // 56: the offset of temperature compensation's states added 8 bytes (80 KB per 10,000
    // sensors); 64: the fingerprint of the last sample, to tell a copy of it (80 KB more).
    assert!(size_of::<SubjectSlot>() <= 64, "SubjectSlot {}", size_of::<SubjectSlot>());
}

#[test]
fn a_ladder_at_rest_keeps_no_level_states() {
    let rules = "[[rule]]\nid = \"hot\"\nvalue = \"t\"\nabove = 30\nclear_below = 28\nseverity = \"warning\"\n";
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: rules.into() }]).unwrap();
    let mut engine = Engine::new(rules, &[subject("s1", SensorKind::Water)]);
    let levels = |engine: &Engine| match &engine.states.checks[0] {
        CheckState::Ladder { ladder, .. } => !ladder.levels().is_empty(),
        other => panic!("{other:?}"),
    };
    let mut events = Vec::new();
    engine.observe(SubjectId(0), 0, &[("t", 20.0)], &mut events);
    assert!(!levels(&engine), "never breached: nothing kept");
    engine.observe(SubjectId(0), 1_000, &[("t", 31.0)], &mut events);
    assert_eq!((levels(&engine), events.len()), (true, 1), "breached: the level is tracked and fires");
    engine.observe(SubjectId(0), 2_000, &[("t", 29.0)], &mut events);
    assert_eq!((levels(&engine), events.len()), (true, 1), "between clear and trigger: still active");
    engine.observe(SubjectId(0), 3_000, &[("t", 27.0)], &mut events);
    assert_eq!(events.last().map(|e| e.kind), Some(EventKind::Cleared));
    assert!(!levels(&engine), "cleared: at rest again");
}

/// The default packs after three hours of readings (smoothing windows, change histories,
/// recent levels, learners at work) come back whole through the saved JSON.
#[test]
fn a_busy_engine_comes_back_whole_through_its_saved_state() {
    let sensors = [subject("house-1", SensorKind::Tilt), subject("pond-1", SensorKind::Water)];
    let engine = || Engine::new(RuleSet::compile(&crate::packs::builtin_packs()).unwrap(), &sensors);
    let mut before = engine();
    before.set_baseline(SubjectId(0), "x", 0.3);
    before.set_baseline(SubjectId(0), "y", -0.1);
    let mut events = Vec::new();
    for minute in 0..180 {
        let wobble = (minute % 7) as f64 * 0.01;
        before.observe(SubjectId(0), minute * MIN, &[("x", 0.3 + wobble), ("y", -0.1)], &mut events);
        before.observe(SubjectId(1), minute * MIN, &[("ph", 7.2 + wobble), ("do", 6.5), ("turbidity", 12.0 + wobble), ("conductivity", 420.0)], &mut events);
    }
    let saved = serde_json::to_string(&before.snapshot_view()).unwrap();
    assert!(saved.contains(r#""History":["#) && saved.contains(r#""recent":[["#), "{saved}");
    assert!(!saved.contains(r#""smooth":[["#) && !saved.contains(r#""History":[["#) && !saved.contains(r#""lows":[["#), "windows are packed: {saved}");
    let mut after = engine();
    let restored = after.restore_streamed(&mut serde_json::Deserializer::from_str(&saved)).unwrap();
    assert_eq!(restored.discarded, 0);
    assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), saved);
    // And it goes on the same way.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    before.observe(SubjectId(0), 180 * MIN, &[("x", 2.0), ("y", 1.5)], &mut a);
    after.observe(SubjectId(0), 180 * MIN, &[("x", 2.0), ("y", 1.5)], &mut b);
    assert_eq!(a, b);
}

const PEERS: &str = r#"
[[rule]]
id = "box-drifting"
kind = "tilt"
value = "x"
peers = "building"
change_over = "1h"
at_least = 0.3
clear_below = 0.1
device = true
severity = "warning"
"#;

/// Every box of `boxes` reports `x` every 10 minutes for `minutes`, from `from`; `drift(box,
/// minute)` is what box `box` adds to a weather that moves them all alike.
fn feed(e: &mut Engine, boxes: usize, from: Millis, minutes: Millis, drift: impl Fn(usize, Millis) -> f64) -> Vec<RuleEvent> {
    let mut events = Vec::new();
    for minute in (from..from + minutes).step_by(10) {
        let weather = 0.5 * (minute as f64 / 200.0).sin();
        for b in 0..boxes {
            e.observe(SubjectId(b), minute * MIN, &[("x", weather + drift(b, minute))], &mut events);
        }
    }
    events
}

#[test]
fn a_box_drifting_away_from_its_building_is_told_and_its_quiet_neighbours_are_not() {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: PEERS.into() }]).unwrap();
    for boxes in [2, 3] {
        let subjects: Vec<Subject> = (0..boxes).map(|b| in_building(&format!("b7-{b}"), "B7")).collect();
        let mut e = Engine::new(rules.clone(), &subjects);
        assert!(feed(&mut e, boxes, 0, 600, |_, _| 0.0).is_empty(), "the weather moves them alike: nothing");
        // Box 0 drifts 0.6 an hour from minute 600 on.
        let events = feed(&mut e, boxes, 600, 120, |b, minute| if b == 0 { 0.01 * (minute - 600) as f64 } else { 0.0 });
        let told: Vec<_> = events.iter().map(|ev| (ev.subject, ev.kind)).collect();
        assert_eq!(told, vec![(SubjectId(0), EventKind::Fired)], "{boxes} boxes: the drifting one");
        // 0.3 within the hour at minute 630; the neighbours' readings it is compared with are up
        // to 10 minutes older, and the weather moved them meanwhile.
        assert!((630..=660).contains(&(events[0].at / MIN)), "{boxes} boxes: told at minute {}", events[0].at / MIN);
    }
}

#[test]
fn a_quiet_box_is_not_blamed_when_its_only_neighbour_falls_back() {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: PEERS.into() }]).unwrap();
    let mut e = Engine::new(rules, &[in_building("b7-east", "B7"), in_building("b7-west", "B7")]);
    feed(&mut e, 2, 0, 600, |_, _| 0.0);
    // The west box falls back by a degree: against it, the east box seems to rise.
    let events = feed(&mut e, 2, 600, 180, |b, _| if b == 1 { -1.0 } else { 0.0 });
    assert!(events.is_empty(), "{:?}", ids(&e, &events));
}

#[test]
fn a_box_alone_on_its_building_or_with_silent_neighbours_is_not_judged_against_peers() {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: PEERS.into() }]).unwrap();
    let mut alone = Engine::new(rules.clone(), &[in_building("b8-only", "B8"), subject("loose", SensorKind::Tilt)]);
    assert!(feed(&mut alone, 2, 0, 600, |_, minute| 0.01 * minute as f64).is_empty(), "no other box to compare with");
    let mut silent = Engine::new(rules, &[in_building("b7-east", "B7"), in_building("b7-west", "B7")]);
    feed(&mut silent, 2, 0, 600, |_, _| 0.0);
    let mut events = Vec::new();
    // The west box falls silent; the east one drifts 0.6 an hour for three hours.
    for minute in (600..780).step_by(10) {
        silent.observe(SubjectId(0), minute * MIN, &[("x", 0.01 * (minute - 600) as f64)], &mut events);
    }
    let fired: Vec<_> = events.iter().map(|ev| ev.at / MIN).collect();
    assert!(fired.len() == 1 && fired[0] < 720, "told while the neighbour's last reading is fresh: {fired:?}");
    assert_eq!(silent.rule(events[0].rule).id, "box-drifting");
}

const CLOCK_AND_UNCOMPENSATED: &str = r#"
[[rule]]
id = "clock"
kind = "tilt"
clock_ahead = "10m"

[[rule]]
id = "change"
kind = "tilt"
value = "permille(hypot(x, y))"
baseline = "learn 1h"
compensate = "temperature"
uncompensated = "warning"
unit = "‰"

[[rule.level]]
severity = "notice"
at_least = 1.0
clear_below = 0.7

[[rule.level]]
severity = "warning"
at_least = 2.0
clear_below = 1.6
"#;

fn clock_engine() -> Engine {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: CLOCK_AND_UNCOMPENSATED.into() }]).unwrap();
    Engine::new(rules, &[subject("box-1", SensorKind::Tilt), subject("box-2", SensorKind::Tilt)])
}

#[test]
fn a_reading_stamped_hours_ahead_tells_installers_until_the_box_is_judged_on_time_again() {
    let mut e = clock_engine();
    let mut events = Vec::new();
    e.observe(SubjectId(0), 0, &[("x", 0.0), ("y", 0.0)], &mut events);
    assert!(events.is_empty(), "no tick yet: the engine has no clock to judge by");
    let hour = 60 * MIN;
    for m in 1..=30 {
        e.tick(m * MIN, &mut events);
        e.observe(SubjectId(0), m * MIN + 9 * MIN, &[("x", 0.0), ("y", 0.0)], &mut events);
    }
    assert!(events.is_empty(), "9 minutes ahead is within the allowance: {:?}", ids(&e, &events));
    e.tick(31 * MIN, &mut events);
    e.observe(SubjectId(0), 31 * MIN + 5 * hour, &[("x", 0.0), ("y", 0.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("clock".to_string(), EventKind::Fired, Severity::Warning)]);
    assert_eq!(events[0].value, 5.0 * 3600.0, "seconds ahead");
    events.clear();
    // Set right: its readings are older than the one judged, refused, and the check stays open.
    for m in 32..=60 {
        e.tick(m * MIN, &mut events);
        assert_eq!(e.observe(SubjectId(0), m * MIN, &[("x", 0.0), ("y", 0.0)], &mut events), Observed::OutOfOrder);
    }
    assert!(events.is_empty(), "{:?}", ids(&e, &events));
    assert!(e.rewind(SubjectId(0)), "re-anchored, as the daemon does");
    e.tick(61 * MIN, &mut events);
    e.observe(SubjectId(0), 61 * MIN, &[("x", 0.0), ("y", 0.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("clock".to_string(), EventKind::Cleared, Severity::Warning)]);
}

/// A reading the daemon judged at its arrival because its stamp lay too far ahead: the clock
/// check sees the stamp through the offset, and a reading stamped on time closes it.
#[test]
fn a_reading_placed_at_its_arrival_is_judged_ahead_by_its_stamp() {
    let engine = || {
        let rules =
            RuleSet::compile(&[RuleSource { name: "t".into(), text: "[[rule]]\nid = \"clock\"\nkind = \"tilt\"\nclock_ahead = \"10m\"\n".into() }]).unwrap();
        Engine::new(rules, &[subject("box-1", SensorKind::Tilt)])
    };
    let mut e = engine();
    let mut events = Vec::new();
    e.tick(10 * MIN, &mut events);
    e.set_stamp_offset(SubjectId(0), -12 * MIN);
    e.observe(SubjectId(0), 10 * MIN, &[("x", 0.0), ("y", 0.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("clock".to_string(), EventKind::Fired, Severity::Warning)]);
    assert_eq!(events[0].value, 720.0, "seconds ahead");
    events.clear();
    e.tick(11 * MIN, &mut events);
    e.set_stamp_offset(SubjectId(0), 0);
    e.observe(SubjectId(0), 11 * MIN, &[("x", 0.0), ("y", 0.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("clock".to_string(), EventKind::Cleared, Severity::Warning)]);
    events.clear();
    // Against a box clock that is not true time, the placed time is judged.
    let mut unset = engine();
    unset.judge_lags(false);
    unset.tick(10 * MIN, &mut events);
    unset.set_stamp_offset(SubjectId(0), -12 * MIN);
    unset.observe(SubjectId(0), 10 * MIN, &[("x", 0.0), ("y", 0.0)], &mut events);
    assert!(events.is_empty(), "{:?}", ids(&unset, &events));
}

const BEHIND: &str = r#"
[[rule]]
id = "behind"
kind = "tilt"
clock_behind = "1h"
for = "30m"
"#;

/// A tilt box judged by a `clock_behind` rule, the engine ticked every minute from `start`.
fn behind_engine() -> Engine {
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: BEHIND.into() }]).unwrap();
    Engine::new(rules, &[subject("box-1", SensorKind::Tilt)])
}

/// Feeds readings `(arrival, stamp)` in arrival order, ticking the engine every minute up to
/// each arrival; the events with their arrival.
fn arrivals(e: &mut Engine, readings: impl IntoIterator<Item = (Millis, Millis)>) -> Vec<RuleEvent> {
    let mut events = Vec::new();
    let mut ticked = None;
    for (arrival, stamp) in readings {
        let minute = arrival - arrival.rem_euclid(MIN);
        if ticked != Some(minute) {
            e.tick(minute, &mut events);
            ticked = Some(minute);
        }
        e.observe(SubjectId(0), stamp, &[("x", 0.1), ("y", 0.2)], &mut events);
    }
    events
}

const HOUR: Millis = 60 * MIN;
/// A synchronised box's clock: 2026-11-23T00:00:00Z.
const T0: Millis = 1_795_392_000_000;

#[test]
fn a_device_clock_five_hours_behind_tells_installers_once_and_clears_when_set_right() {
    let mut e = behind_engine();
    // Every 10 minutes for an hour, stamped 5 hours behind the engine's clock.
    let events = arrivals(&mut e, (0..=6).map(|n| (T0 + n * 10 * MIN, T0 + n * 10 * MIN - 5 * HOUR)));
    assert_eq!(ids(&e, &events), vec![("behind".to_string(), EventKind::Fired, Severity::Warning)]);
    assert_eq!((events[0].at, events[0].since, events[0].value), (T0 + 30 * MIN, T0, 5.0 * 3600.0), "told after half an hour, since its first reading behind");
    // Set right: its next reading is on time (later than the last one judged, so judged).
    let events = arrivals(&mut e, [(T0 + 70 * MIN, T0 + 70 * MIN - 3_000)]);
    assert_eq!(ids(&e, &events), vec![("behind".to_string(), EventKind::Cleared, Severity::Warning)]);
    assert_eq!(events[0].since, T0);
    assert_eq!(e.open(SubjectId(0), RuleId(0)), None, "a clock check does not say");
}

#[test]
fn a_backlog_of_26_hours_in_a_burst_or_drained_over_2_hours_is_no_clock_behind() {
    // After a link outage the box sends the 26 hours it kept (a reading every 10 minutes),
    // oldest first, within 20 seconds, then its live readings.
    let mut burst = behind_engine();
    let kept = (0..156).map(|n| (T0 + n * 128, T0 - 26 * HOUR + n * 10 * MIN));
    let live = (0..=12).map(|n| (T0 + 30_000 + n * 10 * MIN, T0 + 29_000 + n * 10 * MIN));
    let events = arrivals(&mut burst, kept.chain(live));
    assert!(events.is_empty(), "{:?}", ids(&burst, &events));
    // The same 26 hours drained over 2 hours, a reading every 46 s; the readings it takes
    // meanwhile join the end of its queue, and live ones follow.
    let mut drained = behind_engine();
    let queue = (0..=171).map(|n| {
        let arrival = T0 + n * 46_000;
        (arrival, (T0 - 26 * HOUR + n * 10 * MIN).min(arrival - 2_000))
    });
    let events = arrivals(&mut drained, queue);
    assert!(events.is_empty(), "{:?}", ids(&drained, &events));
}

#[test]
fn no_lag_is_judged_against_a_clock_that_is_not_true_time() {
    // A box booted on its last shutdown time, five hours behind, until NTP sets it: every
    // device seems five hours behind its clock, or would.
    let mut e = behind_engine();
    e.judge_lags(false);
    let events = arrivals(&mut e, (0..=12).map(|n| (T0 + n * 10 * MIN, T0 + n * 10 * MIN - 5 * HOUR)));
    assert!(events.is_empty(), "{:?}", ids(&e, &events));
    // Once it is true time, a device still stamping 5 hours behind waits the whole hold.
    e.judge_lags(true);
    let events = arrivals(&mut e, (13..=16).map(|n| (T0 + n * 10 * MIN, T0 + n * 10 * MIN - 5 * HOUR)));
    assert_eq!(events.iter().map(|ev| (ev.kind, ev.at, ev.since)).collect::<Vec<_>>(), vec![(EventKind::Fired, T0 + 160 * MIN, T0 + 130 * MIN)]);
}

#[test]
fn a_box_without_temperature_compensation_raises_no_notice_but_still_a_warning() {
    // Box 1 reports no temperature, box 2 does; both rest for `rest` minutes after their
    // baseline (a reading every 10 minutes), then lean 1.5‰, then 2.5‰.
    let run = |rest: i64| {
        let mut e = clock_engine();
        let mut events = Vec::new();
        let offset = |permille: f64| degrees(permille);
        for m in (0..=rest + 400).step_by(10) {
            let lean = if m < rest + 120 {
                0.0
            } else if m < rest + 240 {
                1.5
            } else {
                2.5
            };
            e.tick(m * MIN, &mut events);
            e.observe(SubjectId(0), m * MIN, &[("x", offset(lean)), ("y", 0.0)], &mut events);
            e.observe(SubjectId(1), m * MIN, &[("x", offset(lean)), ("y", 0.0), ("temperature", 20.0)], &mut events);
        }
        let of = |s: usize| events.iter().filter(|ev| ev.subject == SubjectId(s)).map(|ev| (ev.kind, ev.severity)).collect::<Vec<_>>();
        (of(0), of(1))
    };
    let warning_only = vec![(EventKind::Fired, Severity::Warning)];
    // Installed a few hours ago: the thermometer has taught nothing yet, both boxes alike.
    let (without, with) = run(0);
    assert_eq!(without, warning_only, "no notice at 1.5‰ without a temperature; the warning at 2.5‰");
    assert_eq!(with, warning_only, "a thermometer three weeks short of its weather: as without one");
    // After 27 days of weather (day pairs are learned from the fourth day): compensated, the
    // notice, then the warning.
    let (without, with) = run(27 * 24 * 60);
    assert_eq!(without, warning_only);
    assert_eq!(with, vec![(EventKind::Fired, Severity::Notice), (EventKind::Changed, Severity::Warning)], "compensated: the notice, then the warning");
}

#[test]
fn a_within_range_judges_the_reading_as_reported_not_its_ratio_to_the_baseline() {
    // Turbidity 10 NTU as usual: 25 NTU is 2.5× and fires; an error sentinel of 9999 is
    // skipped like a reading without the field, though 999.9× would pass any ratio range.
    let text = "[[rule]]\nid = \"muddy\"\nkind = \"water\"\nvalue = \"within(turbidity, 0, 4000)\"\nbaseline = \"calibrated\"\nfrom_baseline = \"ratio\"\nabove = 2.0\nseverity = \"alarm\"\n";
    let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: text.into() }]).unwrap();
    let mut e = Engine::new(rules, &[subject("pond-1", SensorKind::Water)]);
    e.set_baseline(SubjectId(0), "turbidity", 10.0);
    let mut events = Vec::new();
    e.observe(SubjectId(0), MIN, &[("turbidity", 9999.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![]);
    e.observe(SubjectId(0), 2 * MIN, &[("turbidity", 25.0)], &mut events);
    assert_eq!(ids(&e, &events), vec![("muddy".to_string(), EventKind::Fired, Severity::Alarm)]);
}
