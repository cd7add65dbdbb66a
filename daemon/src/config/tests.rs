use super::*;
use gridwatch_rules::SensorKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const MINIMAL: &str = r#"
state_dir = "state"

[mqtt]
broker = "mqtt://127.0.0.1:1883"

[[sensor]]
id = "house-07"
kind = "tilt"
site = "north-lane"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse("gridwatch.toml", text, Path::new("/etc/gridwatch"))
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid(diagnostics)) => diagnostics.iter().map(ToString::to_string).collect(),
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/etc/gridwatch/state"));
    assert_eq!(config.mqtt.broker, BrokerConfig::External { host: "127.0.0.1".into(), port: 1883 });
    assert_eq!(config.mqtt.max_payload_bytes, 4096);
    assert!(config.rules.builtin_packs);
    assert_eq!(config.rules.state_save, Duration::from_secs(60));
    assert!(config.alerts.console);
    assert!(config.influxdb.is_none());
    assert_eq!(config.sensors[0].kind, SensorKind::Tilt);
}

#[test]
fn the_state_save_interval_is_bounded() {
    let config = parse(&format!("{MINIMAL}\n[rules]\nstate_save_secs = 300\n")).unwrap();
    assert_eq!(config.rules.state_save, Duration::from_secs(300));
    let refused = errors(&format!("{MINIMAL}\n[rules]\nstate_save_secs = 5\n"));
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:13:") && e.contains("10 to 3600")), "{refused:?}");
}

#[test]
fn ingest_time_limits_have_defaults_and_bounds() {
    assert_eq!(parse(MINIMAL).unwrap().ingest, IngestConfig::default());
    assert_eq!(IngestConfig::default().max_future_skew, Duration::from_secs(300));
    let config =
        parse(&format!("{MINIMAL}\n[ingest]\nmax_future_skew_secs = 60\nreanchor_after_readings = 5\nreanchor_after_secs = 0\nclock_behind_secs = 7200\nclock_behind_for_secs = 0\n"))
            .unwrap();
    assert_eq!(
        config.ingest,
        IngestConfig {
            max_future_skew: Duration::from_secs(60),
            reanchor_after_readings: 5,
            reanchor_after: Duration::ZERO,
            clock_behind: Duration::from_secs(7200),
            clock_behind_for: Duration::ZERO,
            ..IngestConfig::default()
        }
    );
    let refused = errors(&format!("{MINIMAL}\n[ingest]\nmax_future_skew_secs = 0\nreanchor_after_readings = 0\n"));
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:13:") && e.contains("ingest.max_future_skew_secs") && e.contains("1 to 86400")), "{refused:?}");
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:14:") && e.contains("ingest.reanchor_after_readings")), "{refused:?}");
    assert!(errors(&format!("{MINIMAL}\n[ingest]\nmax_future_skew = 60\n")).iter().any(|e| e.contains("max_future_skew")), "a key without its unit is a typo");
}

