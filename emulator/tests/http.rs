//! HTTP round trips against a running emulator, with a plain `TcpStream` client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fourd_emulator::{Emulator, Fault, FaultKind, Settings};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.split(';').next().unwrap().to_string())
            .collect()
    }
}

struct Client {
    port: u16,
    cookies: Vec<String>,
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Client {
    fn new(emu: &Emulator) -> Client {
        Client { port: emu.port(), cookies: Vec::new() }
    }

    /// One request on its own connection; `None` when the server closed without answering.
    fn try_send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Option<Resp> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !self.cookies.is_empty() {
            req.push_str(&format!("Cookie: {}\r\n", self.cookies.join("; ")));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        if raw.is_empty() {
            return None;
        }
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let r = Resp { status, headers, body: body.to_string() };
        let new = r.cookies();
        if !new.is_empty() {
            self.cookies = new;
        }
        Some(r)
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        self.try_send(method, path, headers, body).expect("the server closed the connection")
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, &[], "")
    }

    fn post(&mut self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, &[], &body.to_string())
    }

    fn login(&mut self) -> Resp {
        self.send("POST", "/rest/$directory/login", &[("username-4D", "sync"), ("password-4D", "secret")], "")
    }

    /// `GET /rest/{T}/{attrs}/?$filter="…"&$params='…'` plus extra parameters.
    fn query(&mut self, path: &str, filter: &str, params: &Value, extra: &str) -> Resp {
        let p = format!(
            "/rest/{path}?$filter={}&$params={}{extra}",
            enc(&format!("\"{filter}\"")),
            enc(&format!("'{params}'"))
        );
        self.get(&p)
    }
}

fn db_with(sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.sqlite");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(sql).unwrap();
    (dir, path)
}

fn orders(n: i64) -> String {
    let mut sql = String::from(
        "CREATE TABLE Orders (ID long PRIMARY KEY, name string, total number, day date, paid bool, big long64, info object, wait duration);
         BEGIN;",
    );
    for i in 1..=n {
        sql.push_str(&format!("INSERT INTO Orders (ID, name, total, paid) VALUES ({i}, 'n{i}', {i}.5, {});", i % 2));
    }
    sql.push_str("COMMIT;");
    sql
}

#[test]
fn login_cookies_and_401_without_a_session() {
    let (_d, db) = db_with(&orders(3));
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let mut c = Client::new(&emu);

    let r = c.get("/rest/Orders");
    assert_eq!(r.status, 401);
    assert!(r.json()["__ERROR"][0]["errCode"].is_i64());
    // Guests may read the catalog.
    let r = c.get("/rest/$catalog/Orders");
    assert_eq!(r.status, 200);
    let cat = r.json();
    assert_eq!(cat["key"], json!([{"name": "ID"}]));
    assert_eq!(cat["attributes"][0]["identifying"], json!(true));
    assert_eq!(cat["attributes"][3]["type"], json!("date"));
    assert!(cat["attributes"].as_array().unwrap().iter().all(|a| a["name"] != "__STAMP"));
    assert_eq!(c.get("/rest/$catalog/Nope").status, 404);

    let r = c.send("POST", "/rest/$directory/login", &[("username-4D", "sync"), ("password-4D", "wrong")], "");
    assert_eq!((r.status, r.json()), (401, json!({"result": false})));
    let r = c.login();
    assert_eq!((r.status, r.json()), (200, json!({"result": true})));
    let cookies = r.cookies();
    assert_eq!(cookies.len(), 2);
    let (a, b) = (cookies[0].split_once('=').unwrap(), cookies[1].split_once('=').unwrap());
    assert_eq!((a.0, b.0), ("4DSID_DbSyncTest", "WASID4D"));
    assert_eq!(a.1, b.1);
    assert_eq!(a.1.len(), 32);

    let r = c.get("/rest/Orders");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["__COUNT"], json!(3));
    assert_eq!(c.get("/rest/Nope").status, 404);

    assert_eq!(c.get("/rest/$directory/logout").json(), json!({"result": true}));
    assert_eq!(c.get("/rest/Orders").status, 401);
    let st = emu.stats();
    assert_eq!((st.logins, st.logouts, st.open_sessions), (1, 1, 0));
    assert_eq!(st.requests_by_kind["read"], 4);
}

