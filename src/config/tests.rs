use std::path::Path;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, Path::new("/cfg/db-sync.json"), &no_env)
}

const MINIMAL: &str = r#"{
  "source": {"type": "sqlite", "path": "source.sqlite"},
  "target": {"type": "sqlite", "path": "target.sqlite"},
  "tables": [
    {"name": "items", "primary_key_field": "id", "modify_id_field": "modify_id"},
    {"name": "product-work", "source_table": "product", "target_table": "product",
     "where": {"product_type": "work"}, "field_mapping": {"descr": "description"}}
  ],
  "batch_size": 5000,
  "trust_modify_id": false
}"#;

/// The issue's minimal config is accepted, with relative paths resolved against the
/// config's folder and the manual's defaults filled in.
#[test]
fn minimal_config_is_accepted_with_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.source.path.as_deref(), Some(Path::new("/cfg/source.sqlite")));
    assert_eq!(config.target.path.as_deref(), Some(Path::new("/cfg/target.sqlite")));
    assert_eq!(config.tables.len(), 2);
    let items = &config.tables[0];
    assert_eq!(items.source_table, "items");
    assert_eq!(items.modify_field.as_deref(), Some("modify_id"));
    assert_eq!(items.settings.batch_size, 5000);
    assert_eq!(items.settings.delete_batch_size, 1000);
    assert_eq!(items.settings.id_array_batch_size, 25000);
    assert_eq!(items.settings.binary_search_read_batch, 500);
    let work = &config.tables[1];
    assert_eq!(work.source_table, "product");
    assert_eq!(work.target_table, "product");
    assert_eq!(work.key_fields, vec!["id".to_string()]);
    assert_eq!(work.filter.len(), 1);
    assert_eq!(work.filter[0].0, "product_type");
    assert!(matches!(&work.filter[0].1, Value::Text(s) if s == "work"));
    assert_eq!(work.target_column("descr"), "description");
    assert_eq!(work.target_column("name"), "name");
    assert_eq!(config.run.max_error_count, 25);
    assert_eq!(config.run.state_dir, Path::new("/cfg/.db-sync"));
}

/// A misspelt key is an error naming the key, where it is, and the closest valid key.
#[test]
fn unknown_key_names_key_and_suggestion() {
    let text = MINIMAL.replace("\"batch_size\": 5000", "\"batch_sise\": 5000");
    let err = parse(&text).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unknown key `batch_sise`"), "{message}");
    assert!(message.contains("did you mean `batch_size`"), "{message}");

    let text = MINIMAL.replace("\"primary_key_field\"", "\"primary_key_feild\"");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("`primary_key_feild` at `tables[0]`"), "{message}");
    assert!(message.contains("did you mean `primary_key_field`"), "{message}");
}

/// Malformed JSON reports line and column.
#[test]
fn malformed_json_reports_line_and_column() {
    let text = "{\n  \"source\": {\"type\": \"sqlite\",, }\n}";
    match parse(text).unwrap_err() {
        ConfigError::Syntax { line, column, .. } => {
            assert_eq!(line, 2);
            assert!(column > 20, "column {column}");
        }
        other => panic!("expected a syntax error, got {other}"),
    }
}

/// `${VAR}` is replaced in any string; an unset variable is an error naming it; `$${`
/// stays literal.
#[test]
fn env_interpolation() {
    let text = MINIMAL.replace("source.sqlite", "${DATA_DIR}/src-$${x}.sqlite");
    let env = |name: &str| (name == "DATA_DIR").then(|| "/data".to_string());
    let config = Config::from_str_at(&text, Path::new("/cfg/db-sync.json"), &env).unwrap();
    assert_eq!(config.source.path.as_deref(), Some(Path::new("/data/src-${x}.sqlite")));

    let err = parse(&text).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingEnv { var, location, .. }
        if var == "DATA_DIR" && location == "source.path"),
        "{err}"
    );
}

