//! The server side of 4D's SQL network protocol (db-sync's `docs/4d-sql.md`; section numbers
//! below are its sections): requests from bytes, replies to bytes. Written apart from
//! db-sync's client codec, so each checks the other.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// A request: the command id (echoed verbatim), the command word (upper case), headers by
/// upper-case name with `-BASE64` values decoded, and the parameters that followed.
#[derive(Debug)]
pub struct Request {
    pub id: String,
    pub command: String,
    pub headers: HashMap<String, String>,
    pub params: Vec<Val>,
}

/// A value as the protocol carries it (§6.2).
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Timestamp { year: i16, month: u8, day: u8, millis: u32 },
    Duration(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A request that cannot be read: the protocol error code (§7.2) and text. After one of
/// these the stream cannot be trusted and the server closes the connection.
#[derive(Debug)]
pub struct BadRequest {
    pub id: String,
    pub code: i64,
    pub message: String,
}

const MAX_HEADER: usize = 64 * 1024;
const MAX_VALUE: usize = 256 * 1024 * 1024;

/// Reads one request; `Ok(None)` at a clean end of stream.
pub async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Request>, BadRequest> {
    let mut block = Vec::new();
    let bad = |id: &str, code, message: String| BadRequest { id: id.to_string(), code, message };
    loop {
        let before = block.len();
        let n = r.read_until(b'\n', &mut block).await.map_err(|e| bad("000", 3008, e.to_string()))?;
        if n == 0 {
            return if block.is_empty() { Ok(None) } else { Err(bad("000", 3008, "the request ends early".into())) };
        }
        if block.len() > MAX_HEADER {
            return Err(bad("000", 3014, "header block too long".into()));
        }
        if block[before..] == *b"\r\n" && before > 0 {
            break;
        }
    }
    let text = String::from_utf8(block).map_err(|_| bad("000", 3000, "the header is not text".into()))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").trim();
    let (id, command) = first.split_once(' ').ok_or_else(|| bad("000", 3001, format!("cannot read `{first}`")))?;
    let mut headers = HashMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| bad(id, 3000, format!("cannot read header `{line}`")))?;
        let (name, value) = (name.trim().to_ascii_uppercase(), value.trim());
        match name.strip_suffix("-BASE64") {
            Some(plain) => {
                let decoded = BASE64
                    .decode(value)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad(id, 3010, format!("{name} is not base64 of UTF-8")))?;
                headers.insert(plain.to_string(), decoded);
            }
            None => {
                headers.insert(name, value.to_string());
            }
        }
    }
    let mut params = Vec::new();
    if let Some(types) = headers.get("PARAMETER-TYPES") {
        for t in types.split_whitespace() {
            params.push(read_param(r, t).await.map_err(|(code, message)| bad(id, code, message))?);
        }
    }
    Ok(Some(Request { id: id.to_string(), command: command.trim().to_ascii_uppercase(), headers, params }))
}

async fn read_param<R: AsyncBufRead + Unpin>(r: &mut R, t: &str) -> Result<Val, (i64, String)> {
    let io = |e: std::io::Error| (3008, format!("reading a parameter: {e}"));
    match r.read_u8().await.map_err(io)? {
        b'0' => return Ok(Val::Null),
        b'1' => {}
        other => return Err((3006, format!("parameter status byte 0x{other:02x}"))),
    }
    Ok(match t.to_ascii_uppercase().as_str() {
        "VK_BOOLEAN" => Val::Bool(r.read_i16_le().await.map_err(io)? != 0),
        "VK_BYTE" | "VK_WORD" => Val::Int(r.read_i16_le().await.map_err(io)?.into()),
        "VK_LONG" => Val::Int(r.read_i32_le().await.map_err(io)?.into()),
        "VK_LONG8" => Val::Int(r.read_i64_le().await.map_err(io)?),
        "VK_REAL" => Val::Real(r.read_f64_le().await.map_err(io)?),
        "VK_DURATION" => Val::Duration(r.read_i64_le().await.map_err(io)?),
        "VK_TIMESTAMP" | "VK_TIME" => Val::Timestamp {
            year: r.read_i16_le().await.map_err(io)?,
            month: r.read_u8().await.map_err(io)?,
            day: r.read_u8().await.map_err(io)?,
            millis: r.read_u32_le().await.map_err(io)?,
        },
        "VK_STRING" | "VK_TEXT" => {
            let units = r.read_i32_le().await.map_err(io)?.unsigned_abs() as usize;
            if units * 2 > MAX_VALUE {
                return Err((3006, format!("a text parameter of {units} units")));
            }
            let mut raw = vec![0u8; units * 2];
            r.read_exact(&mut raw).await.map_err(io)?;
            let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            Val::Text(String::from_utf16_lossy(&units))
        }
        "VK_BLOB" | "VK_IMAGE" => {
            let n = r.read_i32_le().await.map_err(io)?;
            let n =
                usize::try_from(n).ok().filter(|n| *n <= MAX_VALUE).ok_or((3006, format!("a BLOB of {n} bytes")))?;
            let mut raw = vec![0u8; n];
            r.read_exact(&mut raw).await.map_err(io)?;
            Val::Bytes(raw)
        }
        other => return Err((3006, format!("unknown data type `{other}`"))),
    })
}

