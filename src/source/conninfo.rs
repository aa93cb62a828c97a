//! The source's connection parameters, resolved the way libpq (psql, pg_dump) resolves them:
//! a `postgresql://` URL or a `key=value` conninfo string, then the `PG*` environment variables
//! for whatever it leaves out, then libpq's defaults; the password from the source itself, then
//! `PGPASSWORD`, then the password file (`PGPASSFILE`, default `~/.pgpass`).
//!
//! Why not hand the string to the PostgreSQL client crate as it is: it reads neither the
//! environment nor a password file, and URL parameters must be decoded as libpq does (`%20` is a
//! space, `+` is a plus). It still does the connecting; this module only fills in its `Config`.

use anyhow::{anyhow, bail, Result};
use percent_encoding::percent_decode_str;
use std::path::{Path, PathBuf};

/// Where the password came from (for the message when the server rejects it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFrom {
    Source,
    Env,
    File,
    None,
}

impl PasswordFrom {
    pub fn describe(self) -> &'static str {
        match self {
            PasswordFrom::Source => "given in the source",
            PasswordFrom::Env => "from PGPASSWORD",
            PasswordFrom::File => "from the password file",
            PasswordFrom::None => "none given",
        }
    }
}

/// Resolved connection parameters. `Debug` never shows the password.
#[derive(Clone)]
pub struct ConnInfo {
    /// A host name, an IP address, or a Unix socket folder (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    pub password_from: PasswordFrom,
    /// Every other parameter (`sslmode`, `options`, `application_name`, `connect_timeout`,
    /// `sslrootcert`, …), decoded.
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnInfo({}@{}:{}/{})",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl ConnInfo {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set_default(&mut self, key: &str, value: Option<String>) {
        if self.param(key).is_none() {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                self.params.push((key.to_string(), v));
            }
        }
    }
}

/// What the source string gave, before the environment fills the rest.
#[derive(Default)]
struct Given {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    params: Vec<(String, String)>,
}

impl Given {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "host" => self.host = Some(value),
            "port" => self.port = Some(value),
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            _ => {
                self.params.retain(|(k, _)| k != key);
                self.params.push((key.to_string(), value));
            }
        }
    }
}

const EXPECTED: &str = "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE or key=value pairs such as 'host=HOST dbname=DATABASE'";

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Parses a `postgresql://` URL. Errors never echo the input (it may hold a password).
fn parse_url(input: &str) -> Result<Given> {
    let rest = input
        .strip_prefix("postgresql://")
        .or_else(|| input.strip_prefix("postgres://"))
        .expect("checked by the caller");
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut g = Given::default();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    g.user = Some(decode(u)).filter(|u| !u.is_empty());
                    g.password = Some(decode(p));
                }
                None => g.user = Some(decode(userinfo)).filter(|u| !u.is_empty()),
            }
            hp
        }
        None => authority,
    };
    if hostport.contains(',') {
        bail!("invalid source URL: several hosts are not supported; {EXPECTED}");
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("invalid source URL: unclosed '[' in the host; {EXPECTED}"))?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (decode(h), Some(p.to_string())),
            None => (decode(hostport), None),
        }
    };
    g.host = Some(host).filter(|h| !h.is_empty());
    g.port = port.filter(|p| !p.is_empty());
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        g.dbname = Some(decode(p));
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        g.set(&decode(k), decode(v));
    }
    Ok(g)
}

/// Parses a libpq `key=value` conninfo string (values may be single-quoted, with `\'` and `\\`).
fn parse_keywords(input: &str) -> Result<Given> {
    let mut g = Given::default();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            bail!("invalid source: a word without '=' (key=value expected; quote values with spaces in '…'); {EXPECTED}");
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("invalid source: a quoted value is not closed; {EXPECTED}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        g.set(&key, value);
    }
    Ok(g)
}

/// The current OS user's name (libpq's default user).
fn os_user() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; the name is copied at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return std::env::var("USER").ok();
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// libpq's default host: its Unix socket folder when it exists, else localhost.
fn default_host() -> String {
    ["/var/run/postgresql", "/tmp"]
        .iter()
        .find(|d| Path::new(d).join(".s.PGSQL.5432").exists())
        .map_or_else(|| "localhost".to_string(), |d| d.to_string())
}

