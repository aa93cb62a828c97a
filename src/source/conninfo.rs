//! The source's connection parameters, resolved the way libpq (psql, pg_dump) resolves them:
//! a `postgresql://` URL or a `key=value` conninfo string, then the service it names
//! (`service=NAME`, or `PGSERVICE`; see [`super::service`]), then the `PG*` environment variables
//! for whatever they leave out, then libpq's defaults. The password: from the source itself,
//! else its service, else `PGPASSWORD`, else `--password-command` (see [`super::password`]),
//! else the password file (`PGPASSFILE`, default `~/.pgpass`); an empty one counts as none.
//!
//! Why not hand the string to the PostgreSQL client crate as it is: it reads neither the
//! environment, nor service files, nor a password file, and URL parameters must be decoded as
//! libpq decodes them (`%20` is a space, `+` is a plus). It still does the connecting; this
//! module only fills in its `Config`.

use anyhow::{anyhow, bail, Result};
use percent_encoding::percent_decode_str;
use std::path::{Path, PathBuf};

/// Where the password came from (for the message when the server rejects it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFrom {
    Source,
    Service,
    Env,
    Command,
    File,
    None,
}

impl PasswordFrom {
    pub fn describe(self) -> &'static str {
        match self {
            PasswordFrom::Source => "given in the source",
            PasswordFrom::Service => "from the service file",
            PasswordFrom::Env => "from PGPASSWORD",
            PasswordFrom::Command => "from the password command",
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

/// What the source string (or its service) gave, before the environment fills the rest.
#[derive(Default)]
struct Given {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    service: Option<String>,
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
            "service" => self.service = Some(value),
            _ => {
                self.params.retain(|(k, _)| k != key);
                self.params.push((key.to_string(), value));
            }
        }
    }

    /// Takes from `other` what `self` does not give (libpq: the source wins over its service).
    /// Not the password: [`choose_password`] needs to know where it came from.
    fn fill_from(&mut self, other: Given) {
        fn fill(mine: &mut Option<String>, theirs: Option<String>) {
            if mine.is_none() {
                *mine = theirs;
            }
        }
        fill(&mut self.host, other.host);
        fill(&mut self.port, other.port);
        fill(&mut self.user, other.user);
        fill(&mut self.dbname, other.dbname);
        for (k, v) in other.params {
            if !self.params.iter().any(|(mine, _)| *mine == k) {
                self.params.push((k, v));
            }
        }
    }
}

const EXPECTED: &str = "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE or key=value pairs such as 'host=HOST dbname=DATABASE'";

/// Decodes a URL part; like libpq, a `%` not followed by two hex digits is an error.
fn decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            bail!("invalid percent-encoding in the source URL: a % must be followed by two hex digits (write %25 for a %)");
        }
    }
    Ok(percent_decode_str(s).decode_utf8_lossy().into_owned())
}

