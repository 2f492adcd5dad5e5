//! The client side of 4D's SQL network protocol: requests to bytes, and replies (header
//! block, rows of typed cells, update counts) from bytes. `docs/4d-sql.md` is the reference;
//! the section numbers below are its sections.
//!
//! Shapes (§1.2): a message is a first line, header lines `Name:value`, an empty line (every
//! line ends in CR LF), then a binary body whose length is never announced: it follows from
//! the header (row count, column types) and the cells themselves, little-endian throughout
//! (§6.1). So a body is decoded one row at a time, and a reader that cannot decode a value
//! cannot skip it: every malformed or truncated input is a [`WireError`], never a panic,
//! and the caller drops the connection.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Longest header block read (bytes); a longer one is not a 4D reply.
pub const MAX_HEADER: usize = 64 * 1024;

/// Largest single cell accepted (bytes of text or BLOB): a larger announced length is a
/// corrupt stream rather than a value.
pub const MAX_CELL: usize = 256 * 1024 * 1024;

/// Why bytes could not be read as the protocol says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The stream ended inside a message.
    #[error("the 4D SQL server closed the connection in the middle of a reply ({0})")]
    Truncated(&'static str),
    /// The bytes do not follow the protocol.
    #[error("the 4D SQL server sent a reply db-sync cannot read: {0}")]
    Malformed(String),
    /// The server could not compute a value (status `'2'`, §5); nothing follows it.
    #[error("the 4D SQL server failed to compute a value (error {0})")]
    CellError(i64),
    /// Reading from or writing to the socket failed.
    #[error("the connection to the 4D SQL server failed: {0}")]
    Io(String),
}

fn malformed(message: impl Into<String>) -> WireError {
    WireError::Malformed(message.into())
}

/// The value kinds of `Column-Types` and `PARAMETER-TYPES` (§6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VkType {
    /// `VK_BOOLEAN`: int16, 0 false.
    Boolean,
    /// `VK_BYTE`: int16.
    Byte,
    /// `VK_WORD`: int16.
    Word,
    /// `VK_LONG`: int32.
    Long,
    /// `VK_LONG8`: int64.
    Long8,
    /// `VK_REAL`: IEEE-754 binary64.
    Real,
    /// `VK_FLOAT`: 4D's arbitrary-precision number; its mantissa format is undocumented, so
    /// its cells are refused (§6.2).
    Float,
    /// `VK_TIMESTAMP`: int16 year, u8 month, u8 day, u32 milliseconds since midnight.
    Timestamp,
    /// `VK_TIME`: laid out as `VK_TIMESTAMP`.
    Time,
    /// `VK_DURATION`: int64 milliseconds.
    Duration,
    /// `VK_STRING`: negative int32 count of UTF-16 units, then UTF-16LE.
    String,
    /// `VK_TEXT`: as `VK_STRING`.
    Text,
    /// `VK_BLOB`: int32 length, then the bytes.
    Blob,
    /// `VK_IMAGE`: as `VK_BLOB`.
    Image,
}

impl VkType {
    const ALL: [VkType; 14] = [
        VkType::Boolean,
        VkType::Byte,
        VkType::Word,
        VkType::Long,
        VkType::Long8,
        VkType::Real,
        VkType::Float,
        VkType::Timestamp,
        VkType::Time,
        VkType::Duration,
        VkType::String,
        VkType::Text,
        VkType::Blob,
        VkType::Image,
    ];

    /// The name on the wire (`VK_LONG8`, …).
    pub fn name(self) -> &'static str {
        match self {
            VkType::Boolean => "VK_BOOLEAN",
            VkType::Byte => "VK_BYTE",
            VkType::Word => "VK_WORD",
            VkType::Long => "VK_LONG",
            VkType::Long8 => "VK_LONG8",
            VkType::Real => "VK_REAL",
            VkType::Float => "VK_FLOAT",
            VkType::Timestamp => "VK_TIMESTAMP",
            VkType::Time => "VK_TIME",
            VkType::Duration => "VK_DURATION",
            VkType::String => "VK_STRING",
            VkType::Text => "VK_TEXT",
            VkType::Blob => "VK_BLOB",
            VkType::Image => "VK_IMAGE",
        }
    }

    /// The type a wire name names (exact, upper case as servers send it).
    pub fn parse(name: &str) -> Result<VkType, WireError> {
        VkType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| malformed(format!("unknown value type `{}`", printable(name))))
    }
}