/// Resolves a source string (URL, conninfo, or empty: everything from the environment) with
/// `env` as the environment.
pub fn resolve(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnInfo> {
    let input = input.trim();
    let given = if input.starts_with("postgresql://") || input.starts_with("postgres://") {
        parse_url(input)?
    } else if input.contains("://") {
        let scheme = input.split("://").next().unwrap_or("");
        bail!("invalid source URL: scheme '{scheme}' is not supported; {EXPECTED}");
    } else if input.is_empty() || input.contains('=') {
        parse_keywords(input)?
    } else {
        bail!("invalid source: neither a URL nor key=value pairs; {EXPECTED}");
    };
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let host = given
        .host
        .or_else(|| env_nonempty("PGHOST"))
        .unwrap_or_else(default_host);
    let port_text = given.port.or_else(|| env_nonempty("PGPORT"));
    let port = match port_text {
        Some(p) => p.parse::<u16>().map_err(|_| {
            anyhow!("invalid port in the source (or PGPORT); give a number such as 5432 (in a URL, a password with / ? or @ must be percent-encoded, e.g. %2F)")
        })?,
        None => 5432,
    };
    let user = given
        .user
        .or_else(|| env_nonempty("PGUSER"))
        .or_else(os_user)
        .ok_or_else(|| {
            anyhow!("no user name in the source, PGUSER or the system; add USER@ to the source URL")
        })?;
    let dbname = given
        .dbname
        .or_else(|| env_nonempty("PGDATABASE"))
        .unwrap_or_else(|| user.clone());
    let mut info = ConnInfo {
        host,
        port,
        user,
        dbname,
        password: None,
        password_from: PasswordFrom::None,
        params: given.params,
    };
    info.set_default("sslmode", env("PGSSLMODE"));
    info.set_default("connect_timeout", env("PGCONNECT_TIMEOUT"));
    info.set_default("application_name", env("PGAPPNAME"));
    info.set_default("application_name", Some("scrobsync".into()));
    if let Some(p) = given.password {
        info.password = Some(p);
        info.password_from = PasswordFrom::Source;
    } else if let Some(p) = env("PGPASSWORD") {
        info.password = Some(p);
        info.password_from = PasswordFrom::Env;
    } else {
        let file = env_nonempty("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env_nonempty("HOME").map(|h| Path::new(&h).join(".pgpass")));
        if let Some(file) = file {
            if let Some(p) = password_from_file(&file, &info) {
                info.password = Some(p);
                info.password_from = PasswordFrom::File;
            }
        }
    }
    Ok(info)
}

/// The password for `info` from a libpq password file (`host:port:database:user:password`,
/// `*` matches anything, `\:` and `\\` escape). Like libpq, a file that group or others may
/// read is ignored, with a warning.
fn password_from_file(path: &Path, info: &ConnInfo) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access and is ignored; make it private with chmod 0600",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // A Unix socket folder matches the entry `localhost`, as in libpq.
    let host = if info.host.starts_with('/') {
        "localhost"
    } else {
        info.host.as_str()
    };
    let port = info.port.to_string();
    let wanted = [
        host,
        port.as_str(),
        info.dbname.as_str(),
        info.user.as_str(),
    ];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

/// Splits a password-file line at unescaped colons, removing the escapes.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn url_parameters_are_decoded_like_libpq() {
        let i = resolve(
            "postgresql://bo%40b:p%3Ass@db.example:6543/mu%20sic?options=-c%20statement_timeout%3D300&sslmode=require&application_name=a+b",
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(i.user, "bo@b");
        assert_eq!(i.password.as_deref(), Some("p:ss"));
        assert_eq!((i.host.as_str(), i.port), ("db.example", 6543));
        assert_eq!(i.dbname, "mu sic");
        assert_eq!(i.param("options"), Some("-c statement_timeout=300"));
        assert_eq!(i.param("application_name"), Some("a+b"));
        let d = resolve("postgresql://u@h/d", &env_of(&[])).unwrap();
        assert_eq!(d.param("application_name"), Some("scrobsync"));
    }

    #[test]
    fn keywords_and_environment_fill_in() {
        let env = env_of(&[
            ("PGHOST", "10.0.0.9"),
            ("PGPORT", "5433"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGAPPNAME", "mine"),
        ]);
        let i = resolve("host=h1 dbname='my db' options='-c a=\\'b\\''", &env).unwrap();
        assert_eq!(i.host, "h1");
        assert_eq!(i.port, 5433);
        assert_eq!(i.user, "envuser");
        assert_eq!(i.dbname, "my db");
        assert_eq!(i.param("options"), Some("-c a='b'"));
        assert_eq!(i.password.as_deref(), Some("envpw"));
        assert_eq!(i.password_from, PasswordFrom::Env);
        assert_eq!(i.param("application_name"), Some("mine"));
        let i = resolve("", &env).unwrap();
        assert_eq!((i.host.as_str(), i.dbname.as_str()), ("10.0.0.9", "envdb"));
        let i = resolve("postgresql:///music", &env).unwrap();
        assert_eq!((i.host.as_str(), i.dbname.as_str()), ("10.0.0.9", "music"));
        assert!(resolve("mysql://u@h/d", &env).is_err());
        assert!(resolve("just words", &env).is_err());
    }

    #[test]
    fn password_file_lines_match_like_libpq() {
        assert_eq!(
            split_pgpass(r"h\:x:5432:*:u:pa\:ss:word"),
            vec!["h:x", "5432", "*", "u", "pa:ss:word"]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\n127.0.0.1:*:music:bob:s3cret\n*:*:*:*:fallback\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let info = |db: &str| ConnInfo {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "bob".into(),
            dbname: db.into(),
            password: None,
            password_from: PasswordFrom::None,
            params: vec![],
        };
        assert_eq!(
            password_from_file(&file, &info("music")).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            password_from_file(&file, &info("other")).as_deref(),
            Some("fallback")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            password_from_file(&file, &info("music")),
            None,
            "world-readable: ignored"
        );
    }
}

#[cfg(test)]
mod leak_tests {
    use super::resolve;

    #[test]
    fn malformed_sources_never_echo_their_text() {
        for bad in [
            "postgresql://bob:pa?ss@h/db",
            "postgresql://bob:pa/ss@h:54x32/db",
            "host=h password=my secret",
            "host=h password='unclosed secret",
        ] {
            if let Err(e) = resolve(bad, &|_| None) {
                let e = e.to_string();
                for part in ["pa", "ss", "secret", "54x32"] {
                    assert!(!e.contains(&format!("'{part}")), "{bad}: {e}");
                }
                assert!(!e.contains("secret"), "{bad}: {e}");
            }
        }
    }
}
