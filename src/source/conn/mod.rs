//! Source URL handling (connecting: [`client`], the read-only session: [`session`], error
//! texts: [`error`]). The URL carries the password, so it is kept private: everything that
//! may reach a log, an error or `Debug` output uses the redacted form.

mod client;
pub mod error;
pub mod session;

use super::conninfo::{self, ConnInfo};
use anyhow::{anyhow, bail, Result};
use std::fmt;
use std::time::Duration;

/// Session options of every reading connection: every transaction read-only, and no JIT
/// compilation. scrobsync's statements stream columns with next to no expressions, so JIT has
/// nothing to speed up, while compiling a large expression can take minutes inside LLVM, where
/// PostgreSQL neither cancels nor terminates the backend.
const READ_ONLY: &str = "-c default_transaction_read_only=on -c jit=off";

/// Connection parameters scrobsync understands besides host, port, user, password and dbname.
const KNOWN_PARAMS: [&str; 10] = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "connect_timeout",
    "target_session_attrs",
    "channel_binding",
    "keepalives",
];

/// The source: resolved connection parameters (see [`conninfo`]) with the secret kept out of
/// every printable form.
#[derive(Clone)]
pub struct SourceUrl {
    info: ConnInfo,
    /// What the user gave (for a child process of ours, which resolves it the same way).
    raw: String,
    redacted: String,
}

/// Characters escaped in the parts of a URL we build.
const URL_PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_PART).to_string()
}

impl SourceUrl {
    /// Resolves a source like libpq: a URL or `key=value` conninfo (or an empty string), its
    /// service, the `PG*` environment variables, the password file. Errors never echo the input.
    pub fn parse(input: &str) -> Result<Self> {
        Self::parse_with(input, None)
    }

    /// Like [`SourceUrl::parse`], with `--password-command` run (once, here) when nothing else
    /// gives a password; see [`conninfo::resolve_with`].
    pub fn parse_with(input: &str, password_command: Option<&str>) -> Result<Self> {
        Self::resolve_with(input, &|k| std::env::var(k).ok(), password_command)
    }

    /// Like [`SourceUrl::parse`] with `env` as the environment.
    pub fn resolve(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        Self::resolve_with(input, env, None)
    }

