use super::*;

fn compile(text: &str) -> Result<RuleSet, RuleErrors> {
    RuleSet::compile(&[RuleSource { name: "test.toml".into(), text: text.into() }])
}

fn errors(text: &str) -> Vec<String> {
    compile(text).unwrap_err().0.iter().map(ToString::to_string).collect()
}

const GOOD: &str = r#"
[[rule]]
id = "do-low"
title = "Dissolved oxygen below class III"
kind = "water"
value = "do"
unit = "mg/L"
below = 5.0
clear_above = 5.5
for = "10m"
clear_for = "30m"
severity = "yellow"
"#;

const LADDER: &str = r#"
[[rule]]
id = "tilt"
kind = "tilt"
value = "permille(hypot(x, y))"
baseline = "learn 24h"
smooth = "median 1h"
unit = "‰"

[[rule.level]]
severity = "notice"
above = 1.0
clear_below = 0.8
count = "2 of 2"

[[rule.level]]
severity = "danger"
above = 7.0
clear_below = 6.5
for = "1m"
"#;

#[test]
fn compiles_a_complete_rule() {
    let set = compile(GOOD).unwrap();
    let rule = &set.rules[0];
    assert_eq!(rule.id, "do-low");
    let Check::Ladder(levels) = &rule.check else { panic!("{:?}", rule.check) };
    assert_eq!(
        levels[0],
        Level { severity: Severity::Warning, bound: Bound::Below { trigger: 5.0, clear: 5.5 }, raise_hold_ms: 600_000, clear_hold_ms: 1_800_000, count: None }
    );
    assert_eq!(rule.scope.kinds, vec![SensorKind::Water]);
    assert_eq!(rule.origin, Origin { file: "test.toml".into(), line: 2 });
    assert!(!rule.device);
}

#[test]
fn compiles_a_ladder_with_baseline_smoothing_and_count() {
    let rule = &compile(LADDER).unwrap().rules[0];
    let signal = rule.signal.as_ref().unwrap();
    assert_eq!(signal.baseline, Some(BaselineSpec::Learn { window_ms: 86_400_000 }));
    assert_eq!(signal.smooth, Some(Smooth { method: SmoothMethod::Median, window: Window::Time(3_600_000), within: None }));
    let Check::Ladder(levels) = &rule.check else { panic!() };
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[0].count, Some(Count { k: 2, n: 2 }));
    assert_eq!(levels[1].severity, Severity::Danger);
}

#[test]
fn ladder_levels_must_climb() {
    let errs = errors(&LADDER.replace("above = 7.0", "above = 0.5").replace("clear_below = 6.5", "clear_below = 0.4"));
    assert_eq!(errs, vec!["test.toml:16:1: error in `above`: each level's threshold must be on the bad side of the one before (or equal)"]);
    let errs = errors(&LADDER.replace("severity = \"danger\"", "severity = \"notice\""));
    assert!(errs[0].contains("levels must be listed from least to most severe"), "{errs:?}");
}

#[test]
fn device_checks_compile() {
    let set = compile(
        "[[rule]]\nid = \"quiet\"\nno_data = \"2x\"\n\n[[rule]]\nid = \"stuck\"\nvalue = \"x\"\nflat_line = 30\nseverity = \"alarm\"\n\n[[rule]]\nid = \"range\"\nvalue = \"ph\"\noutside = [0, 14]\ndevice = true\nseverity = \"warning\"\n",
    )
    .unwrap();
    assert_eq!(set.rules[0].check, Check::NoData { after: Silence::Intervals(2.0), severity: Severity::Warning });
    assert!(set.rules[0].device && set.rules[1].device && set.rules[2].device);
    assert_eq!(set.rules[1].check, Check::FlatLine { samples: 30, lasting_ms: 0, severity: Severity::Alarm });
}

