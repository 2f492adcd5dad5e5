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
        &json["// examples"]["4d_sql"],
        &json["// examples"]["rest"],
    ];
    // Each example connection is one a config may hold: none sets a key its backend
    // refuses.
    for (name, example) in json["// examples"].as_object().unwrap() {
        let mut config: Json = serde_json::from_str(MINIMAL).unwrap();
        config["source"] = example.clone();
        if let Err(e) = Config::from_str_at(&config.to_string(), &path, &env) {
            panic!("reference example `{name}` is refused: {e}");
        }
    }
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
    assert_ne!(parse(&MINIMAL.replace("target.sqlite", "other.sqlite")).unwrap().fingerprint, plain);
}

#[test]
fn closest_prefers_the_same_name_in_another_case() {
    assert_eq!(super::closest("id", &["name", "ID", "idx"]), Some("ID".to_string()));
    assert_eq!(super::closest("nmae", &["name", "ID"]), Some("name".to_string()));
    assert_eq!(super::closest("zzz", &["name", "ID"]), None);
}

/// `MINIMAL` with `connection` as its target.
fn with_target(connection: &str) -> Result<Config, ConfigError> {
    parse(&MINIMAL.replace(r#"{"type": "sqlite", "path": "target.sqlite"}"#, connection))
}

const POSTGRES: &str = r#""type": "postgres", "url": "postgres://u@h/db""#;
const FOURD_REST: &str = r#""type": "4d", "url": "http://4d.example:8080""#;
const FOURD_SQL: &str = r#""type": "4d", "host": "4d.example""#;
const SQLITE: &str = r#""type": "sqlite", "path": "target.sqlite""#;

/// No silent connection keys: a key given for a backend where it would have no effect is
/// refused when the config loads, naming the key, the backend and whether it is merely
/// not implemented ("not supported yet") or meaningless there ("does not apply").
#[test]
fn connection_keys_without_effect_are_refused() {
    let not_yet = "is not supported yet for";
    let no_use = "does not apply to";
    for (connection, key, value, backend, why) in [
        (SQLITE, "statement_timeout_secs", "30", "sqlite", not_yet),
        (FOURD_REST, "statement_timeout_secs", "30", "4d REST", not_yet),
        (FOURD_SQL, "statement_timeout_secs", "\"30s\"", "4d SQL", not_yet),
        (SQLITE, "pool_size", "2", "sqlite", not_yet),
        (FOURD_REST, "pool_size", "2", "4d REST", not_yet),
        (FOURD_REST, "database", "\"erp\"", "4d REST", not_yet),
        (FOURD_SQL, "database", "\"erp\"", "4d SQL", not_yet),
        (FOURD_REST, "schema", "\"s\"", "4d REST", not_yet),
        (FOURD_SQL, "schema", "\"s\"", "4d SQL", not_yet),
        (FOURD_SQL, "sslmode", "\"require\"", "4d SQL", not_yet),
        (POSTGRES, "host", "\"db2\"", "postgres", not_yet),
        (POSTGRES, "port", "5433", "postgres", not_yet),
        (POSTGRES, "path", "\"x.sqlite\"", "postgres", no_use),
        (POSTGRES, "protocol", "\"sql\"", "postgres", no_use),
        (POSTGRES, "time_unit", "\"s\"", "postgres", no_use),
        (FOURD_SQL, "time_unit", "\"s\"", "4d SQL", no_use),
        (FOURD_REST, "host", "\"4d.example\"", "4d REST", no_use),
        (FOURD_REST, "port", "19812", "4d REST", no_use),
        (FOURD_REST, "sslmode", "\"require\"", "4d REST", no_use),
        (FOURD_REST, "path", "\"x.sqlite\"", "4d REST", no_use),
        (SQLITE, "url", "\"postgres://h/db\"", "sqlite", no_use),
        (SQLITE, "user", "\"u\"", "sqlite", no_use),
        (SQLITE, "password", "\"p\"", "sqlite", no_use),
        (SQLITE, "database", "\"main\"", "sqlite", no_use),
        (SQLITE, "schema", "\"main\"", "sqlite", no_use),
        (SQLITE, "sslmode", "\"disable\"", "sqlite", no_use),
        (SQLITE, "host", "\"h\"", "sqlite", no_use),
    ] {
        let err = with_target(&format!("{{{connection}, \"{key}\": {value}}}")).unwrap_err().to_string();
        assert!(err.contains(&format!("`target.{key}`")), "{key} for {backend}: {err}");
        assert!(err.contains(&format!("`{key}` {why} {backend}")), "{key} for {backend}: {err}");
    }
    // `url` with 4D's SQL protocol is refused the same way.
    let err = with_target(&format!("{{{FOURD_SQL}, \"protocol\": \"sql\", \"url\": \"http://4d.example\"}}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`url` does not apply to 4d SQL"), "{err}");
}

/// The keys refused elsewhere are accepted where they take effect (so the refusals above
/// are about the backend, not the key).
#[test]
fn connection_keys_are_accepted_where_they_take_effect() {
    for (connection, keys) in [
        (
            POSTGRES,
            r#""user": "u", "password": "p", "database": "erp", "schema": "s", "pool_size": 2,
               "statement_timeout_secs": 30, "sslmode": "require""#,
        ),
        (FOURD_REST, r#""protocol": "rest", "user": "u", "password": "p", "time_unit": "s""#),
        (FOURD_SQL, r#""protocol": "sql", "port": 19813, "user": "u", "password": "p", "pool_size": 3"#),
        (SQLITE, r#""timeout": 5, "retry_count": 1, "retry_delay": 10, "reconnect_delay": 1"#),
    ] {
        if let Err(e) = with_target(&format!("{{{connection}, {keys}}}")) {
            panic!("{connection}: {e}");
        }
    }
    let err = with_target(&format!("{{{POSTGRES}, \"sslmode\": \"required\"}}")).unwrap_err().to_string();
    assert!(err.contains("target.sslmode") && err.contains("`required` is not an sslmode"), "{err}");
}

/// `create_missing_tables` cannot create 4D tables: with a 4D target it is refused rather
/// than ignored; with other targets it is accepted.
#[test]
fn create_missing_tables_is_refused_for_a_4d_target() {
    let text = MINIMAL
        .replace(r#"{"type": "sqlite", "path": "target.sqlite"}"#, &format!("{{{FOURD_REST}}}"))
        .replace("\"batch_size\": 5000", "\"create_missing_tables\": true");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("`create_missing_tables` is not supported yet for a 4d target"), "{err}");
    let text = MINIMAL.replace("\"batch_size\": 5000", "\"create_missing_tables\": true");
    assert!(parse(&text).unwrap().run.create_missing_tables);
}

/// `statement_timeout_secs` takes seconds or a humantime duration, meaning the same; 0
/// lifts the limit; values PostgreSQL cannot hold are refused naming the key.
#[test]
fn statement_timeout_takes_seconds_or_a_duration() {
    let timeout = |value: &str| {
        with_target(&format!("{{{POSTGRES}, \"statement_timeout_secs\": {value}}}")).map(|c| c.target.statement_timeout)
    };
    let five_minutes = Some(Duration::from_secs(300));
    assert_eq!(timeout("300").unwrap(), five_minutes);
    assert_eq!(timeout("\"5m\"").unwrap(), five_minutes);
    assert_eq!(timeout("\"4m 60s\"").unwrap(), five_minutes);
    assert_eq!(timeout("1.5").unwrap(), Some(Duration::from_millis(1500)));
    assert_eq!(timeout("0").unwrap(), Some(Duration::ZERO));
    assert_eq!(with_target(&format!("{{{POSTGRES}}}")).unwrap().target.statement_timeout, None);
    for bad in ["\"soon\"", "-1", "\"30 days\"", "\"10us\"", "true"] {
        let err = timeout(bad).unwrap_err().to_string();
        assert!(err.contains("target.statement_timeout_secs"), "{bad}: {err}");
    }
}

/// A table's own `batch_size` and `delete_batch_size` apply when a side is 4D too (they
/// override the 4D defaults rather than being ignored); other tables keep the 4D keys.
#[test]
fn table_batch_sizes_override_the_4d_ones() {
    let text = MINIMAL
        .replace("\"batch_size\": 5000", "\"batch_size\": 5000, \"batch_size_4d\": 700, \"delete_batch_size_4d\": 300")
        .replace("\"primary_key_field\": \"id\"", "\"batch_size\": 40, \"delete_batch_size\": 20");
    let config = parse(&text).unwrap();
    let (own, other) = (&config.tables[0].settings, &config.tables[1].settings);
    assert_eq!((own.rows_per_batch(true), own.rows_per_batch(false)), (40, 40));
    assert_eq!((own.keys_per_delete(true), own.keys_per_delete(false)), (20, 20));
    assert_eq!((other.rows_per_batch(true), other.rows_per_batch(false)), (700, 5000));
    assert_eq!((other.keys_per_delete(true), other.keys_per_delete(false)), (300, 1000));
}

/// The daemon's keys, the debug switches and keep_runs do not change the fingerprint (an
/// unfinished run stays resumable as planned); a table key does.
#[test]
fn daemon_and_debug_keys_leave_the_fingerprint() {
    let base = parse(MINIMAL).unwrap().fingerprint;
    for extra in [
        r#""sleep_seconds": "1h","#,
        r#""run_at_time": "02:00", "max_sleep_chunk_seconds": 60, "metrics_listen": "127.0.0.1:9187","#,
        r#""show_sql": true, "debug_sql": true, "show_save_sql": true, "debug_connection_change": true, "keep_runs": 5,"#,
    ] {
        let text = MINIMAL.replacen('{', &format!("{{ {extra}"), 1);
        assert_eq!(parse(&text).unwrap().fingerprint, base, "{extra}");
    }
    let text = MINIMAL.replace("\"batch_size\": 5000", "\"batch_size\": 4000");
    assert_ne!(parse(&text).unwrap().fingerprint, base);
}

/// Schedule values: durations as numbers, numbers in text and humantime text; run_at_time
/// strictly HH:MM; clear refusals.
#[test]
fn schedule_values() {
    use crate::schedule::Schedule;
    let with = |extra: &str| parse(&MINIMAL.replacen('{', &format!("{{ {extra},"), 1));
    for value in ["5400", "\"5400\"", "\"1h 30m\"", "\"90m\""] {
        let config = with(&format!("\"sleep_seconds\": {value}")).unwrap();
        assert!(matches!(config.run.schedule, Schedule::Every(d) if d.as_secs() == 5400), "{value}");
    }
    for (value, says) in [
        ("-5", "negative"),
        ("0", "at least 1 second"),
        ("1e30", "longer than the longest allowed"),
        ("\"soon\"", "is not a duration"),
    ] {
        let err = with(&format!("\"sleep_seconds\": {value}")).unwrap_err().to_string();
        assert!(err.contains("sleep_seconds") && err.contains(says), "{value}: {err}");
    }
    assert!(matches!(
        with("\"run_at_time\": \"02:05\"").unwrap().run.schedule,
        Schedule::Daily { hour: 2, minute: 5, .. }
    ));
    for value in ["2:5", "+2:00", "24:00", "12:60", "02:00:30", " 02:00"] {
        let err = with(&format!("\"run_at_time\": \"{value}\"")).unwrap_err().to_string();
        assert!(err.contains("run_at_time"), "{value}: {err}");
    }
    let err = with("\"sleep_seconds\": 60, \"run_at_time\": \"02:00\"").unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");
    let err = with("\"metrics_listen\": \"localhost\"").unwrap_err().to_string();
    assert!(err.contains("metrics_listen"), "{err}");
}
