//! Errors of the source, classified once: the server's reason in one line (with its SQLSTATE,
//! never reduced to "db error"), and whether a fault is transient — worth retrying on a fresh
//! connection — or not (a syntax, permission or data error never is).

use postgres::error::SqlState;
use std::fmt;

/// An error of the source: the server's reason in one line (with its SQLSTATE), and whether it
/// is transient — worth retrying (see [`SourceError::transient`]).
#[derive(Debug)]
pub struct SourceError {
    pub(crate) msg: String,
    /// A connection refused, reset or closed, the server shutting down or starting
    /// (57P01–57P03), a connection exception (class 08), too many connections (53300), a
    /// serialization failure or deadlock (40001, 40P01). Never a syntax, permission or data error.
    pub transient: bool,
    pub code: Option<SqlState>,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for SourceError {}

impl From<postgres::Error> for SourceError {
    fn from(e: postgres::Error) -> Self {
        Self {
            msg: describe_error(&e),
            transient: is_transient_chain(&e),
            code: e.code().cloned(),
        }
    }
}

impl SourceError {
    /// A statement that got no answer within the read timeout: transient, retried on a fresh
    /// connection.
    pub(crate) fn stalled(msg: String) -> Self {
        Self {
            msg,
            transient: true,
            code: None,
        }
    }

    /// A wait ended by Ctrl-C (never retried).
    pub(crate) fn interrupted() -> Self {
        Self {
            msg: crate::cancel::Interrupted.to_string(),
            transient: false,
            code: None,
        }
    }

    /// Adds what ended the connection to a "connection closed" message.
    pub(crate) fn add_cause(&mut self, cause: &str) {
        if !self.msg.contains(cause) {
            self.msg = format!("{}: {cause}", self.msg);
        }
    }

    /// Classifies any error by its causes (a COPY stream's `io::Error`, connectorx's error),
    /// with `msg` as what to show.
    pub fn from_chain(e: &(dyn std::error::Error + 'static), msg: String) -> Self {
        let mut code = None;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(pg) = err.downcast_ref::<postgres::Error>() {
                code = pg.code().cloned();
                break;
            }
            cur = err.source();
        }
        Self {
            msg,
            transient: is_transient_chain(e),
            code,
        }
    }
}

/// Whether an error (of any mode) is a transient fault of the source, worth retrying.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<SourceError>().is_some_and(|s| s.transient))
}

fn transient_code(code: &str) -> bool {
    matches!(
        code,
        "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
    ) || code.starts_with("08")
}

pub(crate) fn is_transient_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(db) = err.downcast_ref::<postgres::error::DbError>() {
            return transient_code(db.code().code());
        }
        if let Some(pg) = err.downcast_ref::<postgres::Error>() {
            if let Some(db) = pg.as_db_error() {
                return transient_code(db.code().code());
            }
            if pg.is_closed() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
                    | UnexpectedEof
                    | NotConnected
                    | TimedOut
            ) {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                let inner: &(dyn std::error::Error + 'static) = inner;
                return is_transient_chain(inner);
            }
        }
        cur = err.source();
    }
    false
}

/// Collapses a message to one line (server messages may carry DETAIL/HINT lines).
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Describes a query error from the server in one line, with the server's own words and its
/// SQLSTATE (`division by zero (SQLSTATE 22012)`).
pub fn explain_query_error(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<SourceError>() {
        Some(s) => s.msg.clone(),
        None => describe_error(e),
    }
}

/// Describes any error in one line, looking through its causes (an `io::Error` from a COPY
/// stream wraps the server's error) for the server's message and SQLSTATE, so the reason is
/// never reduced to "db error".
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(db) = err.downcast_ref::<postgres::error::DbError>() {
            return db_error_line(db);
        }
        if let Some(pg) = err.downcast_ref::<postgres::Error>() {
            if let Some(db) = pg.as_db_error() {
                return db_error_line(db);
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &(dyn std::error::Error + 'static) = inner;
                if inner.downcast_ref::<postgres::Error>().is_some()
                    || inner.downcast_ref::<postgres::error::DbError>().is_some()
                {
                    return describe_error(inner);
                }
            }
        }
        cur = err.source();
    }
    // No server error inside: the whole chain, so that "db error" or "error closing
    // connection" keep their cause.
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(err) = cur {
        let t = err.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = err.source();
    }
    one_line(&parts.join(": "))
}

fn db_error_line(db: &postgres::error::DbError) -> String {
    format!("{} (SQLSTATE {})", one_line(db.message()), db.code().code())
}