#[test]
fn a_no_data_time_can_be_intervals_with_a_floor() {
    let set = compile("[[rule]]\nid = \"quiet\"\nno_data = \"max(2x, 10m)\"\n").unwrap();
    assert_eq!(set.rules[0].check, Check::NoData { after: Silence::IntervalsAtLeast(2.0, 600_000), severity: Severity::Warning });
    assert_eq!(Silence::IntervalsAtLeast(2.0, 600_000).timeout(60_000), 600_000, "a one-minute probe: the floor");
    assert_eq!(Silence::IntervalsAtLeast(2.0, 600_000).timeout(900_000), 1_800_000, "a 15-minute probe: twice its interval");
    for (bad, says) in [("max(2x)", "max(2x, 10m)"), ("max(0.5x, 10m)", "at least 1"), ("max(2x, soon)", "max(2x, 10m)"), ("max(2, 10m)", "at least 1")] {
        let errs = errors(&format!("[[rule]]\nid = \"quiet\"\nno_data = \"{bad}\"\n"));
        assert!(errs.len() == 1 && errs[0].contains("no_data") && errs[0].contains(says), "{bad}: {errs:?}");
    }
}

#[test]
fn a_clock_check_compiles_as_a_device_check_and_takes_no_value() {
    let set = compile("[[rule]]\nid = \"clock\"\nclock_ahead = \"10m\"\n").unwrap();
    assert_eq!(set.rules[0].check, Check::Clock { allowed_ms: 600_000, severity: Severity::Warning });
    assert!(set.rules[0].device);
    let refused = errors("[[rule]]\nid = \"clock\"\nvalue = \"x\"\nclock_ahead = \"10m\"\n");
    assert!(refused.iter().any(|e| e.contains("clock_ahead") && e.contains("takes no `value`")), "{refused:?}");
}

#[test]
fn a_clock_behind_check_holds_30_minutes_unless_told_and_takes_no_value() {
    let set =
        compile("[[rule]]\nid = \"late\"\nclock_behind = \"1h\"\n\n[[rule]]\nid = \"later\"\nclock_behind = \"2h\"\nfor = \"1h\"\nseverity = \"alarm\"\n")
            .unwrap();
    assert_eq!(set.rules[0].check, Check::ClockBehind { allowed_ms: 3_600_000, hold_ms: 1_800_000, severity: Severity::Warning });
    assert_eq!(set.rules[1].check, Check::ClockBehind { allowed_ms: 7_200_000, hold_ms: 3_600_000, severity: Severity::Alarm });
    assert!(set.rules[0].device && set.rules[1].device);
    let refused = errors("[[rule]]\nid = \"late\"\nvalue = \"x\"\nclock_behind = \"1h\"\n");
    assert!(refused.iter().any(|e| e.contains("test.toml:3:") && e.contains("takes no `value`")), "{refused:?}");
    let refused = errors("[[rule]]\nid = \"late\"\nclock_behind = \"5s\"\nfor = \"soon\"\n");
    assert!(refused.iter().any(|e| e.contains("test.toml:3:") && e.contains("clock_behind") && e.contains("at least 1m")), "{refused:?}");
    let refused = errors("[[rule]]\nid = \"late\"\nclock_behind = \"1h\"\nfor = \"soon\"\n");
    assert!(refused.iter().any(|e| e.contains("test.toml:4:") && e.contains("`soon` is not a duration")), "{refused:?}");
    let refused = errors("[[rule]]\nid = \"late\"\nclock_behind = \"1h\"\nclock_ahead = \"10m\"\n");
    assert!(refused.iter().any(|e| e.contains("exactly one check")), "{refused:?}");
}

#[test]
fn uncompensated_needs_compensation_and_levels() {
    let base = "[[rule]]\nid = \"t\"\nvalue = \"x\"\nbaseline = \"learn 1h\"\nseverity = \"notice\"\nat_least = 1.0\nuncompensated = \"warning\"\n";
    let refused = errors(base);
    assert!(refused.iter().any(|e| e.contains("uncompensated") && e.contains("needs `compensate`")), "{refused:?}");
    let set = compile(&format!("{base}compensate = \"temperature\"\n")).unwrap();
    assert_eq!(set.rules[0].uncompensated, Some(Severity::Warning));
    let refused =
        errors("[[rule]]\nid = \"t\"\nvalue = \"x\"\nbaseline = \"learn 1h\"\ncompensate = \"temperature\"\nflat_line = 3\nuncompensated = \"warning\"\n");
    assert!(refused.iter().any(|e| e.contains("uncompensated")), "{refused:?}");
}

