use std::pin::Pin;
use std::task::{Context, Poll};

use super::*;
use crate::demo::Rng;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// Hands out its bytes one at a time, as a slow socket might.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
}

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.bytes.len() && buf.remaining() > 0 {
            let b = self.bytes[self.at];
            buf.put_slice(&[b]);
            self.at += 1;
        }
        Poll::Ready(Ok(()))
    }
}

fn one(t: VkType) -> RowLayout {
    RowLayout { types: vec![t], record_ids: false }
}

/// The test vectors of `docs/4d-sql.md` §12, both ways: the value encodes to the listed
/// bytes (status byte included) and the bytes decode to the value.
#[test]
fn cells_match_the_reference_vectors() {
    let ts = |year, month, day, millis| Cell::Timestamp { year, month, day, millis };
    let vectors: Vec<(VkType, Cell, &str)> = vec![
        (VkType::Long, Cell::Null, "30"),
        (VkType::Boolean, Cell::Bool(true), "31 01 00"),
        (VkType::Boolean, Cell::Bool(false), "31 00 00"),
        (VkType::Byte, Cell::I16(7), "31 07 00"),
        (VkType::Word, Cell::I16(-2), "31 FE FF"),
        (VkType::Long, Cell::I32(123_456), "31 40 E2 01 00"),
        (VkType::Long, Cell::I32(-1), "31 FF FF FF FF"),
        (VkType::Long8, Cell::I64(1_234_567_890_123), "31 CB 04 FB 71 1F 01 00 00"),
        (VkType::Long8, Cell::I64(-2), "31 FE FF FF FF FF FF FF FF"),
        (VkType::Real, Cell::Real(1.5), "31 00 00 00 00 00 00 F8 3F"),
        (VkType::Real, Cell::Real(-0.1), "31 9A 99 99 99 99 99 B9 BF"),
        (VkType::Timestamp, ts(2024, 2, 29, 49_530_250), "31 E8 07 02 1D 8A C5 F3 02"),
        (VkType::Timestamp, ts(1999, 12, 31, 0), "31 CF 07 0C 1F 00 00 00 00"),
        (VkType::Timestamp, ts(0, 0, 0, 0), "31 00 00 00 00 00 00 00 00"),
        (VkType::Duration, Cell::Duration(3_723_004), "31 FC CE 38 00 00 00 00 00"),
        (VkType::String, Cell::Text("abc".into()), "31 FD FF FF FF 61 00 62 00 63 00"),
        (VkType::String, Cell::Text(String::new()), "31 00 00 00 00"),
        (VkType::Text, Cell::Text("é€😀".into()), "31 FC FF FF FF E9 00 AC 20 3D D8 00 DE"),
        (VkType::Blob, Cell::Bytes(vec![0xDE, 0xAD, 0xBE, 0xEF]), "31 04 00 00 00 DE AD BE EF"),
        (VkType::Blob, Cell::Bytes(Vec::new()), "31 00 00 00 00"),
    ];
    for (t, cell, bytes) in vectors {
        let bytes = hex(bytes);
        let mut encoded = Vec::new();
        if cell == Cell::Null {
            encoded.push(b'0');
        } else {
            encoded.push(b'1');
            encode_value(t, &cell, &mut encoded).unwrap();
        }
        assert_eq!(encoded, bytes, "{t} {cell:?}");
        let (row, used) = decode_row(&bytes, &one(t)).unwrap().unwrap();
        assert_eq!((row, used), (vec![cell.clone()], bytes.len()), "{t}");
        // Every shorter prefix asks for more bytes instead of failing or guessing.
        for cut in 0..bytes.len() {
            assert_eq!(decode_row(&bytes[..cut], &one(t)), Ok(None), "{t} cut at {cut}");
        }
    }
    // Reals go bit for bit, NaN payloads and negative zero included.
    for v in [f64::from_bits(0x7ff8_0000_dead_beef), -0.0, f64::MIN_POSITIVE, f64::MAX] {
        let mut b = vec![b'1'];
        encode_value(VkType::Real, &Cell::Real(v), &mut b).unwrap();
        let Cell::Real(back) = decode_row(&b, &one(VkType::Real)).unwrap().unwrap().0[0] else { panic!() };
        assert_eq!(back.to_bits(), v.to_bits());
    }
    // A positive text count is read by its absolute value (§6.2).
    let row = decode_row(&hex("31 02 00 00 00 68 00 69 00"), &one(VkType::String)).unwrap().unwrap();
    assert_eq!(row.0, vec![Cell::Text("hi".into())]);
    // An unpaired surrogate is replaced, not a failure.
    let row = decode_row(&hex("31 FF FF FF FF 00 D8"), &one(VkType::String)).unwrap().unwrap();
    assert_eq!(row.0, vec![Cell::Text("\u{FFFD}".into())]);
}