#[test]
fn a_report_rate_topic_names_each_box_and_has_no_wildcard() {
    let mqtt = |keys: &str| MINIMAL.replacen("[mqtt]\n", &format!("[mqtt]\n{keys}\n"), 1);
    assert_eq!(parse(MINIMAL).unwrap().mqtt.report_rate_topic, None);
    let config = parse(&mqtt(r#"report_rate_topic = "gridwatch/{site}/{sensor}/set""#)).unwrap();
    assert_eq!(config.mqtt.report_rate_topic.as_deref(), Some("gridwatch/{site}/{sensor}/set"));
    let refused = errors(&mqtt(r#"report_rate_topic = "gridwatch/{site}/set""#));
    assert!(refused.iter().any(|e| e.contains("mqtt.report_rate_topic") && e.contains("{sensor}")), "{refused:?}");
    assert!(errors(&mqtt(r#"report_rate_topic = "gridwatch/+/{sensor}/set""#)).iter().any(|e| e.contains("wildcards")));
    for (template, says) in
        [("gridwatch/{site}/{sensor}/telemetry", "reads readings from"), ("gridwatch/{building}/{sensor}/set", "placeholders"), ("$SYS/{sensor}", "system")]
    {
        let refused = errors(&mqtt(&format!("report_rate_topic = \"{template}\"")));
        assert!(refused.iter().any(|e| e.contains("mqtt.report_rate_topic") && e.contains(says)), "{template}: {refused:?}");
    }
}

#[test]
fn the_packet_limit_is_checked_against_the_payload_limit() {
    let mqtt = |keys: &str| MINIMAL.replacen("[mqtt]\n", &format!("[mqtt]\n{keys}\n"), 1);
    let config = parse(MINIMAL).unwrap();
    assert_eq!((config.mqtt.max_payload_bytes, config.mqtt.max_packet_bytes), (4096, 1024 * 1024));
    assert_eq!(parse(&mqtt("max_payload_bytes = 65536\nmax_packet_bytes = 66560")).unwrap().mqtt.max_packet_bytes, 66_560, "payload + 1024 is enough");
    let refused = errors(&mqtt("max_payload_bytes = 2000000"));
    assert!(
        refused.iter().any(|e| e.contains("mqtt.max_packet_bytes") && e.contains("2001024")),
        "a payload limit above the default packet limit: {refused:?}"
    );
    assert!(errors(&mqtt("max_packet_bytes = 300000000")).iter().any(|e| e.contains("mqtt.max_packet_bytes") && e.contains("268435455")));
}

#[test]
fn ingest_field_limits_have_defaults_and_bounds() {
    let defaults = parse(MINIMAL).unwrap().ingest;
    assert_eq!((defaults.max_fields_per_reading, defaults.max_field_names_per_sensor, defaults.max_field_name_bytes), (32, 64, 64));
    let config = parse(&format!("{MINIMAL}\n[ingest]\nmax_fields_per_reading = 4\nmax_field_names_per_sensor = 6\nmax_field_name_bytes = 20\n")).unwrap();
    assert_eq!((config.ingest.max_fields_per_reading, config.ingest.max_field_names_per_sensor, config.ingest.max_field_name_bytes), (4, 6, 20));
    let refused = errors(&format!("{MINIMAL}\n[ingest]\nmax_fields_per_reading = 0\nmax_field_name_bytes = 1000\n"));
    assert!(refused.iter().any(|e| e.contains("ingest.max_fields_per_reading") && e.contains("1 to 1000")), "{refused:?}");
    assert!(refused.iter().any(|e| e.contains("ingest.max_field_name_bytes") && e.contains("1 to 256")), "{refused:?}");
}

#[test]
fn annotated_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gridwatch.example.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.sensors.len(), 3);
    assert_eq!(config.sensors[0].baseline.get("y"), Some(&-0.12));
    assert_eq!(config.alerts.webhooks[0].name, "community-office");
    assert_eq!(config.mqtt.topic_maps[0].payload.renames.get("AngleX").map(String::as_str), Some("x"));
    assert_eq!(config.http_listen, Some("127.0.0.1:9181".parse().unwrap()));
}

#[test]
fn water_sensors_get_surface_class_three_unless_told_otherwise() {
    let text = format!("{MINIMAL}\n[[sensor]]\nid = \"canal\"\nkind = \"water\"\nsite = \"x\"\n\n[[sensor]]\nid = \"tap\"\nkind = \"water\"\nsite = \"x\"\ntags = {{ use = \"drinking\" }}\n");
    let config = parse(&text).unwrap();
    let canal = config.sensors[1].rule_tags();
    assert_eq!((canal.get("use"), canal.get("water_class")), (Some("surface"), Some("III")));
    assert_eq!(config.sensors[1].tags, canal, "the loader stores the tags rules see");
    let tap = config.sensors[2].rule_tags();
    assert_eq!(tap.get("water_class"), None);
    assert_eq!(config.sensors[0].interval, Duration::from_secs(3600));
}

#[test]
fn baseline_and_interval_are_read_and_checked() {
    let config = parse(&MINIMAL.replace("site = \"north-lane\"", "site = \"north-lane\"\ninterval_secs = 60\nbaseline = { x = 0.31, y = -0.12 }")).unwrap();
    assert_eq!(config.sensors[0].baseline.get("x"), Some(&0.31));
    assert_eq!(config.sensors[0].interval, Duration::from_secs(60));
    let errs = errors(&MINIMAL.replace("site = \"north-lane\"", "site = \"north-lane\"\ntags = { water_class = \"VI\" }"));
    assert!(errs[0].contains("`VI` is not a value of tag `water_class`: I, II, III, IV, V"), "{errs:?}");
    for (written, meant) in [("3", "III"), ("Ⅲ", "III"), ("iii", "III"), ("4", "IV")] {
        let errs = errors(&MINIMAL.replace("site = \"north-lane\"", &format!("site = \"north-lane\"\ntags = {{ water_class = \"{written}\" }}")));
        assert!(errs[0].contains(&format!("did you mean `{meant}`?")), "{written}: {errs:?}");
    }
}

#[test]
fn a_misspelt_tag_the_packs_read_is_refused_with_a_suggestion() {
    let with_tags = |tags: &str| errors(&MINIMAL.replace("site = \"north-lane\"", &format!("site = \"north-lane\"\ntags = {{ {tags} }}")));
    let errs = with_tags("use = \"drink\"");
    assert!(errs[0].contains("`drink` is not a value of tag `use`: surface, drinking; did you mean `drinking`?"), "{errs:?}");
    assert!(with_tags("water_clas = \"II\"")[0].contains("did you mean `water_class`?"));
    assert!(with_tags("water_body = \"sea\"")[0].contains("river, lake"));
    assert!(with_tags("building_boxes = \"one\"")[0].contains("set by gridwatch"));
    // Tags of the operator's own rules stay free.
    assert!(parse(
        &MINIMAL.replace("site = \"north-lane\"", "site = \"north-lane\"\ntags = { owner = \"housing-office\", use = \"surface\", water_body = \"lake\" }")
    )
    .is_ok());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let errs = errors(&MINIMAL.replace("site = ", "sight = "));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("gridwatch.toml:10:1: error: unknown field `sight`"), "{}", errs[0]);
}

#[test]
fn bad_kind_is_reported_at_its_value() {
    let errs = errors(&MINIMAL.replace("\"tilt\"", "\"tlit\""));
    assert!(errs[0].starts_with("gridwatch.toml:9:8: error: unknown variant `tlit`"), "{}", errs[0]);
}

#[test]
fn all_semantic_errors_are_reported_together() {
    let text = format!(
        "{MINIMAL}\n[[sensor]]\nid = \"house-07\"\nkind = \"water\"\nsite = \"x\"\n\n[[alerts.webhook]]\nurl = \"ftp://x\"\n\n[http]\nlisten = \"localhost\"\n"
    );
    let errs = errors(&text);
    assert_eq!(
        errs,
        vec![
            "gridwatch.toml:13:6: error in `sensor.id`: sensor `house-07` is listed twice",
            "gridwatch.toml:18:7: error in `alerts.webhook.url`: must be an http:// or https:// URL",
            "gridwatch.toml:21:10: error in `http.listen`: `localhost` is not an address such as \"127.0.0.1:9181\"",
        ]
    );
}

#[test]
fn bad_broker_url_is_explained() {
    let errs = errors(&MINIMAL.replace("mqtt://127.0.0.1:1883", "http://broker"));
    assert_eq!(
        errs,
        vec!["gridwatch.toml:5:10: error in `mqtt.broker`: `http://broker` is neither \"embedded\" nor an mqtt://host:port or mqtts://host:port URL"]
    );
}

#[test]
fn topic_map_placeholder_must_match_a_wildcard() {
    let text = format!("{MINIMAL}\n[[mqtt.topic]]\nfilter = \"vendor/+/up\"\nsensor = \"{{2}}\"\n");
    let errs = errors(&text.replace("[[sensor]]", "[[mqtt.topic]]\nfilter = \"a/#/b\"\nsensor = \"house-07\"\n\n[[sensor]]"));
    assert!(errs.iter().any(|e| e.contains("`#` must be a whole level at the end")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("`{2}` refers to `+` level 2, but the filter has 1")), "{errs:?}");
}

#[test]
fn missing_rule_path_is_an_error() {
    let errs = errors(&format!("{MINIMAL}\n[rules]\npaths = [\"no-such-dir\"]\n"));
    assert_eq!(errs, vec!["gridwatch.toml:13:10: error in `rules.paths`: /etc/gridwatch/no-such-dir does not exist"]);
}

#[test]
fn topic_filter_rules() {
    assert!(check_topic_filter("a/+/b/#").is_ok());
    assert!(check_topic_filter("a/b+").is_err());
    assert!(check_topic_filter("").is_err());
}

#[test]
fn failover_names_real_channels_and_goes_nowhere_in_circles() {
    let channels = "\n[[alerts.webhook]]\nname = \"office\"\nurl = \"http://127.0.0.1:9/hook\"\n\n[[alerts.dingtalk]]\nname = \"grid-3\"\nurl = \"http://127.0.0.1:9/robot/send?access_token=t\"\n";
    let good = parse(&format!("{MINIMAL}{channels}\n[alerts.failover]\ngrid-3 = \"office\"\n")).unwrap();
    assert_eq!(good.alerts.failover.get("grid-3").map(String::as_str), Some("office"));
    assert_eq!(good.alerts.dingtalk[0].throttle_patience, Some(Duration::from_secs(60)), "a robot with a failover does not wait out a long throttle");

    let unknown = errors(&format!("{MINIMAL}{channels}\n[alerts.failover]\ngrid-3 = \"sms\"\n"));
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].starts_with("gridwatch.toml:21:") && unknown[0].contains("`sms` is not an alert channel"), "{unknown:?}");

    let circle = errors(&format!("{MINIMAL}{channels}\n[alerts.failover]\ngrid-3 = \"office\"\noffice = \"grid-3\"\n"));
    assert!(circle.iter().any(|e| e.contains("failover goes round in a circle: grid-3 -> office -> grid-3")), "{circle:?}");
}

#[test]
fn a_csv_inventory_adds_sensors_checked_like_tables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sensors.csv"),
        "id,kind,site,building,grid,interval_secs,baseline.x,baseline.y,latitude,longitude,tag.owner\n\
         house-08,tilt,north-lane,B7,grid-3,600,0.31,-0.12,31.2304,121.4737,Li\n\
         canal-02,water,east-canal,,,,,,,,\n",
    )
    .unwrap();
    let config = Config::parse("gridwatch.toml", &format!("inventory = \"sensors.csv\"\n{MINIMAL}"), dir.path()).unwrap();
    let ids: Vec<&str> = config.sensors.iter().map(|s| &*s.id).collect();
    assert_eq!(ids, vec!["house-07", "house-08", "canal-02"]);
    let house = &config.sensors[1];
    assert_eq!((house.place.building.as_deref(), house.place.grid.as_deref(), house.interval), (Some("B7"), Some("grid-3"), Duration::from_secs(600)));
    assert_eq!(house.baseline, BTreeMap::from([("x".to_string(), 0.31), ("y".to_string(), -0.12)]));
    assert_eq!((house.location, house.tags.get("owner")), (Some([31.2304, 121.4737]), Some("Li")));
    assert_eq!(
        (config.sensors[2].kind, config.sensors[2].interval, config.sensors[2].place.building.as_ref()),
        (SensorKind::Water, Duration::from_secs(3600), None)
    );
}