#[test]
fn every_unknown_key_of_a_file_is_reported_in_one_run() {
    let text = "[[rule]]\nid = \"a\"\nvalue = \"x\"\nbelwo = 5\nseverity = \"warning\"\n\n[[rule]]\nid = \"b\"\nvalue = \"x\"\nabove = 5\ncolour = \"red\"\nseverity = \"warning\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("test.toml:4:1: error: unknown field `belwo`") && errs[0].ends_with("did you mean `below`?"), "{}", errs[0]);
    assert!(errs[1].starts_with("test.toml:11:1: error: unknown field `colour`"), "{}", errs[1]);
    // A misspelt key inside an inline table ends the search there (its line cannot be blanked).
    let inline = "[[rule]]\nid = \"a\"\nvalue = \"x\"\nabove = 5\nseverity = \"warning\"\nmessage = { en = \"a\", fr = \"b\" }\nunti = \"x\"\n";
    assert_eq!(errors(inline).len(), 1, "{:?}", errors(inline));
}

#[test]
fn unknown_key_is_reported_at_its_line_with_a_suggestion() {
    let errs = errors(&GOOD.replace("unit = ", "unti = "));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("test.toml:7:1: error: unknown field `unti`"), "{}", errs[0]);
    assert!(errs[0].ends_with("did you mean `unit`?"), "{}", errs[0]);
}

#[test]
fn bad_values_are_all_reported_with_their_keys() {
    let text = GOOD.replace("\"10m\"", "\"ten minutes\"").replace("\"yellow\"", "\"critical\"").replace("\"do\"", "\"do + 1\"");
    let errs = errors(&text).join("\n");
    assert!(errs.contains("test.toml:6:9: error in `value`"), "{errs}");
    assert!(errs.contains("test.toml:10:7: error in `for`: `ten minutes` is not a duration"), "{errs}");
    assert!(errs.contains("test.toml:12:12: error in `severity`: unknown severity `critical`"), "{errs}");
}

#[test]
fn clear_level_on_the_wrong_side_is_an_error() {
    let errs = errors(&GOOD.replace("clear_above = 5.5", "clear_above = 4.5"));
    assert_eq!(errs, vec!["test.toml:9:15: error in `clear_above`: clear level 4.5 must not be below the trigger 5"]);
}

#[test]
fn rule_without_a_check_is_an_error() {
    let errs = errors(&GOOD.replace("below = 5.0\nclear_above = 5.5\nfor = \"10m\"\nclear_for = \"30m\"\n", ""));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("test.toml:2:1: error in `above`: a rule needs exactly one check"), "{errs:?}");
}

#[test]
fn nan_threshold_is_an_error() {
    let errs = errors(&GOOD.replace("below = 5.0", "below = nan"));
    assert!(errs[0].contains("error in `below`: must be a finite number"), "{errs:?}");
}

#[test]
fn outside_band_and_clear_band_are_checked() {
    let text = "[[rule]]\nid = \"ph\"\nvalue = \"ph\"\noutside = [6, 9]\nclear_inside = [5.5, 8.8]\nseverity = \"warning\"\n";
    assert_eq!(errors(text), vec!["test.toml:5:16: error in `clear_inside`: the clear band 5.5..8.8 must lie within 6..9"]);
    assert!(errors(&text.replace("[6, 9]", "[9, 6]"))[0].contains("must be [low, high]"));
}

#[test]
fn bad_smooth_baseline_count_and_no_data_are_explained() {
    let text = GOOD.replace("unit = \"mg/L\"", "unit = \"mg/L\"\nsmooth = \"average 1h\"\nbaseline = \"first day\"\ncount = \"5 of 3\"");
    let errs = errors(&text).join("\n");
    assert!(errs.contains("error in `smooth`: `average 1h`: expected \"median <window>\""), "{errs}");
    assert!(errs.contains("error in `baseline`: `first day`: expected \"calibrated\", \"learn <duration>\""), "{errs}");
    assert!(errs.contains("error in `count`: `5 of 3`"), "{errs}");
    let errs = errors("[[rule]]\nid = \"q\"\nno_data = \"0.5x\"\n");
    assert!(errs[0].contains("error in `no_data`"), "{errs:?}");
}

#[test]
fn mismatched_clear_key_is_explained() {
    let errs = errors(&GOOD.replace("clear_above", "clear_below"));
    assert!(errs[0].contains("`clear_below` goes with `above`"), "{errs:?}");
}