/// Requests as §3.1, §4.1 and §4.2 write them, parameters included.
#[test]
fn requests_encode_as_the_reference_shows() {
    let login = Request::login(1, "Administrator", "secret").encode().unwrap();
    assert_eq!(
        String::from_utf8(login).unwrap(),
        "001 LOGIN\r\nUSER-NAME-BASE64:QWRtaW5pc3RyYXRvcg==\r\nUSER-PASSWORD-BASE64:c2VjcmV0\r\n\
         REPLY-WITH-BASE64-TEXT:Y\r\nPROTOCOL-VERSION:0.1a\r\n\r\n"
    );
    let params =
        vec![(VkType::Long, Cell::I32(5)), (VkType::String, Cell::Text("x".into())), (VkType::String, Cell::Null)];
    let execute = Request::execute(2, "SELECT 1", 100, params).encode().unwrap();
    let head = "002 EXECUTE-STATEMENT\r\nSTATEMENT-BASE64:U0VMRUNUIDE=\r\nOutput-Mode:release\r\n\
                FIRST-PAGE-SIZE:100\r\nPARAMETER-TYPES: VK_LONG VK_STRING VK_STRING\r\n\r\n";
    assert_eq!(&execute[..head.len()], head.as_bytes());
    assert_eq!(&execute[head.len()..], hex("31 05 00 00 00 31 FF FF FF FF 78 00 30").as_slice());
    let fetch = Request::fetch(3, 1, 100, 199).encode().unwrap();
    assert_eq!(
        String::from_utf8(fetch).unwrap(),
        "003 FETCH-RESULT\r\nSTATEMENT-ID:1\r\nCOMMAND-INDEX:0\r\nFIRST-ROW-INDEX:100\r\nLAST-ROW-INDEX:199\r\n\
         Output-Mode:release\r\n\r\n"
    );
    assert_eq!(Request::close(4, 1).encode().unwrap(), b"004 CLOSE-STATEMENT\r\nSTATEMENT-ID:1\r\n\r\n");
    assert_eq!(Request::logout(5).encode().unwrap(), b"005 LOGOUT\r\n\r\n");
    assert_eq!(Request::quit(6).encode().unwrap(), b"006 QUIT\r\n\r\n");
    // A value that does not fit its declared type is refused before anything is sent.
    let bad = Request::execute(7, "SELECT ?", 1, vec![(VkType::Long, Cell::Text("1".into()))]);
    assert!(matches!(bad.encode(), Err(WireError::Malformed(m)) if m.contains("VK_LONG")));
}

/// The server's side of §12's exchange: an EXECUTE reply with one row of two, a
/// FETCH-RESULT reply with the second, a CLOSE reply.
fn exchange() -> Vec<u8> {
    let mut s = b"002 OK\r\nStatement-ID:1\r\nCommand-Count:1\r\nResult-Type:Result-Set \r\nColumn-Count:2\r\n\
Row-Count:2\r\nColumn-Types:VK_LONG VK_STRING \r\nColumn-Aliases-Base64:W0lEXSBbTkFNRV0=\r\n\
Column-Updateability: Y Y\r\nRow-Count-Sent:1\r\n\r\n"
        .to_vec();
    s.extend(hex("31 00 00 00 00  31 01 00 00 00  31 FD FF FF FF 61 00 62 00 63 00"));
    s.extend(b"003 OK\r\n\r\n");
    s.extend(hex("31 01 00 00 00  31 02 00 00 00  30"));
    s.extend(b"004 OK\r\n\r\n");
    s
}

/// Reads `exchange()` as a client would after sending its three requests.
async fn read_exchange<R: tokio::io::AsyncRead + Unpin>(r: &mut ReplyReader<R>) -> Result<Vec<Vec<Cell>>, WireError> {
    let header = r.header().await?;
    assert_eq!((header.id.as_str(), header.ok), ("002", true));
    let ResultHeader::ResultSet { statement, layout, aliases, rows, sent } = header.result()? else {
        panic!("a result set")
    };
    assert_eq!((statement, rows, sent), (1, 2, 1));
    assert_eq!(aliases, ["ID", "NAME"]);
    assert_eq!(layout, RowLayout { types: vec![VkType::Long, VkType::String], record_ids: true });
    let mut out = Vec::new();
    r.rows(&layout, sent, &mut out).await?;
    let fetched = r.header().await?;
    assert_eq!((fetched.id.as_str(), fetched.ok), ("003", true));
    r.rows(&layout, 1, &mut out).await?;
    let closed = r.header().await?;
    assert_eq!((closed.id.as_str(), closed.ok), ("004", true));
    assert_eq!(r.pending(), 0);
    Ok(out)
}