    /// Like [`SourceUrl::parse_with`] with `env` as the environment.
    pub fn resolve_with(
        input: &str,
        env: &dyn Fn(&str) -> Option<String>,
        password_command: Option<&str>,
    ) -> Result<Self> {
        let info = conninfo::resolve_with(input, env, password_command)?;
        if let Some((k, _)) = info
            .params
            .iter()
            .find(|(k, _)| !KNOWN_PARAMS.contains(&k.as_str()) && k != "cxprotocol")
        {
            // Only a plain parameter name is echoed: anything else may be a misplaced password.
            let shown = if k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                format!(" '{k}'")
            } else {
                String::new()
            };
            bail!(
                "unknown connection parameter{shown} in the source or its service; scrobsync understands {}",
                KNOWN_PARAMS.join(", ")
            );
        }
        Ok(Self {
            redacted: Self::url_of(&info, false, &[]),
            info,
            raw: input.to_string(),
        })
    }

    /// A `postgresql://` URL of `info`; the password only with `with_password`.
    fn url_of(info: &ConnInfo, with_password: bool, extra: &[(&str, &str)]) -> String {
        let host = if info.host.contains(':') {
            format!("[{}]", info.host)
        } else {
            enc(&info.host)
        };
        let userinfo = match (&info.password, with_password) {
            (Some(p), true) => format!("{}:{}", enc(&info.user), enc(p)),
            // A password the source itself carries shows as `***`.
            (Some(_), false) if info.password_from == conninfo::PasswordFrom::Source => {
                format!("{}:***", enc(&info.user))
            }
            _ => enc(&info.user),
        };
        let mut url = format!(
            "postgresql://{userinfo}@{host}:{}/{}",
            info.port,
            enc(&info.dbname)
        );
        let params: Vec<String> = info
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| *k != "application_name" || with_password)
            .chain(extra.iter().copied())
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }

    /// The source as a URL without its password: safe to print.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The database name, for messages.
    pub fn database(&self) -> String {
        self.info.dbname.clone()
    }

    /// The user name, for messages.
    pub fn user(&self) -> &str {
        &self.info.user
    }

    /// (host, port, database) of the server, for the source identity.
    pub fn server_identity(&self) -> (String, u16, String) {
        (
            self.info.host.clone(),
            self.info.port,
            self.info.dbname.clone(),
        )
    }

    /// `host:port`, for messages.
    pub fn host_port(&self) -> String {
        if self.info.host.contains(':') {
            format!("[{}]:{}", self.info.host, self.info.port)
        } else {
            format!("{}:{}", self.info.host, self.info.port)
        }
    }

    /// The URL handed to connectorx: the same server, binary `COPY` protocol, read-only
    /// transactions, scrobsync's TLS default.
    pub(crate) fn connectorx_url(&self) -> String {
        let mut info = self.info.clone();
        let options = match info.param("options") {
            Some(o) => format!("{o} {READ_ONLY}"),
            None => READ_ONLY.to_string(),
        };
        info.params.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "options" | "cxprotocol" | "sslmode" | "sslrootcert" | "sslcert" | "sslkey"
            )
        });
        let sslmode = self.ssl_mode_name();
        Self::url_of(
            &info,
            true,
            &[
                ("options", options.as_str()),
                ("sslmode", sslmode),
                ("cxprotocol", "binary"),
            ],
        )
    }

    /// The source with its password, to hand to a child process of ours (`bench`), which
    /// resolves it the same way. Never print it.
    pub fn expose_for_child(&self) -> String {
        // A password the command printed goes along: the child must not run it again.
        if self.raw.trim().is_empty() || self.info.password_from == conninfo::PasswordFrom::Command
        {
            Self::url_of(&self.info, true, &[])
        } else {
            self.raw.clone()
        }
    }

    /// The same server with another database, e.g. to create the demo database from `postgres`.
    pub fn with_database(&self, db: &str) -> Self {
        let mut info = self.info.clone();
        info.dbname = db.to_string();
        Self {
            redacted: Self::url_of(&info, false, &[]),
            raw: Self::url_of(&info, true, &[]),
            info,
        }
    }

    /// The host is this machine (a loopback address, `localhost`, or a Unix socket).
    fn is_local(&self) -> bool {
        let h = self.info.host.as_str();
        h.starts_with('/')
            || h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `sslmode` as given, else scrobsync's default: no TLS to this machine (libpq's `prefer`
    /// would encrypt a local bulk read for nothing: measured here, TLS on 127.0.0.1 cost 1 s
    /// of a 17.5 s load of 5M rows), libpq's `prefer` elsewhere.
    fn ssl_mode_name(&self) -> &str {
        match self.info.param("sslmode") {
            Some(m) => m,
            None if self.is_local() => "disable",
            None => "prefer",
        }
    }

    fn config(&self) -> Result<tokio_postgres::Config> {
        use postgres::config::SslMode;
        let i = &self.info;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&i.host)
            .port(i.port)
            .user(&i.user)
            .dbname(&i.dbname);
        if let Some(p) = &i.password {
            cfg.password(p);
        }
        if let Some(o) = i.param("options") {
            cfg.options(o);
        }
        if let Some(a) = i.param("application_name") {
            cfg.application_name(a);
        }
        let mode = self.ssl_mode_name();
        cfg.ssl_mode(match mode {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => SslMode::Require,
            _ => bail!(
                "invalid sslmode in the source (or PGSSLMODE); use disable, prefer, require, verify-ca or verify-full"
            ),
        });
        // As in libpq, a Unix socket is never encrypted, whatever sslmode asks.
        if i.host.starts_with('/') || i.host.starts_with('@') {
            cfg.ssl_mode(SslMode::Disable);
        } else if mode.starts_with("verify") && self.root_certificate().is_none() {
            bail!(
                "sslmode={mode} needs the server's root certificate: give sslrootcert=FILE, or put it in ~/.postgresql/root.crt"
            );
        }
        if i.param("sslcert").is_some() || i.param("sslkey").is_some() {
            bail!("client certificates (sslcert, sslkey) are not supported; authenticate with a password");
        }
        if let Some(cb) = i.param("channel_binding") {
            use postgres::config::ChannelBinding;
            cfg.channel_binding(match cb {
                "disable" => ChannelBinding::Disable,
                "prefer" => ChannelBinding::Prefer,
                "require" => ChannelBinding::Require,
                _ => bail!("invalid channel_binding in the source; use disable, prefer or require"),
            });
        }
        // Checked after connecting (see `connect_reader`): the reader's own session is
        // read-only, so only the server's recovery state says what the server is.
        self.wanted_server()?;
        // A server that never answers must become an error, not a hang: a connect timeout
        // (`connect_timeout` in the source or PGCONNECT_TIMEOUT wins; as in libpq, 0 waits for
        // ever and 1 means 2) and TCP keepalives, so a dead peer is noticed.
        if let Some(t) = self.connect_limit()? {
            cfg.connect_timeout(t);
        }
        let keepalives = i.param("keepalives") != Some("0");
        cfg.keepalives(keepalives);
        if keepalives {
            cfg.keepalives_idle(Duration::from_secs(30))
                .keepalives_interval(Duration::from_secs(10))
                .keepalives_retries(3);
        }
        Ok(cfg)
    }

    /// What `target_session_attrs` asks of the server: `Some(true)` a standby (`standby`,
    /// `read-only`: the reader's own session is always read-only, so a read-only server is
    /// one in recovery), `Some(false)` a primary (`primary`, `read-write`), `None` anything
    /// (`any`, `prefer-standby`: with one host there is nothing to prefer).
    fn wanted_server(&self) -> Result<Option<bool>> {
        Ok(match self.info.param("target_session_attrs") {
            None | Some("any") | Some("prefer-standby") => None,
            Some("standby") | Some("read-only") => Some(true),
            Some("primary") | Some("read-write") => Some(false),
            Some(_) => bail!(
                "invalid target_session_attrs in the source; use any, read-write, read-only, primary, standby or prefer-standby"
            ),
        })
    }

    /// How long a connection attempt may take; `None`: no limit.
    fn connect_limit(&self) -> Result<Option<Duration>> {
        Ok(match self.info.param("connect_timeout") {
            Some(t) => {
                let secs: i64 = t.trim().parse().map_err(|_| {
                    anyhow!("invalid connect_timeout in the source (or PGCONNECT_TIMEOUT); give whole seconds")
                })?;
                (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64))
            }
            None => Some(client::CONNECT_TIMEOUT),
        })
    }

    /// The root certificate that verifies the server: `sslrootcert`, else
    /// `~/.postgresql/root.crt` when it exists (libpq's default).
    fn root_certificate(&self) -> Option<String> {
        self.info
            .param("sslrootcert")
            .map(str::to_string)
            .or_else(|| {
                let home = std::env::var_os("HOME")?;
                let p = std::path::Path::new(&home).join(".postgresql/root.crt");
                p.exists().then(|| p.to_string_lossy().into_owned())
            })
    }
}