#[test]
fn licence_limit_idle_expiry_and_guest_sessions() {
    let (_d, db) = db_with(&orders(3));
    let settings = Settings { max_sessions: 2, session_idle: Duration::from_millis(700), ..Settings::default() };
    let emu = Emulator::start(&db, settings).unwrap();
    let mut clients: Vec<Client> = (0..3).map(|_| Client::new(&emu)).collect();
    assert_eq!(clients[0].login().status, 200);
    assert_eq!(clients[1].login().status, 200);
    let r = clients[2].login();
    assert_eq!(r.status, 402);
    assert!(r.json()["__ERROR"].is_array());
    let st = emu.stats();
    assert_eq!((st.open_sessions, st.peak_sessions, st.refused_402), (2, 2, 1));

    // Logging in again in an open session takes no new licence.
    assert_eq!(clients[0].login().status, 200);
    assert_eq!(emu.stats().open_sessions, 2);

    emu.expire_sessions();
    assert_eq!(clients[0].get("/rest/Orders").status, 401);
    assert_eq!(clients[2].login().status, 200);

    // Idle expiry.
    assert_eq!(clients[2].get("/rest/Orders").status, 200);
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(clients[2].get("/rest/Orders").status, 401);
    assert_eq!(emu.stats().open_sessions, 0);
    drop(emu);

    // Without force login a request opens a guest session that takes a licence.
    let settings = Settings { force_login: false, max_sessions: 1, ..Settings::default() };
    let emu = Emulator::start(&db, settings).unwrap();
    let mut a = Client::new(&emu);
    let r = a.get("/rest/Orders");
    assert_eq!(r.status, 200);
    assert_eq!(r.cookies().len(), 2);
    assert_eq!(a.get("/rest/Orders").status, 200);
    assert_eq!(Client::new(&emu).get("/rest/Orders").status, 402);
    assert_eq!(emu.stats().open_sessions, 1);
}

#[test]
fn paging_counts_and_the_server_cap() {
    let (_d, db) = db_with(&orders(250));
    let emu = Emulator::start(&db, Settings { max_top: Some(100), ..Settings::default() }).unwrap();
    let mut c = Client::new(&emu);
    c.login();

    let r =
        c.query("Orders/ID/", "ID > :1 AND ID <= :2", &json!([20, 220]), "&$orderby=%22ID%20ASC%22&$top=150").json();
    assert_eq!((r["__COUNT"].as_i64(), r["__SENT"].as_i64(), r["__FIRST"].as_i64()), (Some(200), Some(100), Some(0)));
    let ents = r["__ENTITIES"].as_array().unwrap();
    assert_eq!(ents[0], json!({"__KEY": "21", "__TIMESTAMP": ents[0]["__TIMESTAMP"], "__STAMP": 1, "ID": 21}));
    assert_eq!(ents[99]["__KEY"], json!("120"));

    // key_at: the n-th key of a range.
    let r = c.query("Orders/ID/", "ID > :1", &json!([200]), "&$orderby=%22ID%20DESC%22&$skip=3&$top=1").json();
    assert_eq!(r["__ENTITIES"][0]["ID"], json!(247));
    assert_eq!(r["__FIRST"], json!(3));
    let r = c.query("Orders/ID/", "ID > :1", &json!([200]), "&$skip=60&$top=1").json();
    assert_eq!((r["__COUNT"].as_i64(), r["__SENT"].as_i64()), (Some(50), Some(0)));

    // Default page without $top.
    let r = c.get("/rest/Orders").json();
    assert_eq!((r["__COUNT"].as_i64(), r["__SENT"].as_i64()), (Some(250), Some(100)));
    let e = &r["__ENTITIES"][0];
    assert_eq!(e["total"], json!(1.5));
    assert_eq!(e["paid"], json!(true));
    assert_eq!(e["day"], json!("0!0!0"));
    assert_eq!(e["info"], Value::Null);

    // One entity, an attribute list, a compute.
    let r = c.get("/rest/Orders(7)/name,paid").json();
    assert_eq!(r["name"], json!("n7"));
    assert!(r.get("total").is_none());
    assert_eq!(c.get("/rest/Orders(999)").status, 404);
    let r = c.query("Orders/ID/", "ID <= :1", &json!([10]), "&$compute=%24all").json();
    assert_eq!(r, json!({"ID": {"count": 10, "sum": 55, "average": 5.5, "min": 1, "max": 10}}));
    assert_eq!(c.get("/rest/Orders/ID/?$compute=max").json(), json!(250));
    assert_eq!(c.get("/rest/Orders/name/?$compute=count").json(), json!(250));
    assert_eq!(c.get("/rest/Orders/name/?$compute=sum").status, 500);
}

