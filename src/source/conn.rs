//! Source URL handling. The URL carries the password, so it is kept private: everything that
//! may reach a log, an error or `Debug` output uses the redacted form.

use anyhow::{anyhow, bail, Result};
use postgres::error::SqlState;
use std::fmt;
use std::time::Duration;

/// Session option that makes every transaction of a connection read-only.
const READ_ONLY: &str = "-c default_transaction_read_only=on";

/// A parsed `postgresql://` URL with its secret kept out of every printable form.
#[derive(Clone)]
pub struct SourceUrl {
    raw: url::Url,
    redacted: String,
}

impl SourceUrl {
    /// Parses a libpq-style URL. The error never echoes the input, which may hold a password.
    pub fn parse(input: &str) -> Result<Self> {
        const EXPECTED: &str = "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE";
        let raw = url::Url::parse(input.trim())
            .map_err(|e| anyhow!("invalid source URL ({e}); {EXPECTED}"))?;
        if !matches!(raw.scheme(), "postgres" | "postgresql") {
            bail!(
                "invalid source URL: scheme '{}' is not supported; {EXPECTED}",
                raw.scheme()
            );
        }
        if raw.host_str().unwrap_or("").is_empty() {
            bail!("invalid source URL: no host; {EXPECTED}");
        }
        let mut shown = raw.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        let mut shown = shown.to_string();
        // A password may also arrive as a query parameter (libpq allows `?password=`).
        if raw.query_pairs().any(|(k, _)| k == "password") {
            let mut s = raw.clone();
            let pairs: Vec<(String, String)> = raw
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            s.query_pairs_mut().clear().extend_pairs(pairs);
            if s.password().is_some() {
                let _ = s.set_password(Some("***"));
            }
            shown = s.to_string();
        }
        Ok(Self {
            raw,
            redacted: shown,
        })
    }

    /// The URL with any password replaced by `***`: safe to print.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The database name, for messages.
    pub fn database(&self) -> String {
        let path = self.raw.path().trim_start_matches('/');
        if path.is_empty() {
            self.raw.username().to_string()
        } else {
            path.to_string()
        }
    }

    /// (host, port, database) of the server this URL names, for the source identity.
    pub fn server_identity(&self) -> (String, u16, String) {
        (
            self.raw.host_str().unwrap_or("").to_string(),
            self.raw.port().unwrap_or(5432),
            self.database(),
        )
    }

    /// `host:port`, for messages.
    pub fn host_port(&self) -> String {
        format!(
            "{}:{}",
            self.raw.host_str().unwrap_or("?"),
            self.raw.port().unwrap_or(5432)
        )
    }