#[test]
fn csv_inventory_errors_name_the_csv_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sensors.csv"),
        "id,kind,site,colour\nhouse-07,tilt,north-lane,red\nhouse 9,tilt,north-lane,\nh-10,boat,north-lane,\nh-11,tilt,north-lane,\n",
    )
    .unwrap();
    let errors = match Config::parse("gridwatch.toml", &format!("inventory = \"sensors.csv\"\n{MINIMAL}"), dir.path()) {
        Err(ConfigError::Invalid(diagnostics)) => diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        other => panic!("expected diagnostics, got {other:?}"),
    };
    let csv = dir.path().join("sensors.csv").display().to_string();
    // In the order of the file: each row is read and checked before the next.
    let expect = [format!("{csv}:1:1"), format!("{csv}:2:1"), format!("{csv}:3:1"), format!("{csv}:4:6")];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, place) in errors.iter().zip(&expect) {
        assert!(error.starts_with(place.as_str()), "{error} should start with {place}: {errors:#?}");
    }
    assert!(errors[0].contains("unknown column `colour`") && errors[1].contains("also a [[sensor]]"), "{errors:#?}");
    assert!(errors[2].contains("`house 9` is not a sensor id") && errors[3].contains("`boat` is not a sensor kind"), "{errors:#?}");
}