/// A variable inside a URL is percent-encoded, so a password with `@`, `/`, `#`, `?` or
/// `:` keeps the URL's shape; a whole URL from one variable is taken as it is.
#[test]
fn env_inside_a_url_is_encoded() {
    let config = |url: &str| {
        let text = MINIMAL.replace(
            r#""target": {"type": "sqlite", "path": "target.sqlite"}"#,
            &format!(r#""target": {{"type": "postgres", "url": "{url}"}}"#),
        );
        let env = |name: &str| match name {
            "PW" => Some("Zq9@Hu/nt#er?2:Pw %".to_string()),
            "URL" => Some("postgres://u:p%40ss@db/x".to_string()),
            _ => None,
        };
        Config::from_str_at(&text, Path::new("c.json"), &env).unwrap().target.raw.url.unwrap()
    };
    assert_eq!(config("postgres://u:${PW}@db/x"), "postgres://u:Zq9%40Hu%2Fnt%23er%3F2%3APw%20%25@db/x");
    assert_eq!(config("postgres://db/x?password=${PW}"), "postgres://db/x?password=Zq9%40Hu%2Fnt%23er%3F2%3APw%20%25");
    assert_eq!(config("${URL}"), "postgres://u:p%40ss@db/x");
}

/// Unsupported connection types and missing connection keys are clear errors.
#[test]
fn connection_errors() {
    let text = MINIMAL.replace("{\"type\": \"sqlite\", \"path\": \"source.sqlite\"}", "{\"type\": \"mysql\"}");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("source.type") && message.contains("mysql"), "{message}");

    let text = MINIMAL.replace("{\"type\": \"sqlite\", \"path\": \"target.sqlite\"}", "{\"type\": \"postgres\"}");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("needs \"url\""), "{message}");
}

/// Values out of range, duplicate names and unknown `sync_table` entries are rejected.
#[test]
fn semantic_errors() {
    let message = parse(&MINIMAL.replace("\"batch_size\": 5000", "\"batch_size\": 0")).unwrap_err().to_string();
    assert!(message.contains("batch_size") && message.contains("at least 1"), "{message}");

    let message = parse(&MINIMAL.replace("\"name\": \"product-work\"", "\"name\": \"items\"")).unwrap_err().to_string();
    assert!(message.contains("appears twice"), "{message}");

    let text = MINIMAL.replace("\"batch_size\": 5000", "\"sync_table\": [\"product-wrok\"]");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("did you mean `product-work`"), "{message}");

    let text = MINIMAL.replace("\"batch_size\": 5000", "\"run_at_time\": \"25:00\"");
    assert!(parse(&text).unwrap_err().to_string().contains("time of day"));

    for fanout in [0, 1, 65] {
        let text = MINIMAL.replace("\"batch_size\": 5000", &format!("\"binary_search_fanout\": {fanout}"));
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("`binary_search_fanout`") && message.contains("2 (halves"), "{message}");
        // A bad global value is an error even when every table sets its own.
        let text = text
            .replace("\"primary_key_field\": \"id\"", "\"binary_search_fanout\": 4")
            .replace("\"where\":", "\"binary_search_fanout\": 4, \"where\":");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("`binary_search_fanout`") && !message.contains("tables["), "{message}");
        let text =
            MINIMAL.replace("\"modify_id_field\": \"modify_id\"", &format!("\"binary_search_fanout\": {fanout}"));
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("tables[0].binary_search_fanout"), "{message}");
    }
    let text = MINIMAL.replace("\"batch_size\": 5000", "\"binary_search_fanout\": 8");
    let config = parse(&text.replace("\"modify_id_field\": \"modify_id\"", "\"binary_search_fanout\": 3")).unwrap();
    assert_eq!(config.tables[0].settings.binary_search_fanout, Some(3), "a table's own value wins");
    assert_eq!(config.tables[1].settings.binary_search_fanout, Some(8), "the global value applies");
    assert_eq!(parse(MINIMAL).unwrap().tables[0].settings.binary_search_fanout, None);
}

/// Comment keys (`//...`) are ignored and do not change the fingerprint; real changes do.
#[test]
fn comments_and_fingerprint() {
    let a = parse(MINIMAL).unwrap();
    let b = parse(&MINIMAL.replacen('{', "{\"//\": \"a comment\",", 1)).unwrap();
    assert_eq!(a.fingerprint, b.fingerprint);
    let c = parse(&MINIMAL.replace("5000", "4000")).unwrap();
    assert_ne!(a.fingerprint, c.fingerprint);
}