/// The whole exchange reads back, whether the bytes come at once or one at a time; every
/// cut short of the end is `Truncated`, never a panic or a wait for bytes that never come.
#[test]
fn replies_read_whole_in_pieces_and_cut_short() {
    let bytes = exchange();
    let expected = vec![vec![Cell::I32(1), Cell::Text("abc".into())], vec![Cell::I32(2), Cell::Null]];
    assert_eq!(block_on(read_exchange(&mut ReplyReader::new(bytes.as_slice()))).unwrap(), expected);
    let mut trickle = ReplyReader::new(Trickle { bytes: bytes.clone(), at: 0 });
    assert_eq!(block_on(read_exchange(&mut trickle)).unwrap(), expected);
    for cut in 0..bytes.len() {
        let result = block_on(read_exchange(&mut ReplyReader::new(&bytes[..cut])));
        assert!(matches!(result, Err(WireError::Truncated(_))), "cut at {cut}: {result:?}");
    }
}

/// An Update-Count reply (§4.6, the emulator's form) and an error reply (§7.1).
#[test]
fn update_counts_and_errors() {
    let mut bytes = b"005 OK\r\nStatement-ID:7\r\nCommand-Count:1\r\nResult-Type:Update-Count \r\nColumn-Count:1\r\n\
Row-Count:3\r\nColumn-Types:VK_LONG8 \r\nColumn-Aliases-Base64:W1VwZGF0ZSBDb3VudF0=\r\nColumn-Updateability: N\r\n\
Row-Count-Sent:3\r\n\r\n"
        .to_vec();
    bytes.extend(hex("03 00 00 00 00 00 00 00"));
    bytes.extend(b"006 ERROR\r\nError-Code:1101\r\nError-Description:Table 'FOO' does not exist in the database.\r\nError-Component-Code:sqls\r\n\r\n");
    bytes.extend(b"007 ERROR\r\nError-Code:-10515\r\n\r\n");
    block_on(async {
        let mut r = ReplyReader::new(bytes.as_slice());
        let header = r.header().await.unwrap();
        assert_eq!(header.result().unwrap(), ResultHeader::UpdateCount { statement: Some(7) });
        assert_eq!(r.update_count().await.unwrap(), 3);
        let error = r.header().await.unwrap();
        assert!(!error.ok);
        assert_eq!(error.error(), (1101, "Table 'FOO' does not exist in the database.".to_string()));
        let error = r.header().await.unwrap();
        assert_eq!(error.error(), (-10515, "no description".to_string()));
        assert!(matches!(r.update_count().await, Err(WireError::Truncated(_))));
    });
}

/// Header forms servers and clients vary in (§1.4): spacing, name case, `-Base64` in any
/// case, plain aliases with a doubled `]`, stray NULs before the id.
#[test]
fn header_variants() {
    let h = ReplyHeader::parse(
        b"\x00\x00042 OK \r\nstatement-id : 9\r\nRESULT-TYPE:Result-Set\r\nColumn-Count:2\r\nRow-Count:0\r\n\
Column-Types:  VK_TEXT   VK_IMAGE\r\nColumn-Aliases:[a b] [c]]d]\r\nColumn-Updateability: N N\r\nRow-Count-Sent:0\r\n\
X-BASE64:w6k=\r\n\r\n",
    )
    .unwrap();
    assert_eq!(h.id, "042");
    assert_eq!(h.get("X"), Some("é"));
    let ResultHeader::ResultSet { statement, layout, aliases, .. } = h.result().unwrap() else { panic!() };
    assert_eq!(statement, 9);
    assert_eq!(layout, RowLayout { types: vec![VkType::Text, VkType::Image], record_ids: false });
    assert_eq!(aliases, ["a b", "c]d"]);
}