#[test]
fn sensors_at_the_same_place_share_one_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sensors.csv"),
        "id,kind,site,building,grid,storeys\n\
         house-08,tilt,north-lane,B7,grid-3,2\n\
         house-09,tilt,north-lane,B7,grid-3,2\n\
         house-10,tilt,north-lane,B8,grid-3,2\n",
    )
    .unwrap();
    let config = Config::parse("gridwatch.toml", &format!("inventory = \"sensors.csv\"\n{MINIMAL}"), dir.path()).unwrap();
    let [_, b7_a, b7_b, b8] = &config.sensors[..] else { panic!("four sensors: {:?}", config.sensors) };
    assert!(Arc::ptr_eq(&b7_a.place, &b7_b.place), "two boxes of building B7, one place");
    assert!(!Arc::ptr_eq(&b7_a.place, &b8.place));
    assert_eq!((b8.place.building.as_deref(), b8.place.storeys), (Some("B8"), Some(2)));
    assert!(Arc::ptr_eq(&b7_a.place.site, &b8.place.site), "their texts are shared too");
    assert!(std::mem::size_of::<SensorConfig>() <= 112, "{} bytes", std::mem::size_of::<SensorConfig>());
}

#[test]
fn a_topic_map_reads_nested_json_through_checked_pointers() {
    let map = |values: &str| {
        MINIMAL.replace(
            "[[sensor]]",
            &format!("[[mqtt.topic]]\nfilter = \"lora/+/up\"\nsensor = \"{{1}}\"\nts = \"/rx/time\"\nvalues = {{ {values} }}\n\n[[sensor]]"),
        )
    };
    let config = parse(&map("x = { path = \"/object/x\", scale = 0.01 }, y = \"/object/y\"")).unwrap();
    let payload = &config.mqtt.topic_maps[0].payload;
    assert_eq!(
        payload.values.iter().map(|v| (v.field.as_str(), v.pointer.as_str(), v.scale)).collect::<Vec<_>>(),
        [("x", "/object/x", 0.01), ("y", "/object/y", 1.0)]
    );
    assert_eq!(payload.ts.as_deref(), Some("/rx/time"));
    assert!(errors(&map("x = \"object.x\""))[0].contains("is not a JSON pointer"));
    assert!(errors(&map("x = { path = \"/x\", scale = 0 }"))[0].contains("non-zero"));
    assert!(errors(&map("x = { path = \"/x\", scael = 2 }"))[0].contains("(keys: path, scale, offset)"), "a misspelt key is not ignored");
}