/// Starts a reply: `<id> OK` or `<id> ERROR`, then the headers in the order given (§1.4:
/// `Row-Count` must come before `Row-Count-Sent`), then the empty line.
pub fn header(id: &str, ok: bool, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("{id} {}\r\n", if ok { "OK" } else { "ERROR" });
    for (name, value) in headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// An `ERROR` reply (§7.1); no body follows.
pub fn error(id: &str, code: i64, description: &str) -> Vec<u8> {
    // Header values are one line of ASCII.
    let description: String =
        description.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect();
    header(
        id,
        false,
        &[
            ("Error-Code", code.to_string()),
            ("Error-Description", description),
            ("Error-Component-Code", "sqls".into()),
        ],
    )
}

/// Base64 of UTF-8 text, for `-Base64` reply headers.
pub fn base64(text: &str) -> String {
    BASE64.encode(text)
}

/// Appends one cell: `'0'` for NULL, else `'1'` and the value in the column's type (§5,
/// §6.2); a value the type cannot carry is a cell error `'2'` with code 1214 (value out of
/// bounds), after which the caller sends nothing more.
pub fn cell(out: &mut Vec<u8>, vk: &str, v: &Val) -> Result<(), ()> {
    if *v == Val::Null {
        out.push(b'0');
        return Ok(());
    }
    let start = out.len();
    out.push(b'1');
    let ok = match (vk, v) {
        ("VK_BOOLEAN", Val::Bool(b)) => push(out, &i16::from(*b).to_le_bytes()),
        ("VK_BOOLEAN", Val::Int(i)) => push(out, &i16::from(*i != 0).to_le_bytes()),
        ("VK_WORD", Val::Int(i)) => i16::try_from(*i).is_ok_and(|i| push(out, &i.to_le_bytes())),
        ("VK_LONG", Val::Int(i)) => i32::try_from(*i).is_ok_and(|i| push(out, &i.to_le_bytes())),
        ("VK_LONG8", Val::Int(i)) => push(out, &i.to_le_bytes()),
        ("VK_REAL", Val::Real(f)) => push(out, &f.to_le_bytes()),
        ("VK_REAL", Val::Int(i)) => push(out, &(*i as f64).to_le_bytes()),
        ("VK_DURATION", Val::Int(i) | Val::Duration(i)) => push(out, &i.to_le_bytes()),
        ("VK_TIMESTAMP", Val::Timestamp { year, month, day, millis }) => {
            push(out, &year.to_le_bytes()) && push(out, &[*month, *day]) && push(out, &millis.to_le_bytes())
        }
        ("VK_STRING", Val::Text(s)) => {
            let units: Vec<u16> = s.encode_utf16().collect();
            push(out, &(-(units.len() as i32)).to_le_bytes());
            units.iter().all(|u| push(out, &u.to_le_bytes()))
        }
        ("VK_BLOB" | "VK_IMAGE", Val::Bytes(b)) => push(out, &(b.len() as i32).to_le_bytes()) && push(out, b),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        out.truncate(start);
        out.push(b'2');
        out.extend_from_slice(&1214i64.to_le_bytes());
        Err(())
    }
}

fn push(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    out.extend_from_slice(bytes);
    true
}
