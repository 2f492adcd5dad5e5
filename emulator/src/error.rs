//! Error answers: `{"__ERROR": [{"message", "componentSignature", "errCode"}]}`
//! (`docs/REST/$method.md`, `docs/REST/$atomic_$atonce.md`).
//!
//! 4D documents only some codes. Codes below 2000 are 4D's own (componentSignature `dbmg`); codes
//! from 9001 on are the emulator's own (componentSignature `emu`) for situations whose 4D code is
//! not documented. emulator/README.md lists them.

use serde_json::{Value, json};

/// Cannot find the attribute (with 1804 after it), as Qodly's REST pages show (docs/4d-rest.md §5).
pub const UNKNOWN_ATTRIBUTE: i64 = 1500;
pub const UNKNOWN_ATTRIBUTE_2: i64 = 1804;
/// Stamp has changed / cannot save record / entity cannot be saved (`docs/REST/$method.md`).
pub const STAMP_CHANGED: i64 = 1263;
pub const CANNOT_SAVE_RECORD: i64 = 1046;
pub const CANNOT_SAVE_ENTITY: i64 = 1517;
/// Cannot find entity with the key (the `$atomic` example, docs/4d-rest.md §4.1).
pub const ENTITY_NOT_FOUND: i64 = 1542;
/// Validation failed on a value / on the entity (`docs/REST/$atomic_$atonce.md`).
pub const VALIDATION_VALUE: i64 = 1569;
pub const VALIDATION_ENTITY: i64 = 1570;

/// Emulator: `$filter` or `$params` cannot be parsed or used (HTTP 500).
pub const BAD_FILTER: i64 = 9001;
/// Emulator: `$orderby` cannot be parsed (HTTP 500).
pub const BAD_ORDERBY: i64 = 9002;
/// Emulator: another query parameter is unusable (`$top`, `$skip`, `$compute`, `$method`) (HTTP 500).
pub const BAD_PARAMETER: i64 = 9003;
/// Emulator: the request body is not the JSON expected (HTTP 500).
pub const BAD_BODY: i64 = 9004;
/// Emulator: the dataclass does not exist or is not exposed (HTTP 404).
pub const UNKNOWN_DATACLASS: i64 = 9005;
/// Emulator: a data request without an authenticated session (HTTP 401).
pub const NOT_AUTHENTICATED: i64 = 9006;
/// Emulator: no free licence for a new session (HTTP 402).
pub const NO_LICENCE: i64 = 9007;
/// Emulator: an answer forced by an injected fault.
pub const INJECTED: i64 = 9008;
/// Emulator: a create whose primary key already exists (entity `__STATUS` 4).
pub const DUPLICATE_KEY: i64 = 9009;
/// Emulator: a resource path the emulator does not know (HTTP 404).
pub const UNKNOWN_RESOURCE: i64 = 9010;
/// Emulator: SQLite failed (HTTP 500).
pub const DATABASE: i64 = 9011;
/// Emulator: the entity is locked (entity `__STATUS` 3).
pub const LOCKED: i64 = 9012;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

pub fn item(message: impl Into<String>, code: i64) -> Value {
    let component = if code >= 9000 { "emu" } else { "dbmg" };
    json!({"message": message.into(), "componentSignature": component, "errCode": code})
}

impl ApiError {
    pub fn new(status: u16, items: Vec<Value>) -> Self {
        ApiError { status, body: json!({ "__ERROR": items }) }
    }

    pub fn one(status: u16, code: i64, message: impl Into<String>) -> Self {
        Self::new(status, vec![item(message, code)])
    }

    pub fn unknown_attribute(attr: &str, dataclass: &str) -> Self {
        Self::new(
            500,
            vec![
                item(
                    format!("Cannot find the attribute \"{attr}\" in the \"{dataclass}\" dataclass"),
                    UNKNOWN_ATTRIBUTE,
                ),
                item(format!("The attribute \"{attr}\" is unknown or not exposed"), UNKNOWN_ATTRIBUTE_2),
            ],
        )
    }

    pub fn db(e: rusqlite::Error) -> Self {
        Self::one(500, DATABASE, format!("SQLite: {e}"))
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::db(e)
    }
}