#[test]
fn duplicate_ids_across_files_name_the_first_definition() {
    let a = RuleSource { name: "a.toml".into(), text: GOOD.into() };
    let b = RuleSource { name: "b.toml".into(), text: format!("\n\n{GOOD}") };
    let errs = RuleSet::compile(&[a, b]).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].to_string(), "b.toml:5:6: error in `id`: duplicate rule id `do-low` (first defined at a.toml:2)");
}

#[test]
fn toml_syntax_error_points_at_the_problem() {
    let errs = errors("[[rule]]\nid = \"x\nvalue = 1\n");
    assert!(errs[0].starts_with("test.toml:2:"), "{errs:?}");
}

#[test]
fn disabled_rules_are_skipped() {
    let set = compile(&GOOD.replace("severity = \"yellow\"", "severity = \"yellow\"\nenabled = false")).unwrap();
    assert!(set.rules.is_empty());
}

#[test]
fn suggestions_pick_the_nearest_key() {
    assert_eq!(edit_distance("abvoe", "above"), 2);
    assert!(with_suggestion("unknown field `clear_bellow`, expected one of `clear_below`, `clear_above`").ends_with("did you mean `clear_below`?"));
    assert!(!with_suggestion("unknown field `zzz`, expected one of `above`").contains("did you mean"));
}

#[test]
fn messages_are_compiled_per_language_and_checked() {
    let rule =
        &compile(&GOOD.replace("unit = \"mg/L\"", "unit = \"mg/L\"\nmessage = { en = \"{sensor}: DO {value}{unit}\", zh = \"{site}溶解氧{value}{unit}\" }"))
            .unwrap()
            .rules[0];
    assert_eq!(rule.messages.len(), 2);
    assert_eq!(rule.messages["zh"].to_string(), "{site}溶解氧{value}{unit}");
    let errs = errors(&GOOD.replace("unit = \"mg/L\"", "unit = \"mg/L\"\nmessage = { fr = \"x\", en = \"{house}\" }"));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("unknown placeholder `{house}`")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("unknown language `fr`")), "{errs:?}");
}

#[test]
fn overrides_replace_thresholds_for_the_sensors_they_scope() {
    let text = format!("{LADDER}\n[[rule.override]]\nbuildings = [\"B7\"]\n[[rule.override.level]]\nseverity = \"danger\"\nabove = 3.0\nclear_below = 2.5\n");
    let rule = &compile(&text).unwrap().rules[0];
    assert_eq!(rule.overrides.len(), 1);
    assert_eq!(rule.overrides[0].scope.buildings, vec!["B7".to_string()]);
    let Check::Ladder(levels) = &rule.overrides[0].check else { panic!() };
    assert_eq!(levels[0].bound, Bound::Above { trigger: 3.0, clear: 2.5 });

    let single = GOOD.replace("severity = \"yellow\"", "severity = \"yellow\"\n[[rule.override]]\nsites = [\"fish-pond\"]\nbelow = 3.0\n");
    let rule = &compile(&single).unwrap().rules[0];
    let Check::Ladder(levels) = &rule.overrides[0].check else { panic!() };
    assert_eq!((levels[0].severity, levels[0].bound), (Severity::Warning, Bound::Below { trigger: 3.0, clear: 3.0 }), "inherits the rule's severity");
}

#[test]
fn an_override_needs_a_scope_and_one_kind_of_threshold() {
    let errs = errors(&GOOD.replace("severity = \"yellow\"", "severity = \"yellow\"\n[[rule.override]]\nbelow = 3.0\n"));
    assert!(errs[0].contains("an override needs a scope"), "{errs:?}");
    let errs = errors("[[rule]]\nid = \"q\"\nno_data = \"2h\"\n[[rule.override]]\nsensors = [\"a\"]\nbelow = 1\n");
    assert!(errs[0].contains("only threshold rules can be overridden"), "{errs:?}");
}