/// Malformed input: each is a clear `Malformed` (or the server's cell error), never a panic.
#[test]
fn malformed_input_is_an_error() {
    let malformed = |r: Result<ReplyHeader, WireError>| match r {
        Err(WireError::Malformed(m)) => m,
        other => panic!("expected a malformed header, got {other:?}"),
    };
    assert!(malformed(ReplyHeader::parse(b"001\r\n\r\n")).contains("without a status"));
    assert!(malformed(ReplyHeader::parse(b"001 MAYBE\r\n\r\n")).contains("unknown status `MAYBE`"));
    assert!(malformed(ReplyHeader::parse(b"001 OK\r\nno colon\r\n\r\n")).contains("without `:`"));
    assert!(malformed(ReplyHeader::parse(b"001 OK\r\nA-Base64:***\r\n\r\n")).contains("not base64"));
    assert!(malformed(ReplyHeader::parse(b"001 OK\r\nA-Base64://4=\r\n\r\n")).contains("not UTF-8"));
    assert!(malformed(ReplyHeader::parse(b"\xff\xfe OK\r\n\r\n")).contains("not text"));

    // A header given twice: the first one counts.
    let result = |extra: &str| {
        let text = format!(
            "001 OK\r\n{extra}Statement-ID:1\r\nResult-Type:Result-Set\r\nColumn-Count:1\r\nRow-Count:1\r\n\
             Column-Types:VK_LONG\r\nRow-Count-Sent:1\r\n\r\n"
        );
        ReplyHeader::parse(text.as_bytes()).unwrap().result()
    };
    assert!(result("").is_ok());
    let message = |r: Result<ResultHeader, WireError>| r.unwrap_err().to_string();
    assert!(message(result("Column-Types:VK_LONG VK_LONG\r\n")).contains("`Column-Count` says 1"));
    assert!(message(result("Column-Types:VK_QUATERNION\r\n")).contains("unknown value type `VK_QUATERNION`"));
    assert!(message(result("Row-Count-Sent:2\r\n")).contains("2 rows sent of 1"));
    assert!(message(result("Row-Count:-1\r\n")).contains("negative `Row-Count`"));
    assert!(message(result("Result-Type:Result-Set Update-Count\r\n")).contains("one statement at a time"));
    assert!(message(result("Statement-ID:x\r\n")).contains("`Statement-ID` is not a number"));

    let cell = |t: VkType, bytes: &str| decode_row(&hex(bytes), &one(t));
    assert!(matches!(cell(VkType::Long, "33 00 00 00 00"), Err(WireError::Malformed(m)) if m.contains("0x33")));
    assert!(matches!(cell(VkType::Blob, "31 FF FF FF FF"), Err(WireError::Malformed(m)) if m.contains("negative")));
    assert!(matches!(cell(VkType::Blob, "31 FF FF FF 7F"), Err(WireError::Malformed(m)) if m.contains("BLOB cell")));
    assert!(matches!(cell(VkType::String, "31 00 00 00 80"), Err(WireError::Malformed(m)) if m.contains("text cell")));
    assert!(matches!(cell(VkType::Float, "31 00"), Err(WireError::Malformed(m)) if m.contains("CAST")));
    assert_eq!(cell(VkType::Long, "32 15 05 00 00 00 00 00 00"), Err(WireError::CellError(1301)));
    let ids = RowLayout { types: vec![VkType::Long], record_ids: true };
    assert!(matches!(decode_row(&hex("39"), &ids), Err(WireError::Malformed(m)) if m.contains("record id")));
    assert_eq!(decode_row(&hex("30 31 07 00 00 00"), &ids).unwrap().unwrap().0, vec![Cell::I32(7)]);

    // A header block that never ends is refused once it passes MAX_HEADER.
    let endless: Vec<u8> = b"001 OK\r\n".iter().copied().chain(std::iter::repeat_n(b'x', MAX_HEADER + 10)).collect();
    let r = block_on(ReplyReader::new(endless.as_slice()).header());
    assert!(matches!(r, Err(WireError::Malformed(m)) if m.contains("longer than")));
}

/// Random bytes against random layouts: the decoder answers (rows, "need more" or an
/// error) and never panics or reads past what it was given.
#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let n = rng.below(40) as usize;
        let bytes: Vec<u8> = (0..n)
            .map(|_| match rng.below(4) {
                0 => b'0',
                1 => b'1',
                2 => b'2',
                _ => rng.below(256) as u8,
            })
            .collect();
        let types = (0..1 + rng.below(4)).map(|_| VkType::ALL[rng.below(14) as usize]).collect();
        let layout = RowLayout { types, record_ids: rng.below(2) == 0 };
        if let Ok(Some((_, used))) = decode_row(&bytes, &layout) {
            assert!(used <= bytes.len());
        }
        let _ = ReplyHeader::parse(&bytes);
    }
}