/// The reference config parses and documents every key db-sync accepts, at the top level,
/// in connections and in table entries; so the reference cannot drift from the code.
#[test]
fn reference_config_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/db-sync.reference.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |_: &str| Some("secret".to_string());
    Config::from_str_at(&text, &path, &env).unwrap();
    let json: Json = serde_json::from_str(&text).unwrap();

    // serde lists every accepted key when it meets an unknown one: use that as the truth.
    fn accepted<T: serde::de::DeserializeOwned>(probe: Json) -> Vec<String> {
        let Err(err) = serde_json::from_value::<T>(probe) else { panic!("probe accepted") };
        let err = err.to_string();
        let rest = err.split("expected one of ").nth(1).expect(&err);
        rest.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }
    let probe = serde_json::json!({"zz_probe": 1});
    let top = accepted::<ConfigFile>(probe.clone());
    let conn = accepted::<ConnectionFile>(serde_json::json!({"type": "sqlite", "zz_probe": 1}));
    let table = accepted::<TableFile>(serde_json::json!({"name": "t", "zz_probe": 1}));
    assert!(top.len() > 30 && conn.len() > 10 && table.len() > 15);

    let documented = |object: &Json, key: &str| {
        let map = object.as_object().unwrap();
        map.contains_key(key) && map.contains_key(&format!("// {key}"))
    };
    for key in &top {
        assert!(documented(&json, key), "reference config lacks top-level `{key}` or its `// {key}` comment");
    }
    let connections = [
        &json["source"],
        &json["target"],
        &json["// examples"]["postgres"],
        &json["// examples"]["4d"],
        &json["// examples"]["rest"],
    ];
    for key in &conn {
        assert!(
            connections.iter().any(|c| c.is_object() && documented(c, key)),
            "reference config lacks connection key `{key}` or its comment"
        );
    }
    let tables = json["tables"].as_array().unwrap();
    for key in &table {
        assert!(tables.iter().any(|t| documented(t, key)), "reference config lacks table key `{key}` or its comment");
    }
}

/// A password in the userinfo or in a secret query parameter (any case) is replaced by
/// `***`, and the rest of the URL stays readable.
#[test]
fn redact_url_hides_passwords_and_keeps_the_rest() {
    assert_eq!(redact_url("postgres://sync:SECRET@db.example:5432/erp"), "postgres://sync:***@db.example:5432/erp");
    assert_eq!(
        redact_url("postgres://sync@db.example/erp?sslmode=require&password=SECRET&application_name=x"),
        "postgres://sync@db.example/erp?sslmode=require&password=***&application_name=x"
    );
    for key in ["PASSWORD", "Pass", "pwd", "sslpassword", "SslPassword"] {
        let redacted = redact_url(&format!("postgres://u@h/db?{key}=SECRET&sslmode=disable"));
        assert!(!redacted.contains("SECRET"), "{key}: {redacted}");
        assert!(redacted.contains(&format!("{key}=***")) && redacted.contains("sslmode=disable"), "{redacted}");
    }
    let both = redact_url("postgres://u:SECRET1@h/db?password=SECRET2");
    assert_eq!(both, "postgres://u:***@h/db?password=***");
    // Percent-encoded and reserved characters in the password are hidden too.
    assert_eq!(redact_url("postgres://u:S%40CR%2FET@h/db"), "postgres://u:***@h/db");
    // No secret: unchanged (the description is part of stored watermark identities).
    assert_eq!(redact_url("postgres://postgres@127.0.0.1:5432/t1"), "postgres://postgres@127.0.0.1:5432/t1");
    assert_eq!(redact_url("postgres:///erp?host=/run/postgresql"), "postgres:///erp?host=/run/postgresql");
}

/// A URL that does not parse (or has no authority) shows only its scheme: there is no
/// telling where a secret in it starts or ends.
#[test]
fn redact_url_of_an_invalid_url_shows_nothing_after_the_scheme() {
    for url in ["postgres://u:SEC/RET@h:5432/db", "postgres://u:SECRET@h:notaport/db", "postgres://u:SECRET"] {
        assert_eq!(redact_url(url), "postgres://***", "{url}");
    }
    assert_eq!(redact_url("postgres:u:SECRET@h/db"), "***");
    assert_eq!(redact_url("host=h user=u password=SECRET"), "***");
    assert_eq!(redact_url("postgres://u@h/db#SECRET"), "postgres://u@h/db#***");
}