#[test]
fn ratio_windows_and_agree_are_checked_where_they_are_written() {
    let rule = "[[rule]]\nid = \"q\"\nvalue = \"x\"\nabove = 1\nseverity = \"alarm\"\n";
    let errs = errors(&format!("{rule}from_baseline = \"ratio\"\n"));
    assert_eq!(errs, vec!["test.toml:6:17: error in `from_baseline`: `from_baseline` needs a `baseline` to be relative to"]);
    let errs = errors(&format!("{rule}baseline = \"learn 7d\"\nfrom_baseline = \"percent\"\n"));
    assert!(errs[0].contains("expected \"difference\" (value - baseline) or \"ratio\""), "{errs:?}");
    let errs = errors(&format!("{rule}windows = 2\n"));
    assert!(errs[0].starts_with("test.toml:6:11: error in `windows`: `windows` counts consecutive `change_over` windows"), "{errs:?}");
    let errs = errors(&rule.replace("above", "below").replace("value = \"x\"", "value = \"x\"\nchange_over = \"30d\"\nwindows = 2"));
    assert!(errs[0].contains("use them with `above`"), "{errs:?}");
    let errs = errors(&format!("{rule}agree = 0\n"));
    assert_eq!(errs, vec!["test.toml:6:9: error in `agree`: must be 1 to 16 sensors"]);
    let errs = errors("[[rule]]\nid = \"q\"\nno_data = \"2h\"\nagree = 2\n");
    assert!(errs[0].contains("only threshold rules can ask sensors to agree"), "{errs:?}");
    let set = compile(&format!("{rule}agree = 2\nbaseline = \"learn 7d\"\nfrom_baseline = \"ratio\"\nchange_over = \"30d\"\nwindows = 2\n")).unwrap();
    let compiled = &set.rules[0];
    assert_eq!(compiled.agree, Some(2));
    let signal = compiled.signal.as_ref().unwrap();
    assert_eq!(signal.relative, crate::signal::Relative::Ratio);
    assert_eq!(signal.transform, Some(crate::signal::Transform::ChangeOver { window: 30 * 86_400_000, windows: 2 }));
}

#[test]
fn a_lead_is_a_transform_of_its_own() {
    let set = compile("[[rule]]\nid = \"q\"\nvalue = \"x\"\nsmooth = \"median 24h\"\nlead = \"12h\"\nabove = 1\nseverity = \"alarm\"\n").unwrap();
    assert_eq!(set.rules[0].signal.as_ref().unwrap().transform, Some(crate::signal::Transform::Lead(12 * 3_600_000)));
    let errs = errors("[[rule]]\nid = \"q\"\nvalue = \"x\"\nchange_over = \"24h\"\nlead = \"12h\"\nabove = 1\nseverity = \"alarm\"\n");
    assert_eq!(errs, vec!["test.toml:5:8: error in `lead`: `lead` carries a level ahead: not with `change_over` or `swing_within`"]);
}

#[test]
fn windows_shorter_than_a_second_are_refused() {
    let errs = errors("[[rule]]\nid = \"q\"\nvalue = \"x\"\nswing_within = \"500ms\"\nabove = 1\nseverity = \"alarm\"\n");
    assert_eq!(errs, vec!["test.toml:4:16: error in `swing_within`: `500ms`: a window must be at least 1s (windows keep whole seconds)"]);
}

#[test]
fn temperature_compensation_needs_a_baseline_to_correct_and_a_field_of_its_own() {
    let rule = "[[rule]]\nid = \"t\"\nkind = \"tilt\"\nvalue = \"permille(hypot(x, y))\"\nat_least = 1\nseverity = \"notice\"\n";
    let set = compile(&format!("{rule}baseline = \"learn 24h\"\ncompensate = \"temp\"\n")).unwrap();
    assert_eq!(set.rules[0].signal.as_ref().unwrap().compensate.as_deref(), Some("temp"));
    let errs = errors(&format!("{rule}compensate = \"temp\"\n"));
    assert!(
        errs[0].starts_with("test.toml:7:14: error in `compensate`: temperature compensation corrects the change from an installation baseline"),
        "{errs:?}"
    );
    let errs = errors(&format!("{rule}baseline = \"recent 1h\"\ncompensate = \"temp\"\n"));
    assert!(errs[0].contains("needs `baseline = \"learn …\"`"), "{errs:?}");
    let errs = errors(&format!("{rule}baseline = \"learn 24h\"\ncompensate = \"x\"\n"));
    assert!(errs[0].contains("`x` is a field of `value`"), "{errs:?}");
    let errs =
        errors(&format!("{}baseline = \"learn 24h\"\ncompensate = \"temp\"\n", rule.replace("permille(hypot(x, y))", "hypot(hypot(x, y), hypot(z, w))")));
    assert!(errs[0].contains("corrects at most 3 fields"), "{errs:?}");
    let errs = errors(&format!("{rule}baseline = \"learn 24h\"\ncompensate = \"temp-c\"\n"));
    assert!(errs[0].contains("expected the name of the field that reports the temperature"), "{errs:?}");
}

