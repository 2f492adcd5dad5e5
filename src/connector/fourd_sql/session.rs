//! One logged-in connection to a 4D SQL server: login, statements with bound parameters and
//! their result pages, logout (`docs/4d-sql.md` §3, §4, §8). A connection whose stream is in
//! doubt (a read or decode failure) is never used again: the protocol has no point to
//! resynchronise at (§5), so the caller drops the session and opens a new one.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::wire::{Cell, ReplyHeader, ReplyReader, Request, ResultHeader, VkType, WireError};
use crate::connector::ConnectorError;

/// What a statement returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A result set, every row (fetched page by page).
    Rows {
        /// Column names.
        aliases: Vec<String>,
        /// Column wire types.
        types: Vec<VkType>,
        /// The rows.
        rows: Vec<Vec<Cell>>,
    },
    /// Rows affected (INSERT, UPDATE, DELETE; 0 for transaction commands).
    Count(i64),
}

/// A logged-in connection.
pub struct SqlSession {
    reader: ReplyReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next: u32,
    endpoint: String,
    /// Set once the stream is in doubt; the session must not be reused.
    broken: bool,
    /// Ids of CLOSE-STATEMENT requests sent whose replies are still to be read.
    owed: Vec<String>,
}

/// Longest wait for LOGOUT and QUIT when a session ends: a stalled server must not hold the
/// end of a run.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl SqlSession {
    /// Connects to `host:port` within `connect_timeout` and logs in. A refused login is a
    /// [`ConnectorError::Config`] naming the user (never the password); 4D's licence limit
    /// (-10514) is [`ConnectorError::Busy`].
    pub async fn open(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        endpoint: &str,
        connect_timeout: Duration,
    ) -> Result<SqlSession, ConnectorError> {
        let lost = |message: String| ConnectorError::Connection { endpoint: endpoint.to_string(), message };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(lost(format!("cannot connect: {e}"))),
            Err(_) => return Err(lost(format!("no answer to connecting within {connect_timeout:?}"))),
        };
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let mut session = SqlSession {
            reader: ReplyReader::new(read),
            writer,
            next: 0,
            endpoint: endpoint.to_string(),
            broken: false,
            owed: Vec::new(),
        };
        let id = session.id();
        let header = session.exchange(Request::login(id, user, password)).await?;
        if !header.ok {
            let (code, description) = header.error();
            return Err(match code {
                -10514 => ConnectorError::Busy {
                    endpoint: endpoint.to_string(),
                    message: format!(
                        "4D refused a new SQL session: the licence limit is reached (error {code}: {description})"
                    ),
                },
                _ if user.is_empty() => ConnectorError::Config(format!(
                    "{endpoint}: 4D refused a login without a user name (error {code}: {description}); set `user` \
                     and `password` in the connection"
                )),
                _ => ConnectorError::Config(format!(
                    "{endpoint}: 4D refused the login of user `{user}` (error {code}: {description}); check `user` and \
                     the password (the environment variable its `password` names)"
                )),
            });
        }
        Ok(session)
    }

    fn id(&mut self) -> u32 {
        self.next = self.next % 999 + 1;
        self.next
    }

    /// False once the stream is in doubt.
    pub fn usable(&self) -> bool {
        !self.broken
    }

    fn lost(&mut self, e: WireError) -> ConnectorError {
        self.broken = true;
        ConnectorError::Connection { endpoint: self.endpoint.clone(), message: e.to_string() }
    }

    /// Writes requests without reading their replies (the protocol answers in order, §1.1).
    async fn send(&mut self, requests: &[Request]) -> Result<(), ConnectorError> {
        if self.broken {
            return Err(self.lost(WireError::Io("the connection was given up earlier".into())));
        }
        let mut bytes = Vec::new();
        for request in requests {
            match request.encode() {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => return Err(ConnectorError::Data(format!("{}: {e}", self.endpoint))),
            }
        }
        if let Err(e) = self.writer.write_all(&bytes).await {
            return Err(self.lost(WireError::Io(e.to_string())));
        }
        Ok(())
    }

    /// Reads the header of the reply to `id`, after the replies still owed to earlier
    /// CLOSE-STATEMENT requests (sent without waiting: closing costs no round trip).
    async fn reply(&mut self, id: &str) -> Result<ReplyHeader, ConnectorError> {
        while !self.owed.is_empty() {
            let owed = self.owed.remove(0);
            let header = self.header_for(&owed).await?;
            if !header.ok {
                tracing::debug!(endpoint = %self.endpoint, "4D did not close a statement: {:?}", header.error());
            }
        }
        self.header_for(id).await
    }

    async fn header_for(&mut self, id: &str) -> Result<ReplyHeader, ConnectorError> {
        let header = match self.reader.header().await {
            Ok(header) => header,
            Err(e) => return Err(self.lost(e)),
        };
        if header.id != id {
            return Err(
                self.lost(WireError::Malformed(format!("the reply to request {id} names request {}", header.id)))
            );
        }
        Ok(header)
    }

    /// Sends a request and reads its reply's header.
    async fn exchange(&mut self, request: Request) -> Result<ReplyHeader, ConnectorError> {
        self.send(std::slice::from_ref(&request)).await?;
        self.reply(request.id()).await
    }

    /// Asks the server to close a statement; its reply is read before the next one.
    async fn close_later(&mut self, statement: i64) -> Result<(), ConnectorError> {
        let id = self.id();
        let request = Request::close(id, statement);
        self.send(std::slice::from_ref(&request)).await?;
        self.owed.push(request.id().to_string());
        Ok(())
    }

    /// Runs one statement with `?` parameters bound in order; reads a result whole, `page`
    /// rows per request. `what` names the operation in errors.
    pub async fn run(
        &mut self,
        sql: &str,
        params: Vec<(VkType, Cell)>,
        page: u64,
        what: &str,
    ) -> Result<Answer, ConnectorError> {
        let mut answers = self.run_batch(vec![(sql.to_string(), params)], page, what).await?;
        answers.pop().expect("one answer per statement")
    }

    /// Runs several statements pipelined (§1.1): every request is written first, then the
    /// replies are read in order, so the batch costs one round trip however many it holds
    /// (results longer than `page` rows fetch their remaining pages afterwards). One answer
    /// per statement; a statement the server refuses is its own `Err` and the stream stays
    /// in step. The outer `Err` is a failure of the connection.
    pub async fn run_batch(
        &mut self,
        statements: Vec<(String, Vec<(VkType, Cell)>)>,
        page: u64,
        what: &str,
    ) -> Result<Vec<Result<Answer, ConnectorError>>, ConnectorError> {
        let page = page.max(1);
        let requests: Vec<Request> = statements
            .into_iter()
            .map(|(sql, params)| {
                let id = self.id();
                Request::execute(id, &sql, page, params)
            })
            .collect();
        self.send(&requests).await?;
        let mut answers = Vec::with_capacity(requests.len());
        // Results with pages still on the server: (answer index, statement, layout, total).
        let mut unfinished = Vec::new();
        let mut statements_open = Vec::new();
        for request in &requests {
            let header = self.reply(request.id()).await?;
            if !header.ok {
                let (code, description) = header.error();
                answers.push(Err(statement_error(&self.endpoint, code, &description, what)));
                continue;
            }
            let result = match header.result() {
                Ok(result) => result,
                Err(e) => return Err(self.lost(e)),
            };
            match result {
                ResultHeader::UpdateCount { .. } => match self.reader.update_count().await {
                    Ok(n) => answers.push(Ok(Answer::Count(n))),
                    Err(e) => return Err(self.lost(e)),
                },
                ResultHeader::ResultSet { statement, layout, aliases, rows: total, sent } => {
                    let mut rows = Vec::with_capacity(total.min(100_000) as usize);
                    if let Err(e) = self.reader.rows(&layout, sent, &mut rows).await {
                        return Err(self.cell_or_lost(e, what));
                    }
                    if total > sent {
                        unfinished.push((answers.len(), statement, layout.clone(), total));
                    }
                    statements_open.push(statement);
                    answers.push(Ok(Answer::Rows { aliases, types: layout.types, rows }));
                }
            }
        }
        for (index, statement, layout, total) in unfinished {
            let Some(Ok(Answer::Rows { rows, .. })) = answers.get_mut(index) else { continue };
            let mut fetched = std::mem::take(rows);
            while (fetched.len() as u64) < total {
                let first = fetched.len() as u64;
                let last = (first + page - 1).min(total - 1);
                let id = self.id();
                let header = self.exchange(Request::fetch(id, statement, first, last)).await?;
                if !header.ok {
                    let (code, description) = header.error();
                    return Err(statement_error(&self.endpoint, code, &description, what));
                }
                if let Err(e) = self.reader.rows(&layout, last - first + 1, &mut fetched).await {
                    return Err(self.cell_or_lost(e, what));
                }
            }
            if let Some(Ok(Answer::Rows { rows, .. })) = answers.get_mut(index) {
                *rows = fetched;
            }
        }
        for statement in statements_open {
            self.close_later(statement).await?;
        }
        Ok(answers)
    }

    /// A cell the server could not compute ends the reply (§5): a data error, and the
    /// connection is not reused (its statement is still open). Anything else: lost stream.
    fn cell_or_lost(&mut self, e: WireError, what: &str) -> ConnectorError {
        match e {
            WireError::CellError(code) => {
                self.broken = true;
                ConnectorError::Data(format!("{}: {what}: 4D could not compute a value (error {code})", self.endpoint))
            }
            e => self.lost(e),
        }
    }

    /// Ends the session: LOGOUT, then QUIT, each answered within [`CLOSE_WAIT`] or given up.
    pub async fn close(mut self) {
        if self.broken {
            return;
        }
        let end = async {
            let id = self.id();
            if self.exchange(Request::logout(id)).await.is_ok_and(|h| h.ok) {
                let id = self.id();
                let _ = self.exchange(Request::quit(id)).await;
            }
        };
        if tokio::time::timeout(CLOSE_WAIT, end).await.is_err() {
            tracing::debug!(endpoint = %self.endpoint, "4D SQL logout got no answer within {CLOSE_WAIT:?}");
        }
    }
}

/// An `ERROR` reply to a statement as the engine's error kinds (`docs/4d-sql.md` §7.2).
pub fn statement_error(endpoint: &str, code: i64, description: &str, what: &str) -> ConnectorError {
    let message = format!("{endpoint}: {what}: 4D error {code}: {description}");
    match code {
        // Unknown table or column, table not in FROM, ambiguous name.
        1101..=1104 => ConnectorError::Schema(message),
        // Incompatible types, NULL into NOT NULL, failed to create or update a record,
        // value out of bounds, date and time parsing.
        1108 | 1111 | 1134 | 1204 | 1205 | 1214 | 1501..=1551 => ConnectorError::Data(message),
        // Locked tables or records: another process holds them.
        1217 | 1218 | 1221 => ConnectorError::Busy { endpoint: endpoint.to_string(), message },
        // Session gone (expired, not logged in): the stream is fine, the session is not.
        1403 | 3003 | 3011 => ConnectorError::Connection { endpoint: endpoint.to_string(), message },
        _ => ConnectorError::Other(message),
    }
}