#[test]
fn filters_fold_text_and_bind_values() {
    let sql = "CREATE TABLE People (ID long PRIMARY KEY, name string, code uuid);
        INSERT INTO People VALUES (1, 'Émile', '0123456789ABCDEF0123456789ABCDEF'), (2, 'emile', NULL), (3, 'Zoé', NULL),
          (4, 'bob', NULL), (5, 'O''Reilly', NULL), (6, 'jo@x', NULL), (7, 'John', NULL), (8, 'abc', NULL), (9, 'ABC', NULL);";
    let (_d, db) = db_with(sql);
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let mut c = Client::new(&emu);
    c.login();
    let keys = |r: &Resp| -> Vec<String> {
        r.json()["__ENTITIES"].as_array().unwrap().iter().map(|e| e["__KEY"].as_str().unwrap().to_string()).collect()
    };
    let r = c.query("People/ID/", "name = :1", &json!(["EMILE"]), "&$orderby=%22ID%22");
    assert_eq!(keys(&r), ["1", "2"]);
    let r = c.query("People/ID/", "name = :1", &json!(["jo@"]), "&$orderby=%22ID%22");
    assert_eq!(keys(&r), ["6", "7"]);
    let r = c.query("People/ID/", "name === :1", &json!(["jo@"]), "");
    assert_eq!(r.json()["__COUNT"], json!(0));
    let r = c.query("People/ID/", "name === :1", &json!(["jo@x"]), "");
    assert_eq!(keys(&r), ["6"]);
    let r = c.query("People/ID/", "name = :1", &json!(["o'reilly"]), "");
    assert_eq!(keys(&r), ["5"]);
    // \u0027 inside the JSON params, as the docs escape quotes.
    let p = format!("/rest/People/ID/?$filter={}&$params={}", enc("\"name=:1\""), enc(r#"'["O\u0027REILLY"]'"#));
    assert_eq!(keys(&c.get(&p)), ["5"]);
    let r =
        c.query("People/ID/", "ID IN :1 AND NOT (name begin :2)", &json!([[1, 3, 4, 8], "E"]), "&$orderby=%22ID%22");
    assert_eq!(keys(&r), ["3", "4", "8"]);
    let r = c.query("People/ID/", "name IN :1", &json!([["abc", "zoe"]]), "&$orderby=%22ID%22");
    assert_eq!(keys(&r), ["3", "8", "9"]);
    let r = c.query("People/ID/", "code = :1", &json!(["0123456789abcdef0123456789abcdef"]), "");
    assert_eq!(keys(&r), ["1"]);
    let r = c.query("People/ID/", "code = null", &json!([]), "");
    assert_eq!(r.json()["__COUNT"], json!(8));
    // 'ABC' folds to 'abc', so EXCEPT removes both.
    let r = c.query("People/ID/", "ID > 6 | ID < 2 EXCEPT name = 'abc'", &json!([]), "&$orderby=%22ID%22");
    assert_eq!(keys(&r), ["1", "7"]);

    // Folded order, ties broken by bytes.
    let r = c.get("/rest/People/name/?$orderby=%22name%20ASC%22");
    assert_eq!(keys(&r), ["9", "8", "4", "2", "1", "6", "7", "5", "3"]);

    // Errors.
    let r = c.query("People/ID/", "nope = :1", &json!([1]), "");
    assert_eq!(r.status, 500);
    let codes: Vec<i64> =
        r.json()["__ERROR"].as_array().unwrap().iter().map(|e| e["errCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, [1500, 1804]);
    let r = c.query("People/ID/", "ID >", &json!([]), "");
    assert_eq!((r.status, r.json()["__ERROR"][0]["errCode"].as_i64()), (500, Some(9001)));
    let r = c.get("/rest/People/?$orderby=%22ID%20UP%22");
    assert_eq!(r.json()["__ERROR"][0]["errCode"], json!(9002));
    drop(emu);

    let emu = Emulator::start(&db, Settings { byte_order: true, ..Settings::default() }).unwrap();
    let mut c = Client::new(&emu);
    c.login();
    let r = c.query("People/ID/", "name = :1", &json!(["emile"]), "");
    assert_eq!(keys(&r), ["2"]);
    let r = c.get("/rest/People/name/?$orderby=%22name%22");
    assert_eq!(keys(&r), ["9", "7", "5", "3", "8", "4", "2", "6", "1"]);
}

#[test]
fn updates_creates_stamps_and_atomic_rollback() {
    let (_d, db) = db_with(&orders(3));
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let mut c = Client::new(&emu);
    c.login();

    // Update by key with the right stamp; the stamp grows.
    let r = c.post(
        "/rest/Orders?$method=update",
        &json!({"__KEY": "1", "__STAMP": 1, "name": "one", "day": "3!7!2014", "big": 9007199254740993u64}),
    );
    let e = r.json();
    assert_eq!((e["__STAMP"].as_i64(), e["name"].as_str()), (Some(2), Some("one")));
    assert_eq!(e["day"], json!("3!7!2014"));
    assert_eq!(e["uri"], json!("/rest/Orders(1)"));
    assert!(r.body.contains("9007199254740993"));
    // Without a stamp, and with other date forms.
    let e = c.post("/rest/Orders?$method=update", &json!({"__KEY": "1", "day": "2014-07-04T00:00:00Z"})).json();
    assert_eq!((e["__STAMP"].as_i64(), e["day"].as_str()), (Some(3), Some("4!7!2014")));
    let e = c.post("/rest/Orders?$method=update", &json!({"__KEY": "1", "day": "0!0!0", "wait": 1500})).json();
    assert_eq!((e["day"].as_str(), e["wait"].as_i64()), (Some("0!0!0"), Some(1500)));

    // Stale stamp.
    let e = c.post("/rest/Orders?$method=update", &json!({"__KEY": "1", "__STAMP": 1, "name": "x"})).json();
    assert_eq!(e["__STATUS"]["status"], json!(2));
    let codes: Vec<i64> = e["__ERROR"].as_array().unwrap().iter().map(|e| e["errCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, [1263, 1046, 1517]);
    assert_eq!(e["name"], json!("one"));
    // Unknown key, wrong type.
    let e = c.post("/rest/Orders?$method=update", &json!({"__KEY": "99", "name": "x"})).json();
    assert_eq!(e["__ERROR"][0]["errCode"], json!(1542));
    let e = c.post("/rest/Orders?$method=update", &json!({"__KEY": "2", "paid": "yes"})).json();
    assert_eq!(e["__ERROR"][0]["errCode"], json!(1569));
    assert_eq!(e["__ERROR"][1]["errCode"], json!(1570));

    // Creates: with the key, without it, and a duplicate.
    let r = c
        .post(
            "/rest/Orders?$method=update",
            &json!([{"ID": 10, "name": "ten"}, {"name": "auto"}, {"ID": 2, "name": "dup"}]),
        )
        .json();
    let ents = r["__ENTITIES"].as_array().unwrap();
    assert_eq!((ents[0]["__KEY"].as_str(), ents[0]["__STAMP"].as_i64()), (Some("10"), Some(1)));
    assert_eq!(ents[1]["__KEY"], json!("11"));
    assert_eq!(ents[2]["__STATUS"]["status"], json!(4));
    assert!(ents[2]["__ERROR"].is_array());
    assert_eq!(c.get("/rest/Orders/?$top=0").json()["__COUNT"], json!(5));

    // $atomic: one failure rolls back all.
    let r = c.post(
        "/rest/Orders?$method=update&$atomic=true",
        &json!([{"__KEY": "2", "name": "changed"}, {"ID": 20, "name": "new"}, {"__KEY": "3", "total": "NaN"}]),
    );
    assert_eq!(r.status, 200);
    let ents = r.json()["__ENTITIES"].as_array().unwrap().clone();
    assert!(ents[0].get("__ERROR").is_none());
    assert_eq!(ents[0]["__STAMP"], json!(1));
    assert!(ents[2]["__ERROR"].is_array());
    assert_eq!(c.get("/rest/Orders(2)").json()["name"], json!("n2"));
    assert_eq!(c.get("/rest/Orders(2)").json()["__STAMP"], json!(1));
    assert_eq!(c.get("/rest/Orders(20)").status, 404);
    // The same batch without $atomic saves what it can.
    let r = c
        .post(
            "/rest/Orders?$method=update",
            &json!([{"__KEY": "2", "name": "changed"}, {"__KEY": "3", "total": "NaN"}]),
        )
        .json();
    assert!(r["__ENTITIES"][1]["__ERROR"].is_array());
    assert_eq!(c.get("/rest/Orders(2)").json()["name"], json!("changed"));

    // A locked entity.
    emu.lock_entity("Orders", "3");
    let e = c.post("/rest/Orders?$method=update", &json!({"__KEY": "3", "name": "x"})).json();
    assert_eq!(e["__STATUS"]["status"], json!(3));
    emu.unlock_all();
    assert!(c.post("/rest/Orders?$method=update", &json!({"__KEY": "3", "name": "x"})).json().get("__ERROR").is_none());
    assert_eq!(c.post("/rest/Orders?$method=update", &json!("x")).status, 500);
}

#[test]
fn deletes_by_key_and_filter_and_locks() {
    let (_d, db) = db_with(&orders(10));
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let mut c = Client::new(&emu);
    c.login();
    assert_eq!(c.post("/rest/Orders(1)/?$method=delete", &json!(null)).json(), json!({"ok": true}));
    let p = format!("/rest/Orders/?$filter={}&$params={}&$method=delete", enc("\"ID IN :1\""), enc("'[[2,3,42]]'"));
    assert_eq!(c.post(&p, &json!(null)).json(), json!({"ok": true}));
    assert_eq!(c.get("/rest/Orders/?$top=0").json()["__COUNT"], json!(7));
    let r = c.post(&p, &json!(null));
    assert_eq!(r.json(), json!({"ok": true}));

    emu.lock_entity("Orders", "6");
    let p = format!("/rest/Orders/?$filter={}&$params={}&$method=delete", enc("\"ID >= :1\""), enc("'[4]'"));
    let r = c.post(&p, &json!(null)).json();
    assert_eq!(r["__STATUS"]["status"], json!(3));
    assert!(r["__ERROR"].is_array() && r.get("ok").is_none());
    // Entities before the locked one went; the rest stayed.
    let left = c.get("/rest/Orders/ID/").json();
    let keys: Vec<&str> = left["__ENTITIES"].as_array().unwrap().iter().map(|e| e["__KEY"].as_str().unwrap()).collect();
    assert_eq!(keys, ["6", "7", "8", "9", "10"]);
    assert_eq!(emu.stats().requests_by_kind["delete"], 4);
}

#[test]
fn global_stamp_upkeep() {
    let sql = "CREATE TABLE Items (ID long PRIMARY KEY, name string, __GlobalStamp long64);
               INSERT INTO Items (ID, name) VALUES (1, 'old');";
    let (_d, db) = db_with(sql);
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let mut c = Client::new(&emu);
    c.login();
    let cat = c.get("/rest/$catalog/$all").json();
    let names: Vec<&str> = cat["dataClasses"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Items", "__DeletedRecords"]);

    // Rows older than tracking hold null.
    let r = c.get("/rest/Items(1)").json();
    assert_eq!(r["__GlobalStamp"], Value::Null);
    let g0 = c.get("/rest/Items").json()["__GlobalStamp"].as_i64().unwrap();

    let e = c.post("/rest/Items?$method=update", &json!({"ID": 2, "name": "new"})).json();
    assert_eq!(e["__GlobalStamp"].as_i64(), Some(g0));
    let e = c.post("/rest/Items?$method=update", &json!({"__KEY": "1", "name": "changed"})).json();
    assert_eq!((e["__GlobalStamp"].as_i64(), e["__STAMP"].as_i64()), (Some(g0 + 1), Some(2)));

    // A write straight into the SQLite file gets stamps too.
    let direct = rusqlite::Connection::open(&db).unwrap();
    direct.busy_timeout(Duration::from_secs(5)).unwrap();
    direct.execute("UPDATE Items SET name = 'direct' WHERE ID = 2", []).unwrap();
    direct.execute("INSERT INTO Items (ID, name) VALUES (3, 'inserted')", []).unwrap();
    let r =
        c.query("Items/ID,__GlobalStamp/", "__GlobalStamp > :1", &json!([g0]), "&$orderby=%22__GlobalStamp%22").json();
    let got: Vec<(String, i64)> = r["__ENTITIES"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["__KEY"].as_str().unwrap().to_string(), e["__GlobalStamp"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, [("1".to_string(), g0 + 1), ("2".to_string(), g0 + 2), ("3".to_string(), g0 + 3)]);
    assert_eq!(c.get("/rest/Items/__GlobalStamp/?$compute=max").json(), json!(g0 + 3));
    assert_eq!(c.get("/rest/Items(2)").json()["__STAMP"], json!(2));

    // Deletes leave a __DeletedRecords row with the stamp.
    let p = format!("/rest/Items/?$filter={}&$params={}&$method=delete", enc("\"ID = :1\""), enc("'[3]'"));
    assert_eq!(c.post(&p, &json!(null)).json(), json!({"ok": true}));
    direct.execute("DELETE FROM Items WHERE ID = 1", []).unwrap();
    let r = c
        .query(
            "__DeletedRecords/__PrimaryKey,__Stamp,__TableName/",
            "__Stamp > :1 AND __TableName === :2",
            &json!([g0, "Items"]),
            "&$orderby=%22__Stamp%22",
        )
        .json();
    let ents = r["__ENTITIES"].as_array().unwrap();
    assert_eq!(ents.len(), 2);
    assert_eq!((ents[0]["__PrimaryKey"].as_str(), ents[0]["__Stamp"].as_i64()), (Some("3"), Some(g0 + 4)));
    assert_eq!((ents[1]["__PrimaryKey"].as_str(), ents[1]["__Stamp"].as_i64()), (Some("1"), Some(g0 + 5)));
    assert_eq!(c.get("/rest/Items").json()["__GlobalStamp"], json!(g0 + 6));
}

#[test]
fn injected_faults() {
    let (_d, db) = db_with(&orders(3));
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let mut c = Client::new(&emu);
    c.login();

    emu.inject(Fault { path_contains: "/rest/Orders".into(), kind: FaultKind::Status(402), skip: 1, times: 1 });
    assert_eq!(c.get("/rest/Orders").status, 200);
    let r = c.get("/rest/Orders");
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["__ERROR"][0]["errCode"], json!(9008));
    assert_eq!(c.get("/rest/Orders").status, 200);

    emu.inject(Fault::once("$top=7", FaultKind::EmptyStatus(500)));
    let r = c.get("/rest/Orders?$top=7");
    assert_eq!((r.status, r.body.as_str()), (500, ""));

    emu.inject(Fault::once("ID > :1", FaultKind::Drop));
    let p = format!("/rest/Orders?$filter={}&$params={}", enc("\"ID > :1\""), enc("'[0]'"));
    assert!(c.try_send("GET", &p, &[], "").is_none());
    assert_eq!(c.query("Orders", "ID > :1", &json!([0]), "").json()["__COUNT"], json!(3));

    emu.inject(Fault::once("", FaultKind::Delay(Duration::from_millis(300))));
    let t = std::time::Instant::now();
    assert_eq!(c.get("/rest/Orders").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    emu.inject(Fault::once("Orders", FaultKind::ExpireSession));
    assert_eq!(c.get("/rest/Orders").status, 401);
    assert_eq!(c.login().status, 200);
    assert_eq!(c.get("/rest/Orders").status, 200);
    assert!(emu.stats().bytes_out > 0);
    emu.reset_stats();
    assert_eq!(emu.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_inside_a_tokio_test() {
    let (_d, db) = db_with(&orders(2));
    let emu = Emulator::start(&db, Settings::default()).unwrap();
    let port = emu.port();
    let count = tokio::task::spawn_blocking(move || {
        let mut c = Client { port, cookies: Vec::new() };
        c.login();
        c.get("/rest/Orders").json()["__COUNT"].clone()
    })
    .await
    .unwrap();
    assert_eq!(count, json!(2));
    drop(emu);
}