#[test]
fn time_zone_and_language_default_to_china_and_are_checked() {
    assert_eq!(parse(MINIMAL).unwrap().time_zone, chrono_tz::Asia::Shanghai);
    let berlin = MINIMAL.replace("state_dir = \"state\"\n", "state_dir = \"state\"\ntime_zone = \"Europe/Berlin\"\nlanguage = \"en\"\n");
    let config = parse(&format!("{berlin}\n[[alerts.wecom]]\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K\"\n")).unwrap();
    assert_eq!(config.time_zone, chrono_tz::Europe::Berlin);
    assert!(!config.alerts.wecom[0].wording.chinese, "the robot follows the top-level language");
    assert_eq!(config.alerts.wecom[0].wording.time_zone, chrono_tz::Europe::Berlin);
    let refused = errors(&MINIMAL.replace("state_dir = \"state\"\n", "state_dir = \"state\"\ntime_zone = \"Beijing\"\nlanguage = \"fr\"\n"));
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:3:") && e.contains("time_zone") && e.contains("IANA")), "{refused:?}");
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:4:") && e.contains("language") && e.contains("\"zh\" or \"en\"")), "{refused:?}");
}

#[test]
fn display_names_must_name_a_site_or_building_of_the_inventory() {
    let config = parse(&format!("{MINIMAL}building = \"B7\"\n\n[names]\n\"north-lane\" = \"北巷社区\"\n\"north-lane/B7\" = \"7号楼\"\n")).unwrap();
    assert_eq!((config.places.site("north-lane"), config.places.building("north-lane", "B7")), (Some("北巷社区"), Some("7号楼")));
    let refused = errors(&format!("{MINIMAL}\n[names]\n\"north-lan\" = \"北巷社区\"\n"));
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:13:") && e.contains("`north-lan` is no site")), "{refused:?}");
}