pub use error::{describe_error, explain_query_error, is_transient, one_line, SourceError};
pub use session::ReadOnlyClient;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(u: &str) -> SourceUrl {
        SourceUrl::resolve(u, &|_| None).unwrap()
    }

    #[test]
    fn bad_percent_encoding_is_refused_without_echo() {
        for bad in [
            "postgresql://u:Pw%zz@h/db",
            "postgresql://u@h/d%4",
            "postgresql://u@h/db?x=%",
        ] {
            let e = SourceUrl::resolve(bad, &|_| None)
                .expect_err(bad)
                .to_string();
            assert!(e.contains("percent-encoding") && !e.contains("Pw"), "{e}");
        }
        assert!(SourceUrl::resolve("postgresql://u:a%25b@h/db", &|_| None).is_ok());
    }

    #[test]
    fn redacts_password_in_userinfo_and_query() {
        let u = parse("postgresql://bob:s3cr%40t@db.example:6543/music");
        assert_eq!(u.redacted(), "postgresql://bob:***@db.example:6543/music");
        assert!(!format!("{u:?}").contains("s3cr"));
        assert_eq!(u.database(), "music");
        assert_eq!(u.host_port(), "db.example:6543");
        let q = parse("postgres://bob@h/db?password=hunter2&sslmode=disable");
        assert!(!q.redacted().contains("hunter2"), "{}", q.redacted());
        assert!(q.redacted().contains("sslmode=disable"));
        assert!(q.connectorx_url().contains("hunter2"));
    }

    #[test]
    fn rejects_other_schemes_and_unknown_parameters_without_echoing_input() {
        for bad in [
            "mysql://u:topsecret@h/db",
            "not a url with topsecret",
            "postgresql://u:topsecret@h/db?sslmdoe=require",
        ] {
            let e = SourceUrl::resolve(bad, &|_| None).unwrap_err().to_string();
            assert!(!e.contains("topsecret"), "{e}");
        }
    }

    #[test]
    fn connectorx_url_uses_binary_protocol() {
        let u = parse("postgresql://u:p@h:5432/d?cxprotocol=csv");
        let cx = u.connectorx_url();
        assert!(cx.contains("cxprotocol=binary"), "{cx}");
        assert!(!cx.contains("cxprotocol=csv"), "{cx}");
        assert!(
            cx.contains("options=-c%20default_transaction_read_only%3Don"),
            "{cx}"
        );
    }

    #[test]
    fn libpq_timeouts_and_certificate_checks() {
        let limit = |u: &str| parse(u).connect_limit().unwrap();
        assert_eq!(limit("postgresql://u@h/d"), Some(Duration::from_secs(10)));
        assert_eq!(
            limit("postgresql://u@h/d?connect_timeout=0"),
            None,
            "0 waits for ever"
        );
        assert_eq!(
            limit("postgresql://u@h/d?connect_timeout=1"),
            Some(Duration::from_secs(2))
        );
        let no_root =
            SourceUrl::resolve("postgresql://u@db.example/d?sslmode=verify-full", &|_| None)
                .unwrap();
        if no_root.root_certificate().is_none() {
            let err = no_root.config().unwrap_err().to_string();
            assert!(err.contains("sslrootcert"), "{err}");
        }
        assert!(parse("postgresql://u@h/d?sslcert=c.pem").config().is_err());
    }

    #[test]
    fn loopback_reads_go_without_tls_unless_asked() {
        use postgres::config::SslMode;
        let mode = |u: &str| parse(u).config().unwrap().get_ssl_mode();
        assert_eq!(mode("postgresql://u@127.0.0.1:5432/d"), SslMode::Disable);
        assert_eq!(mode("postgresql://u@localhost/d"), SslMode::Disable);
        assert_eq!(mode("postgresql://u@[::1]/d"), SslMode::Disable);
        assert_eq!(mode("host=/var/run/postgresql user=u"), SslMode::Disable);
        assert_eq!(mode("postgresql://u@db.example/d"), SslMode::Prefer);
        assert_eq!(
            mode("postgresql://u@127.0.0.1/d?sslmode=require"),
            SslMode::Require
        );
    }
}