#[test]
fn peers_compare_a_box_with_its_building_upwards_only() {
    let drifting = "[[rule]]\nid = \"drift\"\nvalue = \"x\"\npeers = \"building\"\nat_least = 0.3\nseverity = \"warning\"\n";
    assert!(compile(drifting).unwrap().rules[0].peers);
    let errs = errors(&drifting.replace("\"building\"", "\"site\"")).join("\n");
    assert!(errs.contains("error in `peers`: `site`: the only peers are the other boxes of the building"), "{errs}");
    let errs = errors(&drifting.replace("at_least = 0.3", "below = 0.3")).join("\n");
    assert!(errs.contains("error in `peers`: a box is judged by how far it moved that the others did not"), "{errs}");
    let errs = errors(&format!("{drifting}agree = 2\n")).join("\n");
    assert!(errs.contains("error in `peers`: a rule judges either the building (`agree`) or each box against the others"), "{errs}");
}

#[test]
fn out_of_range_judges_readings_as_reported_so_not_with_a_baseline_or_steady() {
    let rule = "[[rule]]\nid = \"q\"\nvalue = \"out_of_range(within(do, 0, 25))\"\nat_least = 1\nseverity = \"warning\"\n";
    assert!(compile(rule).is_ok());
    for extra in ["baseline = \"learn 7d\"\n", "baseline = \"recent 1h\"\n", "smooth = \"steady 2\"\n", "smooth = \"apart\"\n"] {
        let errs = errors(&format!("{rule}{extra}"));
        assert_eq!(
            errs,
            vec!["test.toml:3:9: error in `value`: `out_of_range` counts readings as reported: not with a `baseline`, `steady` or `apart` smoothing"],
            "{extra}"
        );
    }
    // `within` takes the reading as reported whatever follows, so a baseline is fine.
    assert!(compile(
        "[[rule]]\nid = \"q\"\nvalue = \"within(turbidity, 0, 4000)\"\nbaseline = \"learn 7d\"\nfrom_baseline = \"ratio\"\nabove = 2\nseverity = \"alarm\"\n"
    )
    .is_ok());
    let errs = errors(&rule.replace("within(do, 0, 25)", "within(do, 25, 0)"));
    assert!(errs[0].contains("the lower bound must be below the upper one"), "{errs:?}");
}

#[test]
fn steady_takes_how_far_apart_agreeing_readings_may_lie() {
    let set = compile(
        "[[rule]]\nid = \"s\"\nvalue = \"hypot(x, y)\"\nbaseline = \"recent 1h\"\nsmooth = \"steady 2 within 0.03\"\nabove = 0.1\nseverity = \"danger\"\n",
    )
    .unwrap();
    let smooth = set.rules[0].signal.as_ref().and_then(|signal| signal.smooth).unwrap();
    assert_eq!((smooth.method, smooth.window, smooth.within), (SmoothMethod::Steady, Window::Samples(2), Some(0.03)));
    for bad in ["median 1h within 0.03", "steady 2 within none", "steady 2 within -1"] {
        let errs = errors(&format!("[[rule]]\nid = \"s\"\nvalue = \"x\"\nsmooth = \"{bad}\"\nabove = 1\nseverity = \"alarm\"\n")).join("\n");
        assert!(errs.contains("\"within\" takes a positive number after \"steady <readings>\""), "{bad}: {errs}");
    }
}

#[test]
fn unless_skips_readings_of_a_rule_with_a_value_and_is_checked_like_one() {
    let rules = compile(&GOOD.replace("value = \"do\"", "value = \"do\"\nunless = \"same(do, ph, nh3n)\"")).expect("compiles");
    let signal = rules.rules[0].signal.as_ref().expect("a value");
    assert_eq!(signal.to_string(), "do, unless same(do, ph, nh3n)");
    let typo = errors(&GOOD.replace("value = \"do\"", "value = \"do\"\nunless = \"sames(do, ph)\""));
    assert!(typo.iter().any(|e| e.contains("test.toml:7") && e.contains("unless") && e.contains("unknown function `sames`")), "{typo:?}");
    let no_value = errors("[[rule]]\nid = \"x\"\nno_data = \"2x\"\nunless = \"same(a, b, c)\"\nseverity = \"warning\"\n");
    assert!(no_value.iter().any(|e| e.contains("test.toml:4") && e.contains("no `value`")), "{no_value:?}");
}