    /// The URL handed to connectorx: the same server, binary `COPY` protocol, read-only
    /// transactions.
    pub(crate) fn connectorx_url(&self) -> String {
        let eff = self.effective();
        let mut u = eff.clone();
        let mut has_options = false;
        let pairs: Vec<(String, String)> = eff
            .query_pairs()
            .filter(|(k, _)| k != "cxprotocol")
            .map(|(k, v)| {
                if k == "options" {
                    has_options = true;
                    (k.into_owned(), format!("{v} {READ_ONLY}"))
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        let mut pairs = pairs;
        if !has_options {
            pairs.push(("options".into(), READ_ONLY.into()));
        }
        u.query_pairs_mut()
            .clear()
            .extend_pairs(pairs)
            .append_pair("cxprotocol", "binary");
        // Form encoding writes spaces as '+', which libpq-style parsers do not decode; a literal
        // '+' was encoded as %2B, so every '+' left in the query is a space.
        if let Some(q) = u.query().map(|q| q.replace('+', "%20")) {
            u.set_query(Some(&q));
        }
        u.to_string()
    }

    /// The full URL, password included, to hand to a child process of ours (`bench`). Never
    /// print it.
    pub fn expose_for_child(&self) -> String {
        self.raw.to_string()
    }

    /// The same server with another database, e.g. to create the demo database from `postgres`.
    pub fn with_database(&self, db: &str) -> Self {
        let mut raw = self.raw.clone();
        raw.set_path(&format!("/{db}"));
        let mut redacted = url::Url::parse(&self.redacted).expect("redacted URL parses");
        redacted.set_path(&format!("/{db}"));
        Self {
            raw,
            redacted: redacted.to_string(),
        }
    }

    /// The URL with scrobsync's defaults: TLS off on loopback unless the URL asks for it.
    /// libpq's default (`prefer`) would encrypt a local bulk read for nothing: measured here,
    /// TLS on 127.0.0.1 cost 1 s of a 17.5 s load of 5M rows.
    fn effective(&self) -> url::Url {
        let mut u = self.raw.clone();
        let has_mode = u.query_pairs().any(|(k, _)| k == "sslmode");
        let loopback = match u.host() {
            // `postgresql:` is not a "special" scheme to the url crate, so an IPv4 address
            // arrives as a domain.
            Some(url::Host::Domain(d)) => {
                d == "localhost"
                    || d.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => true,
        };
        if !has_mode && loopback {
            u.query_pairs_mut().append_pair("sslmode", "disable");
        }
        u
    }

    fn config(&self) -> Result<postgres::Config> {
        // Certificate paths are libpq parameters the Rust client does not parse; they are
        // handled in `connect_with`.
        let mut u = self.effective();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| !matches!(k.as_ref(), "sslcert" | "sslkey" | "sslrootcert"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let mut cfg: postgres::Config = u
            .as_str()
            .parse()
            .map_err(|e| anyhow!("invalid source URL ({e}); check its parameters"))?;
        // A server that never answers must become an error, not a hang: a connect timeout
        // (`connect_timeout` in the URL wins) and TCP keepalives, so a dead peer is noticed.
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        if cfg.get_application_name().is_none() {
            cfg.application_name("scrobsync");
        }
        Ok(cfg)
    }

    /// Opens a connection for reading the source: every statement sent through it runs in a
    /// transaction that is read-only from its start (see [`ReadOnlyClient`]), and the session
    /// default is read-only too.
    pub fn connect_reader(&self) -> Result<ReadOnlyClient> {
        let mut cfg = self.config()?;
        let opts = match cfg.get_options() {
            Some(o) => format!("{o} {READ_ONLY}"),
            None => READ_ONLY.to_string(),
        };
        cfg.options(&opts);
        Ok(ReadOnlyClient(self.connect_with(&cfg)?))
    }

    /// Opens a plain client connection, turning the usual failures into one actionable line.
    pub fn connect(&self) -> Result<postgres::Client> {
        self.connect_with(&self.config()?)
    }

    /// Connects with TLS unless `sslmode=disable`: `prefer` and `require` encrypt without
    /// verifying the certificate (as libpq does without a root certificate); with
    /// `sslrootcert=FILE` the server certificate is verified against it.
    fn connect_with(&self, cfg: &postgres::Config) -> Result<postgres::Client> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        use postgres::config::SslMode;
        let limit = *cfg.get_connect_timeout().unwrap_or(&CONNECT_TIMEOUT);
        let result = if cfg.get_ssl_mode() == SslMode::Disable {
            connect_within(cfg.clone(), postgres::NoTls, limit)
        } else {
            let mut b = SslConnector::builder(SslMethod::tls())
                .map_err(|e| anyhow!("cannot set up TLS: {e}"))?;
            let root = self
                .raw
                .query_pairs()
                .find(|(k, _)| k == "sslrootcert")
                .map(|(_, v)| v.into_owned());
            match &root {
                Some(path) => b
                    .set_ca_file(path)
                    .map_err(|e| anyhow!("cannot read sslrootcert {path}: {e}"))?,
                None => b.set_verify(SslVerifyMode::NONE),
            }
            let mut tls = postgres_openssl::MakeTlsConnector::new(b.build());
            if root.is_none() {
                tls.set_callback(|c, _| {
                    c.set_verify_hostname(false);
                    Ok(())
                });
            }
            connect_within(cfg.clone(), tls, limit)
        };
        match result {
            Some(r) => r.map_err(|e| explain_connect_error(&e, self)),
            None => Err(SourceError {
                msg: format!(
                    "cannot connect to PostgreSQL at {}: no answer within {} s; check that the server is up (connect_timeout in the URL sets the limit)",
                    self.host_port(),
                    limit.as_secs()
                ),
                transient: true,
                code: None,
            }
            .into()),
        }
    }
}

/// How long a connection attempt may take, unless the URL says `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects on a helper thread and gives up after `limit` (plus a second): the client's own
/// timeout covers the TCP connect only, not a server that accepts and then never answers.
/// `None`: no answer in time (the helper thread ends when the peer closes).
fn connect_within<T>(
    cfg: postgres::Config,
    tls: T,
    limit: Duration,
) -> Option<Result<postgres::Client, postgres::Error>>
where
    T: postgres::tls::MakeTlsConnect<postgres::Socket> + Send + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as postgres::tls::TlsConnect<postgres::Socket>>::Future: Send,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("scrobsync-connect".into())
        .spawn(move || {
            let _ = tx.send(cfg.connect(tls));
        })
        .ok()?;
    rx.recv_timeout(limit + Duration::from_secs(1)).ok()
}

/// An error of the source: the server's reason in one line (with its SQLSTATE), and whether it
/// is transient — worth retrying (see [`SourceError::transient`]).
#[derive(Debug)]
pub struct SourceError {
    msg: String,
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

fn is_transient_chain(e: &(dyn std::error::Error + 'static)) -> bool {
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

/// A source connection that can only read.
///
/// A session default (`default_transaction_read_only`) is not enough: a mapping's own SQL can
/// switch it off with `set_config(…, false)`, and every later statement of the session could
/// then write. Here each statement runs inside `START TRANSACTION READ ONLY`: PostgreSQL refuses
/// to make a transaction read-write once its first query has started ("transaction read-write
/// mode must be set before any query"), so nothing inside the statement can turn writing back on,
/// whatever it did to the session before. And every such transaction ends with a ROLLBACK, never
/// a COMMIT: the few writes PostgreSQL still allows in a read-only transaction (large objects
/// through `lo_from_bytea`, for one) are undone as well.
pub struct ReadOnlyClient(postgres::Client);

type Params<'a> = &'a [&'a (dyn postgres::types::ToSql + Sync)];

impl ReadOnlyClient {
    fn in_read_only<T>(
        &mut self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, SourceError> {
        let mut tx = self.0.build_transaction().read_only(true).start()?;
        let out = f(&mut tx)?;
        tx.rollback()?;
        Ok(out)
    }

    pub fn query(&mut self, sql: &str, params: Params) -> Result<Vec<postgres::Row>, SourceError> {
        self.in_read_only(|tx| tx.query(sql, params))
    }

    pub fn query_one(&mut self, sql: &str, params: Params) -> Result<postgres::Row, SourceError> {
        self.in_read_only(|tx| tx.query_one(sql, params))
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: Params,
    ) -> Result<Option<postgres::Row>, SourceError> {
        self.in_read_only(|tx| tx.query_opt(sql, params))
    }

    /// Runs a query and hands its rows to `f` one at a time, without holding them all.
    pub fn for_each_row(
        &mut self,
        sql: &str,
        mut f: impl FnMut(&postgres::Row) -> Result<()>,
    ) -> Result<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let err = SourceError::from;
        let mut tx = self
            .0
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(err)?;
        {
            let mut rows = tx.query_raw(sql, std::iter::empty::<i32>()).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                f(&row)?;
            }
        }
        tx.rollback().map_err(err)?;
        Ok(())
    }

    /// Prepares (parses and describes) a statement, for its column names and types.
    pub fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, SourceError> {
        self.in_read_only(|tx| tx.prepare(sql))
    }

    /// Runs `COPY (…) TO STDOUT` inside a read-only transaction and hands the stream to `read`.
    pub fn copy_out<T>(
        &mut self,
        sql: &str,
        read: impl FnOnce(&mut dyn std::io::BufRead) -> Result<T>,
    ) -> Result<T> {
        let mut tx = self
            .0
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(SourceError::from)?;
        let out = {
            let mut reader = tx.copy_out(sql).map_err(SourceError::from)?;
            read(&mut reader)?
        };
        tx.rollback().map_err(SourceError::from)?;
        Ok(out)
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUrl({})", self.redacted)
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Maps a connection error to a message that names the problem and the fix.
fn connect_message(e: &postgres::Error, url: &SourceUrl) -> String {
    let where_ = url.host_port();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD {
            return format!(
                "PostgreSQL at {where_} rejected the login for user '{}': wrong password; fix the password in the source URL",
                url.raw.username()
            );
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return format!(
                "PostgreSQL at {where_} refused user '{}' ({}); check the user name in the source URL and pg_hba.conf",
                url.raw.username(),
                one_line(db.message())
            );
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return format!(
                "database '{}' does not exist on {where_}; create it or fix the database name in the source URL",
                url.database()
            );
        }
        return format!(
            "cannot connect to PostgreSQL at {where_}: {}",
            one_line(db.message())
        );
    }
    let text = one_line(&e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => format!(
                    "cannot connect to PostgreSQL at {where_}: connection refused; start the server or fix host/port in the source URL"
                ),
                std::io::ErrorKind::TimedOut => format!(
                    "cannot connect to PostgreSQL at {where_}: timed out; check that the host is reachable"
                ),
                _ => format!("cannot connect to PostgreSQL at {where_}: {}", one_line(&io.to_string())),
            };
        }
        source = s.source();
    }
    if text.contains("password missing") {
        return format!(
            "PostgreSQL at {where_} asks for a password and the source URL has none; add it as postgresql://USER:PASSWORD@HOST/DB"
        );
    }
    format!("cannot connect to PostgreSQL at {where_}: {text}")
}

/// A connection error as a [`SourceError`]: one actionable line, classified for retries.
fn explain_connect_error(e: &postgres::Error, url: &SourceUrl) -> anyhow::Error {
    SourceError {
        msg: connect_message(e, url),
        transient: is_transient_chain(e),
        code: e.code().cloned(),
    }
    .into()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_in_userinfo_and_query() {
        let u = SourceUrl::parse("postgresql://bob:s3cr%40t@db.example:6543/music").unwrap();
        assert_eq!(u.redacted(), "postgresql://bob:***@db.example:6543/music");
        assert!(!format!("{u:?}").contains("s3cr"));
        assert_eq!(u.database(), "music");
        assert_eq!(u.host_port(), "db.example:6543");
        let q = SourceUrl::parse("postgres://bob@h/db?password=hunter2&sslmode=disable").unwrap();
        assert!(!q.redacted().contains("hunter2"), "{}", q.redacted());
        assert!(q.redacted().contains("sslmode=disable"));
    }

    #[test]
    fn rejects_other_schemes_without_echoing_input() {
        let e = SourceUrl::parse("mysql://u:topsecret@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(!e.contains("topsecret"));
        let e = SourceUrl::parse("not a url with topsecret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn connectorx_url_uses_binary_protocol() {
        let u = SourceUrl::parse("postgresql://u:p@h:5432/d?cxprotocol=csv").unwrap();
        let cx = u.connectorx_url();
        assert!(cx.contains("cxprotocol=binary"), "{cx}");
        assert!(!cx.contains("cxprotocol=csv"), "{cx}");
        assert!(
            cx.contains("options=-c%20default_transaction_read_only%3Don"),
            "{cx}"
        );
    }

    #[test]
    fn loopback_reads_go_without_tls_unless_asked() {
        use postgres::config::SslMode;
        let mode = |u: &str| {
            SourceUrl::parse(u)
                .unwrap()
                .config()
                .unwrap()
                .get_ssl_mode()
        };
        assert_eq!(mode("postgresql://u@127.0.0.1:5432/d"), SslMode::Disable);
        assert_eq!(mode("postgresql://u@localhost/d"), SslMode::Disable);
        assert_eq!(mode("postgresql://u@[::1]/d"), SslMode::Disable);
        assert_eq!(mode("postgresql://u@db.example/d"), SslMode::Prefer);
        assert_eq!(
            mode("postgresql://u@127.0.0.1/d?sslmode=require"),
            SslMode::Require
        );
    }
}
