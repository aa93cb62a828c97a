//! Connecting to the source: the read-only session, plain clients, TLS, a connection
//! attempt that gives up in time, and connection errors in one actionable line.

use super::error::{is_transient_chain, one_line, SourceError};
use super::session::ReadOnlyClient;
use super::{SourceUrl, READ_ONLY};
use anyhow::{anyhow, bail, Result};
use postgres::error::SqlState;
use std::time::Duration;

impl SourceUrl {
    /// Opens a connection for reading the source: every statement sent through it runs in a
    /// transaction that is read-only from its start, the session default is read-only too, and
    /// no wait on it outlasts the read timeout or a Ctrl-C (see [`ReadOnlyClient`]).
    pub fn connect_reader(&self) -> Result<ReadOnlyClient> {
        use super::session::{self, Failure};
        let mut cfg = self.config()?;
        let opts = match cfg.get_options() {
            Some(o) => format!("{o} {READ_ONLY}"),
            None => READ_ONLY.to_string(),
        };
        cfg.options(&opts);
        let limit = self.connect_limit()?;
        let tls = match cfg.get_ssl_mode() {
            postgres::config::SslMode::Disable => None,
            _ => Some(self.tls_connector()?),
        };
        let attempt = session::connect(session::Connect {
            config: &cfg,
            host: &self.info.host,
            port: self.info.port,
            tls,
            keepalives: cfg.get_keepalives(),
            connect_limit: limit,
        });
        let reason = match attempt {
            Ok(mut client) => {
                if let Some(want_standby) = self.wanted_server()? {
                    let standby: bool = client.query_one("SELECT pg_is_in_recovery()", &[])?.get(0);
                    if standby != want_standby {
                        bail!(
                            "PostgreSQL at {} is {}, and target_session_attrs={} asks for {}; point the source at another server or drop that parameter",
                            self.host_port(),
                            if standby { "a standby" } else { "a primary (not read-only)" },
                            self.info.param("target_session_attrs").unwrap_or_default(),
                            if want_standby { "a standby" } else { "a primary" }
                        );
                    }
                }
                return Ok(client);
            }
            Err(Failure::Pg(e)) => return Err(explain_connect_error(&e, self)),
            Err(Failure::Interrupted) => return Err(crate::cancel::Interrupted.into()),
            Err(Failure::Io(e)) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused; start the server or fix host/port in the source URL".to_string(),
                _ => one_line(&e.to_string()),
            },
            Err(Failure::TimedOut) => format!(
                "no answer within {} s; check that the server is up (connect_timeout in the URL sets the limit)",
                limit.map_or(0, |l| l.as_secs())
            ),
        };
        Err(SourceError {
            msg: format!(
                "cannot connect to PostgreSQL at {}: {reason}",
                self.host_port()
            ),
            transient: true,
            code: None,
        }
        .into())
    }

    /// Opens a plain client connection, turning the usual failures into one actionable line.
    pub fn connect(&self) -> Result<postgres::Client> {
        self.connect_with(&postgres::Config::from(self.config()?))
    }

    /// The TLS connector for `prefer`/`require`/`verify-*`: without a root certificate it
    /// encrypts without verifying (as libpq does); with `sslrootcert=FILE` (or
    /// `~/.postgresql/root.crt` for the verify modes) the server certificate is verified.
    fn tls_connector(&self) -> Result<postgres_openssl::MakeTlsConnector> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let mut b = SslConnector::builder(SslMethod::tls())
            .map_err(|e| anyhow!("cannot set up TLS: {e}"))?;
        let root = if self.ssl_mode_name().starts_with("verify")
            || self.info.param("sslrootcert").is_some()
        {
            self.root_certificate()
        } else {
            None
        };
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
        Ok(tls)
    }

    /// Connects with TLS unless `sslmode=disable`: `prefer` and `require` encrypt without
    /// verifying the certificate (as libpq does without a root certificate); with
    /// `sslrootcert=FILE` the server certificate is verified against it.
    fn connect_with(&self, cfg: &postgres::Config) -> Result<postgres::Client> {
        use postgres::config::SslMode;
        let limit = self.connect_limit()?;
        let result = if cfg.get_ssl_mode() == SslMode::Disable {
            connect_within(cfg.clone(), postgres::NoTls, limit)
        } else {
            connect_within(cfg.clone(), self.tls_connector()?, limit)
        };
        match result {
            Some(r) => r.map_err(|e| explain_connect_error(&e, self)),
            None => Err(SourceError {
                msg: format!(
                    "cannot connect to PostgreSQL at {}: no answer within {} s; check that the server is up (connect_timeout in the URL sets the limit)",
                    self.host_port(),
                    limit.map_or(0, |l| l.as_secs())
                ),
                transient: true,
                code: None,
            }
            .into()),
        }
    }
}

/// How long a connection attempt may take, unless the URL says `connect_timeout`.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects on a helper thread and gives up after `limit` (plus a second): the client's own
/// timeout covers the TCP connect only, not a server that accepts and then never answers.
/// `None`: no answer in time (the helper thread ends when the peer closes).
fn connect_within<T>(
    cfg: postgres::Config,
    tls: T,
    limit: Option<Duration>,
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
    match limit {
        Some(l) => rx.recv_timeout(l + Duration::from_secs(1)).ok(),
        None => rx.recv().ok(),
    }
}

/// Maps a connection error to a message that names the problem and the fix.
fn connect_message(e: &postgres::Error, url: &SourceUrl) -> String {
    let where_ = url.host_port();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD {
            return format!(
                "PostgreSQL at {where_} rejected the password for user '{}' (wrong password, {}); fix it where it came from",
                url.user(),
                url.info.password_from.describe()
            );
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return format!(
                "PostgreSQL at {where_} refused user '{}' ({}); check the user name in the source URL and pg_hba.conf",
                url.user(),
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
    if full_text(e).contains("password missing") {
        return format!(
            "PostgreSQL at {where_} asks for a password for user '{}' and none was given; set PGPASSWORD, add a line HOST:PORT:DATABASE:USER:PASSWORD to ~/.pgpass (mode 0600; or the file PGPASSFILE names), or put it in the source URL",
            url.user()
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
    format!("cannot connect to PostgreSQL at {where_}: {text}")
}

/// An error with all its causes, in one string.
fn full_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
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
