//! libpq connection service files (`pg_service.conf`): named groups of connection parameters,
//! chosen with `service=NAME` in the source (`?service=NAME` in a URL) or `PGSERVICE`.
//!
//! Why: psql users keep their servers there, and the PostgreSQL client crate does not read
//! these files. The lookup follows libpq's `parseServiceInfo`: the file `PGSERVICEFILE` names
//! (which must exist), else `~/.pg_service.conf` when it exists; if the group is not there, the
//! system file `PGSYSCONFDIR/pg_service.conf`. The first file that has the group is the only
//! one read. A file is `[name]` lines, each followed by `key=value` lines (no quoting); `#`
//! starts a comment line; within the group the first line of a key counts.
//!
//! Errors name the file and the line number, never the line: it may hold a password.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// The folder of the system service file when `PGSYSCONFDIR` is not set: what Debian's and
/// Ubuntu's libpq look in (`pg_config --sysconfdir`).
pub const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The parameters of service `name`, in file order, or an error naming the files searched.
pub fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut searched = Vec::new();
    if let Some(file) = user_file(&nonempty)? {
        if let Some(params) = read_group(&file, name)? {
            return Ok(params);
        }
        searched.push(file);
    }
    let system = nonempty("PGSYSCONFDIR")
        .map_or_else(|| PathBuf::from(DEFAULT_SYSCONFDIR), PathBuf::from)
        .join("pg_service.conf");
    if system.is_file() {
        if let Some(params) = read_group(&system, name)? {
            return Ok(params);
        }
    }
    searched.push(system);
    Err(not_found(name, &searched))
}

/// `PGSERVICEFILE` (an error if it does not exist, as in libpq), else `~/.pg_service.conf`
/// when it exists.
fn user_file(nonempty: &dyn Fn(&str) -> Option<String>) -> Result<Option<PathBuf>> {
    if let Some(file) = nonempty("PGSERVICEFILE").map(PathBuf::from) {
        if !file.is_file() {
            bail!(
                "service file {} (from PGSERVICEFILE) not found; fix PGSERVICEFILE or create the file",
                file.display()
            );
        }
        return Ok(Some(file));
    }
    Ok(nonempty("HOME")
        .map(|h| Path::new(&h).join(".pg_service.conf"))
        .filter(|f| f.is_file()))
}

fn not_found(name: &str, searched: &[PathBuf]) -> anyhow::Error {
    let files: Vec<String> = searched
        .iter()
        .map(|f| {
            let missing = if f.exists() { "" } else { " (missing)" };
            format!("{}{missing}", f.display())
        })
        .collect();
    // Only a plain name is echoed: anything else may be a misplaced password.
    let (shown, section) = if plain(name) {
        (format!(" '{name}'"), format!("[{name}]"))
    } else {
        (String::new(), "[NAME]".to_string())
    };
    anyhow!(
        "service{shown} not found in {}; add a {section} section to one of them, or set PGSERVICEFILE to the file that has it",
        files.join(" or ")
    )
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The `key=value` lines of group `name` in `path`; `None` when the file has no such group.
fn read_group(path: &Path, name: &str) -> Result<Option<Vec<(String, String)>>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow!(
            "cannot read service file {}: {e}; check that it is a readable text file",
            path.display()
        )
    })?;
    parse_group(&text, name).map_err(|(line, problem)| {
        anyhow!("service file {}, line {line}: {problem}", path.display())
    })
}

/// A service's parameters, in file order.
type Params = Vec<(String, String)>;

/// Parses the group `name` out of a service file's text. An error is the line number and what
/// is wrong with it (with the fix).
fn parse_group(
    text: &str,
    name: &str,
) -> std::result::Result<Option<Params>, (usize, &'static str)> {
    let mut found = false;
    let mut params: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if found {
                break; // the end of the group
            }
            found = rest.strip_prefix(name).is_some_and(|r| r.starts_with(']'));
            continue;
        }
        if !found {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or((
            i + 1,
            "expected key=value (such as host=db.example); fix or remove that line",
        ))?;
        let key = key.trim();
        if key == "service" {
            return Err((
                i + 1,
                "a service cannot name another service; remove that line",
            ));
        }
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err((
                i + 1,
                "expected a parameter name before '=' (such as host=db.example); fix that line",
            ));
        }
        if !params.iter().any(|(k, _)| k == key) {
            params.push((key.to_string(), value.trim().to_string()));
        }
    }
    Ok(found.then_some(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FILE: &str = "\
# servers
  [other]
host=elsewhere
[music] the big one
host=db.example
port = 6543
  dbname=music  \r
host=ignored: the first line of a key counts
password=s3cret
[music]
user=not-read: only the first group counts
";

    #[test]
    fn the_named_group_is_read_like_libpq() {
        let p = parse_group(FILE, "music").unwrap().unwrap();
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            p,
            [
                ("host", "db.example"),
                ("port", "6543"),
                ("dbname", "music"),
                ("password", "s3cret")
            ]
        );
        assert_eq!(
            parse_group(FILE, "mus").unwrap(),
            None,
            "a prefix is no match"
        );
        assert_eq!(parse_group(FILE, "nope").unwrap(), None);
    }

    #[test]
    fn bad_lines_are_named_by_number_not_echoed() {
        assert_eq!(parse_group("[a]\nhost=h\nhunter2\n", "a").unwrap_err().0, 3);
        assert!(parse_group("[a]\nservice=b\n", "a")
            .unwrap_err()
            .1
            .contains("another service"));
        // Bad lines of other groups do not matter, as in libpq.
        assert!(parse_group("[b]\nhunter2\n[a]\nhost=h\n", "a").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.conf");
        std::fs::write(&f, "[a]\npassword hunter2\n").unwrap();
        let e = read_group(&f, "a").unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn user_file_then_system_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(home.join(".pg_service.conf"), "[a]\nhost=from-home\n").unwrap();
        std::fs::write(
            sys.join("pg_service.conf"),
            "[a]\nhost=from-system\n[b]\nhost=only-system\n",
        )
        .unwrap();
        let vars: HashMap<&str, String> = [
            ("HOME", home.display().to_string()),
            ("PGSYSCONFDIR", sys.display().to_string()),
        ]
        .into();
        let env = |k: &str| vars.get(k).cloned();
        assert_eq!(lookup("a", &env).unwrap()[0].1, "from-home");
        assert_eq!(lookup("b", &env).unwrap()[0].1, "only-system");
        let e = lookup("zzz", &env).unwrap_err().to_string();
        assert!(e.starts_with("service 'zzz' not found in "), "{e}");
        assert!(
            e.contains(".pg_service.conf") && e.contains("sys/pg_service.conf"),
            "{e}"
        );
        let e = lookup("pa ss", &env).unwrap_err().to_string();
        assert!(!e.contains("pa ss"), "{e}");

        let mut vars = vars.clone();
        vars.insert(
            "PGSERVICEFILE",
            dir.path().join("nope").display().to_string(),
        );
        let env = |k: &str| vars.get(k).cloned();
        let e = lookup("a", &env).unwrap_err().to_string();
        assert!(
            e.contains("PGSERVICEFILE") && e.contains("not found"),
            "{e}"
        );
    }
}