#[test]
fn a_file_s_default_unless_goes_to_its_rules_that_say_none_of_their_own() {
    let device = "\n[[rule]]\nid = \"probe-one-value\"\nkind = \"water\"\nvalue = \"mostly_same(do, ph, nh3n)\"\nunless = \"\"\nat_least = 1\ndevice = true\nseverity = \"warning\"\n";
    let stuck = "\n[[rule]]\nid = \"stuck\"\nkind = \"water\"\nvalue = \"do\"\nflat_line = \"3h\"\ndevice = true\nseverity = \"warning\"\n";
    let silent = "\n[[rule]]\nid = \"silent\"\nkind = \"water\"\nno_data = \"2x\"\nseverity = \"warning\"\n";
    let own = GOOD.replace("do-low", "do-own").replace("value = \"do\"", "value = \"do\"\nunless = \"same(do, ph, orp)\"");
    let none = GOOD.replace("do-low", "do-none").replace("value = \"do\"", "value = \"do\"\nunless = \"\"");
    let file = format!("[defaults]\nunless = \"mostly_same(do, ph, nh3n)\"\n{GOOD}{own}{none}{device}{stuck}{silent}");
    let rules = compile(&file).expect("compiles");
    let unless = |id: &str| {
        let rule = rules.rules.iter().find(|r| r.id == id).expect(id);
        rule.signal.as_ref().and_then(|s| s.unless.as_ref()).map(ToString::to_string)
    };
    assert_eq!(unless("do-low").as_deref(), Some("mostly_same(do, ph, nh3n)"), "the default");
    assert_eq!(unless("do-own").as_deref(), Some("same(do, ph, orp)"), "its own");
    assert_eq!(unless("do-none"), None, "`unless = \"\"` takes none");
    assert_eq!(unless("probe-one-value"), None, "the device rule that tells such readings takes none");
    assert_eq!(unless("stuck").as_deref(), Some("mostly_same(do, ph, nh3n)"), "a device rule with a value takes it too");
    assert_eq!(unless("silent"), None, "a rule without a value has nothing to skip");
    let typo = errors(&format!("[defaults]\nunless = \"mostly_sam(do, ph)\"\n{GOOD}"));
    assert!(typo.iter().any(|e| e.contains("test.toml:2") && e.contains("unknown function `mostly_sam`")), "{typo:?}");
    let unknown = errors(&format!("[defaults]\nunles = \"same(do, ph, nh3n)\"\n{GOOD}"));
    assert!(unknown.iter().any(|e| e.contains("test.toml:2") && e.contains("unless")), "a misspelt default is an error, with the key it meant: {unknown:?}");
}

#[test]
fn doubted_by_needs_alone_and_names_rules_of_the_set() {
    let red = "[[rule]]\nid = \"red\"\nvalue = \"x\"\nabove = 1\nseverity = \"danger\"\nagree = 2\n";
    let doubter = "[[rule]]\nid = \"odd\"\nvalue = \"x\"\nabove = 9\nseverity = \"warning\"\ndevice = true\n";
    let set = compile(&format!("{red}alone = \"alarm\"\ndoubted_by = [\"odd\"]\n{doubter}")).unwrap();
    assert_eq!(set.rules[0].doubted_by, vec!["odd".to_string()]);
    let errs = errors(&format!("{red}doubted_by = [\"odd\"]\n{doubter}"));
    assert_eq!(errs, vec!["test.toml:7:14: error in `doubted_by`: a box in doubt counts as one alone: `doubted_by` needs `agree` and `alone`"]);
    let errs = errors(&format!("{red}alone = \"alarm\"\ndoubted_by = [\"od\"]\n{doubter}"));
    assert_eq!(errs, vec!["test.toml:2:6: error in `doubted_by`: `doubted_by` names `od`, which is no rule (or one disabled): a box in doubt is one with that rule open on it"]);
}