/// Parses a `postgresql://` URL. Errors never echo the input (it may hold a password).
fn parse_url(input: &str) -> Result<Given> {
    let Some(rest) = input
        .strip_prefix("postgresql://")
        .or_else(|| input.strip_prefix("postgres://"))
    else {
        bail!("invalid source URL: {EXPECTED}");
    };
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
                    g.user = Some(decode(u)?).filter(|u| !u.is_empty());
                    g.password = Some(decode(p)?);
                }
                None => g.user = Some(decode(userinfo)?).filter(|u| !u.is_empty()),
            }
            hp
        }
        None => authority,
    };
    // libpq takes a `#` literally, but in a URL it starts a fragment, which a user may have
    // meant as a comment or pasted from a browser; a `#` in the password stays allowed.
    if [Some(hostport), path, query]
        .into_iter()
        .flatten()
        .any(|part| part.contains('#'))
    {
        bail!("invalid source URL: a '#' after the user and password (a URL fragment?); PostgreSQL URLs have none: remove it, or write a '#' in the database name or a parameter as %23");
    }
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
            Some((h, p)) => (decode(h)?, Some(p.to_string())),
            None => (decode(hostport)?, None),
        }
    };
    g.host = Some(host).filter(|h| !h.is_empty());
    g.port = port.filter(|p| !p.is_empty());
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        g.dbname = Some(decode(p)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        g.set(&decode(k)?, decode(v)?);
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
/// `env` as the environment, without a password command.
pub fn resolve(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnInfo> {
    resolve_with(input, env, None)
}

/// Like [`resolve`], with `password_command` (`--password-command`) run when the source, its
/// service and `PGPASSWORD` give no password — once: the result holds the password.
pub fn resolve_with(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
    password_command: Option<&str>,
) -> Result<ConnInfo> {
    let mut given = parse_source(input)?;
    let source_password = given.password.take();
    let service_password = apply_service(&mut given, env)?;
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let host = given
        .host
        .filter(|h| !h.is_empty())
        .or_else(|| env_nonempty("PGHOST"))
        .unwrap_or_else(default_host);
    let port_text = given.port.or_else(|| env_nonempty("PGPORT"));
    let port = match port_text {
        Some(p) => p.parse::<u16>().map_err(|_| {
            anyhow!("invalid port in the source (its service, or PGPORT); give a number such as 5432 (in a URL, a password with / ? or @ must be percent-encoded, e.g. %2F)")
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
    let offered = [
        (source_password, PasswordFrom::Source),
        (service_password, PasswordFrom::Service),
        (env("PGPASSWORD"), PasswordFrom::Env),
    ];
    (info.password, info.password_from) = choose_password(offered, password_command, &info, env)?;
    Ok(info)
}

/// The source string parsed as a URL or as `key=value` pairs (an empty one gives nothing).
fn parse_source(input: &str) -> Result<Given> {
    let input = input.trim();
    // A URL starts with a scheme; `password=a://b` is a key=value source.
    let scheme = input.split_once("://").map(|(s, _)| s).filter(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    match scheme {
        Some("postgresql" | "postgres") => parse_url(input),
        Some(scheme) => {
            bail!("invalid source URL: scheme '{scheme}' is not supported; {EXPECTED}")
        }
        None if input.is_empty() || input.contains('=') => parse_keywords(input),
        None => bail!("invalid source: neither a URL nor key=value pairs; {EXPECTED}"),
    }
}

/// Fills what `given` leaves out from its service (`service=` in the source, else
/// `PGSERVICE`), and returns the service's password. libpq's order: the source wins over the
/// service, the service over the environment.
fn apply_service(
    given: &mut Given,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>> {
    let name = given
        .service
        .take()
        .or_else(|| env("PGSERVICE"))
        .filter(|n| !n.is_empty());
    let Some(name) = name else {
        return Ok(None);
    };
    let mut from_service = Given::default();
    for (k, v) in super::service::lookup(&name, env)? {
        from_service.set(&k, v);
    }
    let password = from_service.password.take();
    given.fill_from(from_service);
    Ok(password)
}

/// The first non-empty password `offered` (in order of precedence), else the password
/// command's, else the password file's. An empty password counts as none, as in libpq
/// (`postgresql://me:@host/db` falls back like `postgresql://me@host/db`).
fn choose_password(
    offered: [(Option<String>, PasswordFrom); 3],
    password_command: Option<&str>,
    info: &ConnInfo,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<String>, PasswordFrom)> {
    if let Some((p, from)) = offered
        .into_iter()
        .find_map(|(p, from)| p.filter(|p| !p.is_empty()).map(|p| (p, from)))
    {
        return Ok((Some(p), from));
    }
    if let Some(command) = password_command.filter(|c| !c.trim().is_empty()) {
        return Ok((
            Some(super::password::from_command(command)?),
            PasswordFrom::Command,
        ));
    }
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let file = env_nonempty("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env_nonempty("HOME").map(|h| Path::new(&h).join(".pgpass")));
    Ok(
        match file.and_then(|f| super::password::from_file(&f, info)) {
            Some(p) => (Some(p), PasswordFrom::File),
            None => (None, PasswordFrom::None),
        },
    )
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

    fn env_map(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        let vars: std::collections::HashMap<&str, String> = pairs.into_iter().collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn empty_passwords_count_as_none_like_libpq() {
        let env = env_of(&[("PGPASSWORD", "envpw")]);
        for src in [
            "postgresql://postgres:@h/db",
            "postgresql://postgres@h/db?password=",
            "host=h user=postgres password=''",
        ] {
            let i = resolve(src, &env).unwrap();
            assert_eq!(i.password.as_deref(), Some("envpw"), "{src}");
            assert_eq!(i.password_from, PasswordFrom::Env, "{src}");
        }
        let i = resolve(
            "postgresql://postgres:@h/db",
            &env_of(&[("PGPASSWORD", "")]),
        )
        .unwrap();
        assert_eq!((i.password, i.password_from), (None, PasswordFrom::None));
    }

    #[test]
    fn url_fragments_are_refused_without_echo() {
        for bad in [
            "postgresql://u@h/db#s3cretfrag",
            "postgresql://u@h/db?sslmode=disable#s3cretfrag",
            "postgresql://u@h#s3cretfrag/db",
            "postgresql://u:pw@h:5432#s3cretfrag",
        ] {
            let e = resolve(bad, &env_of(&[])).unwrap_err().to_string();
            assert!(e.contains("fragment") && !e.contains("s3cretfrag"), "{e}");
        }
        // A '#' in the password is the password's, as in libpq; %23 is a '#' anywhere.
        let i = resolve("postgresql://u:pa#ss@h/db%23x", &env_of(&[])).unwrap();
        assert_eq!(i.password.as_deref(), Some("pa#ss"));
        assert_eq!(i.dbname, "db#x");
        // `a://b` in a key=value source is a value, not a URL scheme.
        let i = resolve("host=h password=a://b", &env_of(&[])).unwrap();
        assert_eq!(i.password.as_deref(), Some("a://b"));
    }

    #[test]
    fn a_socket_folder_in_a_url_host_is_decoded() {
        let env = env_of(&[]);
        for src in [
            "postgresql://u@%2Fvar%2Frun%2Fpostgresql:5433/db",
            "postgresql://u@%2fvar%2frun%2fpostgresql:5433/db",
            "postgresql://u@:5433/db?host=%2Fvar%2Frun%2Fpostgresql",
            "host=/var/run/postgresql port=5433 user=u dbname=db",
        ] {
            let i = resolve(src, &env).unwrap();
            assert_eq!(
                (i.host.as_str(), i.port),
                ("/var/run/postgresql", 5433),
                "{src}"
            );
        }
    }

    #[test]
    fn a_service_fills_in_between_the_source_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(
            &file,
            "[music]\nhost=db.example\nport=6543\nuser=svcuser\ndbname=svcdb\npassword=svcpw\nsslmode=require\napplication_name=svcapp\n",
        )
        .unwrap();
        let env = |extra: Vec<(&'static str, String)>| {
            let mut vars = vec![
                ("PGSERVICEFILE", file.display().to_string()),
                ("PGSYSCONFDIR", dir.path().display().to_string()),
                ("PGUSER", "envuser".to_string()),
                ("PGPASSWORD", "envpw".to_string()),
                ("PGAPPNAME", "envapp".to_string()),
                ("PGCONNECT_TIMEOUT", "7".to_string()),
            ];
            vars.extend(extra);
            env_map(vars)
        };
        // libpq's order: the source, then the service, then the environment.
        let i = resolve("service=music dbname=explicit", &env(vec![])).unwrap();
        assert_eq!((i.host.as_str(), i.port), ("db.example", 6543));
        assert_eq!(
            (i.user.as_str(), i.dbname.as_str()),
            ("svcuser", "explicit")
        );
        assert_eq!(i.password.as_deref(), Some("svcpw"));
        assert_eq!(i.password_from, PasswordFrom::Service);
        assert_eq!(i.param("sslmode"), Some("require"));
        assert_eq!(i.param("application_name"), Some("svcapp"));
        assert_eq!(i.param("connect_timeout"), Some("7"));
        assert_eq!(i.param("service"), None);
        let i = resolve("postgresql://me:mine@/?service=music", &env(vec![])).unwrap();
        assert_eq!((i.host.as_str(), i.user.as_str()), ("db.example", "me"));
        assert_eq!(i.password_from, PasswordFrom::Source);
        let i = resolve("", &env(vec![("PGSERVICE", "music".into())])).unwrap();
        assert_eq!(
            (i.host.as_str(), i.dbname.as_str()),
            ("db.example", "svcdb")
        );
        let e = resolve("service=nope", &env(vec![]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("service 'nope' not found in "), "{e}");
    }

    #[test]
    fn the_password_command_runs_only_when_nothing_else_gives_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let pgpass = dir.path().join(".pgpass");
        std::fs::write(&pgpass, "*:*:*:*:filepw\n").unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ran = dir.path().join("ran");
        let cmd = format!("echo x >> '{}'; echo cmdpw", ran.display());
        let no_pw = env_map(vec![("HOME", home.clone())]);
        let with_pw = env_map(vec![("HOME", home), ("PGPASSWORD", "envpw".into())]);
        let got = |src: &str, env: &dyn Fn(&str) -> Option<String>, cmd: Option<&str>| {
            let i = resolve_with(src, env, cmd).unwrap();
            (i.password.unwrap_or_default(), i.password_from)
        };
        let url = "postgresql://u@h/d";
        // source > PGPASSWORD > password command > password file
        assert_eq!(
            got(url, &no_pw, None),
            ("filepw".to_string(), PasswordFrom::File)
        );
        assert_eq!(
            got(url, &no_pw, Some(cmd.as_str())),
            ("cmdpw".to_string(), PasswordFrom::Command)
        );
        assert_eq!(
            got(url, &with_pw, Some(cmd.as_str())),
            ("envpw".to_string(), PasswordFrom::Env)
        );
        assert_eq!(
            got("postgresql://u:srcpw@h/d", &no_pw, Some(cmd.as_str())),
            ("srcpw".to_string(), PasswordFrom::Source)
        );
        let runs = std::fs::read_to_string(&ran).unwrap();
        assert_eq!(runs.lines().count(), 1, "run only when needed");
        let e = resolve_with(url, &no_pw, Some("echo s3cret; exit 4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit status 4") && !e.contains("s3cret"), "{e}");
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