/// One decoded cell (or parameter value).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL (status `'0'`).
    Null,
    /// `VK_BOOLEAN`.
    Bool(bool),
    /// `VK_BYTE`, `VK_WORD`.
    I16(i16),
    /// `VK_LONG`.
    I32(i32),
    /// `VK_LONG8`.
    I64(i64),
    /// `VK_REAL`, bit for bit.
    Real(f64),
    /// `VK_TIMESTAMP`, `VK_TIME`: 4D's empty date is year, month and day 0 (not NULL).
    Timestamp {
        /// Year (0 in the empty date).
        year: i16,
        /// Month 1–12 (0 in the empty date).
        month: u8,
        /// Day 1–31 (0 in the empty date).
        day: u8,
        /// Milliseconds since midnight.
        millis: u32,
    },
    /// `VK_DURATION`, milliseconds.
    Duration(i64),
    /// `VK_STRING`, `VK_TEXT` (unpaired UTF-16 surrogates become U+FFFD).
    Text(String),
    /// `VK_BLOB`, `VK_IMAGE` (empty is not NULL).
    Bytes(Vec<u8>),
}

/// Bytes of one value of `t` after its status byte `'1'` (§6.2).
pub fn encode_value(t: VkType, cell: &Cell, out: &mut Vec<u8>) -> Result<(), WireError> {
    let mismatch = || malformed(format!("a {} value cannot be sent as {}", cell_kind(cell), t.name()));
    match (t, cell) {
        (VkType::Boolean, Cell::Bool(b)) => out.extend_from_slice(&i16::from(*b).to_le_bytes()),
        (VkType::Byte | VkType::Word, Cell::I16(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (VkType::Long, Cell::I32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (VkType::Long8, Cell::I64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (VkType::Duration, Cell::Duration(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (VkType::Real, Cell::Real(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (VkType::Timestamp | VkType::Time, Cell::Timestamp { year, month, day, millis }) => {
            out.extend_from_slice(&year.to_le_bytes());
            out.push(*month);
            out.push(*day);
            out.extend_from_slice(&millis.to_le_bytes());
        }
        (VkType::String | VkType::Text, Cell::Text(s)) => {
            let units: Vec<u16> = s.encode_utf16().collect();
            let n = i32::try_from(units.len()).map_err(|_| malformed("text too long for one cell"))?;
            out.extend_from_slice(&(-n).to_le_bytes());
            for u in units {
                out.extend_from_slice(&u.to_le_bytes());
            }
        }
        (VkType::Blob | VkType::Image, Cell::Bytes(b)) => {
            let n = i32::try_from(b.len()).map_err(|_| malformed("BLOB too long for one cell"))?;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(b);
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn cell_kind(cell: &Cell) -> &'static str {
    match cell {
        Cell::Null => "NULL",
        Cell::Bool(_) => "boolean",
        Cell::I16(_) => "16-bit integer",
        Cell::I32(_) => "32-bit integer",
        Cell::I64(_) => "64-bit integer",
        Cell::Real(_) => "real",
        Cell::Timestamp { .. } => "timestamp",
        Cell::Duration(_) => "duration",
        Cell::Text(_) => "text",
        Cell::Bytes(_) => "bytes",
    }
}

/// A request: first line `<id> <COMMAND>`, headers, and (EXECUTE-STATEMENT with
/// parameters) the parameter bytes (§4.1, §4.2).
#[derive(Debug, Clone, Default)]
pub struct Request {
    id: String,
    command: &'static str,
    headers: Vec<(&'static str, String)>,
    params: Vec<(VkType, Cell)>,
}

impl Request {
    fn new(id: u32, command: &'static str) -> Request {
        Request { id: format!("{id:03}"), command, ..Request::default() }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    /// `LOGIN` with base64 credentials and base64 reply text (§3.1).
    pub fn login(id: u32, user: &str, password: &str) -> Request {
        Request::new(id, "LOGIN")
            .header("USER-NAME-BASE64", BASE64.encode(user))
            .header("USER-PASSWORD-BASE64", BASE64.encode(password))
            .header("REPLY-WITH-BASE64-TEXT", "Y")
            .header("PROTOCOL-VERSION", "0.1a")
    }

    /// `EXECUTE-STATEMENT` of one SQL statement with `?` parameters bound in order, the
    /// first `first_page` rows in the reply (§4.1).
    pub fn execute(id: u32, sql: &str, first_page: u64, params: Vec<(VkType, Cell)>) -> Request {
        let mut r = Request::new(id, "EXECUTE-STATEMENT")
            .header("STATEMENT-BASE64", BASE64.encode(sql))
            .header("Output-Mode", "release")
            .header("FIRST-PAGE-SIZE", first_page.to_string());
        if !params.is_empty() {
            let types: String = params.iter().map(|(t, _)| format!(" {}", t.name())).collect();
            r = r.header("PARAMETER-TYPES", types);
        }
        r.params = params;
        r
    }

    /// `FETCH-RESULT` of rows `first..=last` (0-based, inclusive) of a statement (§8.1).
    pub fn fetch(id: u32, statement: i64, first: u64, last: u64) -> Request {
        Request::new(id, "FETCH-RESULT")
            .header("STATEMENT-ID", statement.to_string())
            .header("COMMAND-INDEX", "0")
            .header("FIRST-ROW-INDEX", first.to_string())
            .header("LAST-ROW-INDEX", last.to_string())
            .header("Output-Mode", "release")
    }

    /// `CLOSE-STATEMENT` (§8.3).
    pub fn close(id: u32, statement: i64) -> Request {
        Request::new(id, "CLOSE-STATEMENT").header("STATEMENT-ID", statement.to_string())
    }

    /// `LOGOUT`: ends the session, keeps the socket (§8.3).
    pub fn logout(id: u32) -> Request {
        Request::new(id, "LOGOUT")
    }

    /// `QUIT`: the server closes the socket; only when logged out (§8.3).
    pub fn quit(id: u32) -> Request {
        Request::new(id, "QUIT")
    }

    /// The command id the reply must echo.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bytes to send. Fails only for a parameter whose value does not fit its type.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = format!("{} {}\r\n", self.id, self.command).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        for (t, value) in &self.params {
            if *value == Cell::Null {
                out.push(b'0');
            } else {
                out.push(b'1');
                encode_value(*t, value, &mut out)?;
            }
        }
        Ok(out)
    }
}

/// A reply's header block: echoed command id, `OK` or not, and its headers with `-Base64`
/// values decoded (§1.6).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyHeader {
    /// The command id, as echoed.
    pub id: String,
    /// True for `OK`, false for `ERROR` (then no body follows).
    pub ok: bool,
    headers: Vec<(String, String)>,
}

/// Where the header block ends in `buf`: the index just past `CR LF CR LF`.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

impl ReplyHeader {
    /// Parses a header block (through its empty line). Names compare case-insensitively,
    /// values are trimmed; a name ending in `-Base64` (any case) loses the suffix and its
    /// value is decoded as base64 of UTF-8.
    pub fn parse(block: &[u8]) -> Result<ReplyHeader, WireError> {
        let text = std::str::from_utf8(block).map_err(|_| malformed("a header that is not text"))?;
        // Defence in depth (§10): stray NUL bytes before the command id are dropped.
        let text = text.trim_start_matches('\0');
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("");
        let (id, status) = first
            .trim()
            .split_once(' ')
            .ok_or_else(|| malformed(format!("a first line without a status: `{}`", printable(first))))?;
        let ok = match status.trim() {
            "OK" => true,
            "ERROR" => false,
            other => return Err(malformed(format!("unknown status `{}`", printable(other)))),
        };
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("a header line without `:`: `{}`", printable(line))))?;
            let (name, value) = (name.trim(), value.trim());
            let encoded = name.len() > 7 && name[name.len() - 7..].eq_ignore_ascii_case("-base64");
            if encoded {
                let bytes = BASE64.decode(value).map_err(|_| malformed(format!("header `{name}` is not base64")))?;
                let value = String::from_utf8(bytes).map_err(|_| malformed(format!("header `{name}` is not UTF-8")))?;
                headers.push((name[..name.len() - 7].to_string(), value));
            } else {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        Ok(ReplyHeader { id: id.to_string(), ok, headers })
    }

    /// The value of a header, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A header holding an integer.
    pub fn int(&self, name: &str) -> Result<i64, WireError> {
        let value = self.get(name).ok_or_else(|| malformed(format!("no `{name}` header")))?;
        value.trim().parse().map_err(|_| malformed(format!("`{name}` is not a number: `{}`", printable(value))))
    }

    /// For an `ERROR` reply: code and description (§7.1).
    pub fn error(&self) -> (i64, String) {
        let code = self.get("Error-Code").and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        (code, self.get("Error-Description").unwrap_or("no description").to_string())
    }

    /// The result of an `OK` EXECUTE-STATEMENT reply (§4.3).
    pub fn result(&self) -> Result<ResultHeader, WireError> {
        let kind = self.get("Result-Type").ok_or_else(|| malformed("no `Result-Type` header"))?.trim();
        let statement = self.get("Statement-ID").map(|_| self.int("Statement-ID")).transpose()?;
        if kind.eq_ignore_ascii_case("Update-Count") {
            return Ok(ResultHeader::UpdateCount { statement });
        }
        if !kind.eq_ignore_ascii_case("Result-Set") {
            return Err(malformed(format!("result type `{}` (one statement at a time)", printable(kind))));
        }
        let count = |name: &str| -> Result<u64, WireError> {
            u64::try_from(self.int(name)?).map_err(|_| malformed(format!("negative `{name}`")))
        };
        let types = self
            .get("Column-Types")
            .ok_or_else(|| malformed("no `Column-Types` header"))?
            .split_whitespace()
            .map(VkType::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if types.len() as u64 != count("Column-Count")? {
            return Err(malformed(format!(
                "`Column-Count` says {}, `Column-Types` lists {}",
                count("Column-Count")?,
                types.len()
            )));
        }
        let updateable = self.get("Column-Updateability").is_some_and(|v| v.split_whitespace().any(|f| f == "Y"));
        let aliases = self.get("Column-Aliases").map(parse_aliases).unwrap_or_default();
        let rows = count("Row-Count")?;
        let sent = count("Row-Count-Sent")?;
        if sent > rows {
            return Err(malformed(format!("{sent} rows sent of {rows}")));
        }
        Ok(ResultHeader::ResultSet {
            statement: statement.ok_or_else(|| malformed("no `Statement-ID` header"))?,
            layout: RowLayout { types, record_ids: updateable },
            aliases,
            rows,
            sent,
        })
    }
}

/// What an EXECUTE-STATEMENT returned.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultHeader {
    /// Rows: `sent` of `rows` follow in this reply, the rest by FETCH-RESULT.
    ResultSet {
        /// For FETCH-RESULT and CLOSE-STATEMENT.
        statement: i64,
        /// How each row is laid out.
        layout: RowLayout,
        /// Column names, in order.
        aliases: Vec<String>,
        /// Rows of the whole result.
        rows: u64,
        /// Rows in this reply's body.
        sent: u64,
    },
    /// INSERT, UPDATE, DELETE, DDL, transactions: an 8-byte count follows (§4.6).
    UpdateCount {
        /// The statement id, when the server gave one.
        statement: Option<i64>,
    },
}

/// `[a] [b]]c]` → `a`, `b]c` (§4.3: each name in brackets, a `]` inside doubled).
fn parse_aliases(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '[' {
            continue;
        }
        let mut name = String::new();
        while let Some(c) = chars.next() {
            if c == ']' {
                if chars.peek() == Some(&']') {
                    chars.next();
                    name.push(']');
                } else {
                    break;
                }
            } else {
                name.push(c);
            }
        }
        out.push(name);
    }
    out
}

/// How the rows of a result are laid out (§5).
#[derive(Debug, Clone, PartialEq)]
pub struct RowLayout {
    /// One type per column.
    pub types: Vec<VkType>,
    /// Every row starts with a record id (some column is updateable, §4.5).
    pub record_ids: bool,
}

/// A little-endian reader over a byte slice that says "need more" instead of failing.
struct Bytes<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.buf.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_le_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }
}

/// `Ok(None)`: the buffer ends inside the value; read more and try again.
type Step<T> = Result<Option<T>, WireError>;

/// One row from the start of `buf`: the row's cells (the record id dropped) and the bytes
/// it used, or `None` when `buf` ends inside it.
pub fn decode_row(buf: &[u8], layout: &RowLayout) -> Step<(Vec<Cell>, usize)> {
    let mut b = Bytes { buf, at: 0 };
    if layout.record_ids {
        match b.u8() {
            None => return Ok(None),
            Some(b'0') => {}
            Some(b'1') => {
                if b.i32().is_none() {
                    return Ok(None);
                }
            }
            Some(b'2') => return b.i64().map_or(Ok(None), |code| Err(WireError::CellError(code))),
            Some(other) => return Err(malformed(format!("record id status byte 0x{other:02x}"))),
        }
    }
    let mut cells = Vec::with_capacity(layout.types.len());
    for &t in &layout.types {
        match decode_cell(&mut b, t)? {
            Some(cell) => cells.push(cell),
            None => return Ok(None),
        }
    }
    Ok(Some((cells, b.at)))
}

fn decode_cell(b: &mut Bytes<'_>, t: VkType) -> Step<Cell> {
    let Some(status) = b.u8() else { return Ok(None) };
    match status {
        b'0' => return Ok(Some(Cell::Null)),
        b'1' => {}
        b'2' => return b.i64().map_or(Ok(None), |code| Err(WireError::CellError(code))),
        other => return Err(malformed(format!("cell status byte 0x{other:02x} in a {} column", t.name()))),
    }
    let cell = match t {
        VkType::Boolean => b.i16().map(|v| Cell::Bool(v != 0)),
        VkType::Byte | VkType::Word => b.i16().map(Cell::I16),
        VkType::Long => b.i32().map(Cell::I32),
        VkType::Long8 => b.i64().map(Cell::I64),
        VkType::Duration => b.i64().map(Cell::Duration),
        VkType::Real => b.array().map(|a| Cell::Real(f64::from_le_bytes(a))),
        VkType::Timestamp | VkType::Time => (|| {
            let (year, month, day, millis) = (b.i16()?, b.u8()?, b.u8()?, b.u32()?);
            Some(Cell::Timestamp { year, month, day, millis })
        })(),
        VkType::String | VkType::Text => {
            let Some(n) = b.i32() else { return Ok(None) };
            // Servers send the count negated; its absolute value is the count (§6.2).
            let units = n.unsigned_abs() as usize;
            if units.saturating_mul(2) > MAX_CELL {
                return Err(malformed(format!("a text cell of {units} UTF-16 units")));
            }
            b.take(units * 2).map(|raw| {
                let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                Cell::Text(String::from_utf16_lossy(&units))
            })
        }
        VkType::Blob | VkType::Image => {
            let Some(n) = b.i32() else { return Ok(None) };
            let n = usize::try_from(n).map_err(|_| malformed(format!("a BLOB of negative length {n}")))?;
            if n > MAX_CELL {
                return Err(malformed(format!("a BLOB cell of {n} bytes")));
            }
            b.take(n).map(|raw| Cell::Bytes(raw.to_vec()))
        }
        VkType::Float => {
            return Err(malformed(
                "a VK_FLOAT value (4D's Float type, whose wire format is undocumented); CAST the column AS REAL",
            ));
        }
    };
    Ok(cell)
}

/// The affected-row count of an Update-Count reply: exactly 8 bytes, no status byte (§4.6).
pub fn decode_update_count(buf: &[u8]) -> Option<i64> {
    Bytes { buf, at: 0 }.i64()
}

/// Reads replies from a stream, buffering what arrives past the part asked for.
pub struct ReplyReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> ReplyReader<R> {
    /// A reader over `inner` (a socket, or bytes in tests).
    pub fn new(inner: R) -> ReplyReader<R> {
        ReplyReader { inner, buf: Vec::new(), start: 0 }
    }

    /// Reads more bytes; the end of the stream is [`WireError::Truncated`].
    async fn fill(&mut self, what: &'static str) -> Result<(), WireError> {
        use tokio::io::AsyncReadExt;
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.inner.read(&mut chunk).await.map_err(|e| WireError::Io(e.to_string()))?;
        if n == 0 {
            return Err(WireError::Truncated(what));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next reply's header block.
    pub async fn header(&mut self) -> Result<ReplyHeader, WireError> {
        loop {
            let pending = &self.buf[self.start..];
            if let Some(end) = header_end(pending) {
                let header = ReplyHeader::parse(&pending[..end]);
                self.start += end;
                return header;
            }
            if pending.len() > MAX_HEADER {
                return Err(malformed(format!("a header block longer than {MAX_HEADER} bytes")));
            }
            self.fill("in a header").await?;
        }
    }

    /// `n` rows laid out as `layout`, appended to `out`.
    pub async fn rows(&mut self, layout: &RowLayout, n: u64, out: &mut Vec<Vec<Cell>>) -> Result<(), WireError> {
        for _ in 0..n {
            loop {
                if let Some((row, used)) = decode_row(&self.buf[self.start..], layout)? {
                    self.start += used;
                    out.push(row);
                    break;
                }
                self.fill("in a row").await?;
            }
        }
        Ok(())
    }

    /// The 8-byte body of an Update-Count reply.
    pub async fn update_count(&mut self) -> Result<i64, WireError> {
        loop {
            if let Some(count) = decode_update_count(&self.buf[self.start..]) {
                self.start += 8;
                return Ok(count);
            }
            self.fill("in an update count").await?;
        }
    }

    /// Bytes received and not yet read (a well-behaved server leaves none between replies).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Text for messages: control characters escaped, at most 80 characters.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

impl fmt::Display for VkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