#[test]
fn an_sms_gateway_s_success_field_is_a_json_pointer_with_its_value() {
    let sms = |keys: &str| {
        format!("{MINIMAL}\n[[alerts.sms]]\nurl = \"https://sms.example/send\"\nbody = '{{\"to\": \"{{phone}}\", \"m\": \"{{message}}\"}}'\n{keys}")
    };
    let config = parse(&sms("success_field = \"/code\"\nsuccess_value = 0\n")).unwrap();
    assert_eq!(config.alerts.sms[0].success, Some(SmsSuccess { field: "/code".into(), value: "0".into() }));
    assert_eq!(parse(&sms("")).unwrap().alerts.sms[0].success, None, "without them, HTTP 2xx counts");
    let refused = errors(&sms("success_field = \"Code\"\nsuccess_value = \"OK\"\n"));
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:15:17: error in `alerts.sms.success_field`") && e.contains("not a JSON pointer")), "{refused:?}");
    let refused = errors(&sms("success_field = \"/Code\"\n"));
    assert!(refused.iter().any(|e| e.contains("`success_field` needs `success_value`")), "{refused:?}");
    let refused = errors(&sms("success_field = \"/Code\"\nsuccess_value = 1.5\n"));
    assert!(refused.iter().any(|e| e.contains("error in `alerts.sms.success_value`") && e.contains("give a string, an integer or true/false")), "{refused:?}");
}

#[test]
fn an_sms_gateway_s_timeout_is_ten_seconds_unless_given() {
    let sms = |keys: &str| {
        format!("{MINIMAL}\n[[alerts.sms]]\nurl = \"https://sms.example/send\"\nbody = '{{\"to\": \"{{phone}}\", \"m\": \"{{message}}\"}}'\n{keys}")
    };
    assert_eq!(parse(&sms("")).unwrap().alerts.sms[0].timeout, Duration::from_secs(10));
    assert_eq!(parse(&sms("timeout_secs = 45\n")).unwrap().alerts.sms[0].timeout, Duration::from_secs(45));
    let refused = errors(&sms("timeout_secs = 0\n"));
    assert!(refused.iter().any(|e| e.contains("gridwatch.toml:15:") && e.contains("alerts.sms[0].timeout_secs")), "{refused:?}");
}