/// `Debug` of the config structs never shows a password, in a `password` key or in the
/// URL (a `{:?}` in a log line must not leak it).
#[test]
fn debug_output_hides_secrets() {
    let text = r#"{
      "source": {"type": "postgres", "url": "postgres://u:SECRET1@h/db?pwd=SECRET2", "password": "SECRET3"},
      "target": {"type": "sqlite", "path": "target.sqlite"},
      "tables": [{"name": "items"}]
    }"#;
    let config = parse(text).unwrap();
    let file: ConfigFile = serde_json::from_str(text).unwrap();
    for debug in [format!("{config:?}"), format!("{:?}", config.source.raw), format!("{file:?}")] {
        assert!(!debug.contains("SECRET"), "{debug}");
    }
    assert!(format!("{:?}", config.source.raw).contains("postgres://u:***@h/db?pwd=***"));
    assert_eq!(config.source.describe(), "postgres postgres://u:***@h/db?pwd=***");
}

/// A secret of the wrong JSON type is refused without quoting its value.
#[test]
fn wrong_type_of_password_is_not_quoted() {
    let text = r#"{
      "source": {"type": "postgres", "url": "postgres://u@h/db", "password": 918273645},
      "target": {"type": "sqlite", "path": "target.sqlite"},
      "tables": [{"name": "items"}]
    }"#;
    let message = parse(text).unwrap_err().to_string();
    assert!(message.contains("source.password") && !message.contains("918273645"), "{message}");
}

/// `timeout`, `retry_delay` and `reconnect_delay` take numbers (seconds; `retry_delay` in
/// milliseconds, as the manual writes it) or humantime durations; defaults are the
/// manual's; a wrong value names its key.
#[test]
fn resilience_durations() {
    let with = |settings: &str| {
        parse(&MINIMAL.replace(
            r#""target": {"type": "sqlite", "path": "target.sqlite"}"#,
            &format!(r#""target": {{"type": "sqlite", "path": "target.sqlite", {settings}}}"#),
        ))
    };
    let d = |s: &str| humantime::parse_duration(s).unwrap();
    assert_eq!(parse(MINIMAL).unwrap().target.resilience, Resilience::default());
    assert_eq!(Resilience::default().reconnect_delay, d("30s"));
    let config = with(r#""timeout": 20, "retry_count": 5, "retry_delay": 250, "reconnect_delay": 0.1"#).unwrap();
    let r = config.target.resilience;
    assert_eq!((r.timeout, r.retry_count, r.retry_delay, r.reconnect_delay), (d("20s"), 5, d("250ms"), d("100ms")));
    let config = with(r#""timeout": "1h 30m", "retry_delay": "2s", "reconnect_delay": "90s""#).unwrap();
    let r = config.target.resilience;
    assert_eq!((r.timeout, r.retry_delay, r.reconnect_delay), (d("90m"), d("2s"), d("90s")));
    for (settings, key) in [
        (r#""timeout": "soon""#, "target.timeout"),
        (r#""timeout": 0"#, "target.timeout"),
        (r#""retry_delay": -5"#, "target.retry_delay"),
        (r#""reconnect_delay": true"#, "target.reconnect_delay"),
        (r#""timeout": "400 days""#, "target.timeout"),
        (r#""timeout": 1e300"#, "target.timeout"),
        (r#""timeout": "1ms""#, "target.timeout"),
        (r#""retry_delay": "2h""#, "target.retry_delay"),
        (r#""reconnect_delay": "1000 years""#, "target.reconnect_delay"),
        (r#""retry_count": -1"#, "target.retry_count"),
        (r#""retry_count": "3""#, "target.retry_count"),
        (r#""pool_size": 0"#, "target.pool_size"),
        (r#""retry_count": "3""#, "target.retry_count"),
    ] {
        let err = with(settings).unwrap_err().to_string();
        assert!(err.contains(key), "{settings}: {err}");
    }
    // Waiting longer or retrying more does not change what a run plans: a run stopped on
    // a flaky link stays resumable after its timeouts are raised.
    let plain = parse(MINIMAL).unwrap().fingerprint;
    let patient = with(r#""timeout": "10m", "retry_count": 20, "retry_delay": "10s", "reconnect_delay": 60"#);
    assert_eq!(patient.unwrap().fingerprint, plain);
    assert_ne!(with(r#""pool_size": 3"#).unwrap().fingerprint, plain);
}

#[test]
fn closest_prefers_the_same_name_in_another_case() {
    assert_eq!(super::closest("id", &["name", "ID", "idx"]), Some("ID".to_string()));
    assert_eq!(super::closest("nmae", &["name", "ID"]), Some("name".to_string()));
    assert_eq!(super::closest("zzz", &["name", "ID"]), None);
}
