//! Where the source's password comes from when neither the source, its service nor
//! `PGPASSWORD` give one: `--password-command`, else the password file.
//!
//! `--password-command` (`SCROBSYNC_PASSWORD_COMMAND`) is a shell command that prints the
//! password, such as `pass show db/music` or `gpg --quiet --decrypt ~/.pgpass-music.gpg`. Why:
//! a password in `--source` is visible to every local user (`ps`), and `PGPASSWORD` and
//! `~/.pgpass` keep it in plain text; a command lets it stay in a password manager or an
//! encrypted file. It runs once per process, through `sh -c`, with the terminal as its stdin
//! and stderr (so it can ask for a passphrase); its stdout, less one trailing newline, is the
//! password. Neither that output nor the command's text ever reaches a log or an error.
//!
//! The password file (`~/.pgpass`, `PGPASSFILE`) is read as libpq's `passwordFromFile` reads
//! it, so that one file serves psql and scrobsync alike.

use super::conninfo::ConnInfo;
use anyhow::{anyhow, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// What every failure of the command ends with: where to fix it.
const FIX: &str = "check --password-command / SCROBSYNC_PASSWORD_COMMAND";

/// Runs `command` through `sh -c` and returns the password it prints.
pub fn from_command(command: &str) -> Result<String> {
    tracing::debug!("running the password command");
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| anyhow!("cannot run the password command with sh: {e}; {FIX}"))?;
    if !out.status.success() {
        return Err(anyhow!(
            "the password command failed ({}); {FIX}",
            describe_status(&out.status)
        ));
    }
    let mut password = String::from_utf8(out.stdout).map_err(|e| {
        // The bytes are a password (or part of one): wipe them, do not show them.
        let mut bytes = e.into_bytes();
        bytes.fill(0);
        anyhow!("the password command printed something that is not UTF-8 text; {FIX}")
    })?;
    strip_one_newline(&mut password);
    if password.is_empty() {
        return Err(anyhow!(
            "the password command printed no password (it must print it on stdout); {FIX}"
        ));
    }
    Ok(password)
}

/// Removes one trailing `\n` or `\r\n` (what `echo` or `pass` add), and nothing else: spaces
/// and further newlines may be part of the password.
fn strip_one_newline(s: &mut String) {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
}

/// `exit status 1`, `exit status 127: command not found`, `killed by signal 9`.
fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(127), _) => "exit status 127: command not found".to_string(),
        (Some(126), _) => "exit status 126: command not executable".to_string(),
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".to_string(),
    }
}

/// The password for `info` from a libpq password file (`host:port:database:user:password`,
/// `*` matches anything, `\` escapes the next character). As in libpq's `passwordFromFile`,
/// the first matching line counts and its password ends at the first unescaped `:` (so a line
/// may carry a trailing comment field), and a file that group or others may read is ignored,
/// with a warning.
pub fn from_file(path: &Path, info: &ConnInfo) -> Option<String> {
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
    // A Unix socket folder matches the entry `localhost` (libpq: only its default folder).
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
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| pgpass_line(line, wanted))
        .filter(|p| !p.is_empty())
}

/// The password of one password-file line when its first four fields match `wanted`.
fn pgpass_line(line: &str, wanted: [&str; 4]) -> Option<String> {
    let rest = wanted
        .iter()
        .try_fold(line, |rest, token| pgpass_field(rest, token))?;
    Some(pgpass_password(rest))
}

/// libpq's `pwdfMatchesString`: when the field at the start of `line` is `*` or equals `token`
/// (a `\` escapes the next character), the rest of the line after the field's `:`.
fn pgpass_field<'a>(line: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut want = token.chars();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        let (c, escaped) = match c {
            '\\' => (chars.next()?.1, true),
            c => (c, false),
        };
        if c == ':' && !escaped && want.as_str().is_empty() {
            return Some(&line[i + 1..]);
        }
        if want.next() != Some(c) {
            return None;
        }
    }
    None
}

/// The password field: up to the first unescaped `:` or the end of the line, with each `\`
/// dropped and the character after it kept (a `\` at the very end stays).
fn pgpass_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::conninfo::PasswordFrom;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stdout_less_one_newline_is_the_password() {
        assert_eq!(from_command("echo 's3cret'").unwrap(), "s3cret");
        assert_eq!(from_command("printf 'a b\\r\\n'").unwrap(), "a b");
        assert_eq!(from_command("printf 'two\\n\\n'").unwrap(), "two\n");
        assert_eq!(from_command("printf ' pad '").unwrap(), " pad ");
    }

    #[test]
    fn failures_name_the_exit_status_never_the_output() {
        let e = from_command("echo s3cret; exit 3").unwrap_err().to_string();
        assert_eq!(
            e,
            "the password command failed (exit status 3); check --password-command / SCROBSYNC_PASSWORD_COMMAND"
        );
        let e = from_command("scrobsync-no-such-command-xyz 2>/dev/null")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit status 127: command not found"), "{e}");
        let e = from_command("kill -9 $$").unwrap_err().to_string();
        assert!(e.contains("killed by signal 9"), "{e}");
        for empty in ["true", "echo", "printf '\\r\\n'"] {
            let e = from_command(empty).unwrap_err().to_string();
            assert!(e.contains("printed no password"), "{empty}: {e}");
        }
        let e = from_command("printf 's3cret\\377'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not UTF-8") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn password_file_lines_match_like_libpq() {
        let want = ["h:x", "5432", "music", "u"];
        let line = |l: &str| pgpass_line(l, want);
        // libpq ends the password at the first unescaped ':'; `\` is a backslash, and a
        // backslash at the very end stays.
        assert_eq!(line(r"h\:x:5432:*:u:pa\:ss:word").as_deref(), Some("pa:ss"));
        assert_eq!(line(r"h\:x:*:music:u:a\\b\").as_deref(), Some(r"a\b\"));
        assert_eq!(line(r"*:*:*:*:").as_deref(), Some(""));
        assert_eq!(line(r"*:*:*:u"), None, "no password field");
        assert_eq!(line(r"h\:x:5432:mu\sic:u:pw").as_deref(), Some("pw"));
        // libpq compares an unescaped ':' with the host's own: an IPv6 address matches with
        // its colons escaped or not.
        let v6 = ["::1", "5432", "d", "u"];
        assert_eq!(pgpass_line(r"::1:5432:d:u:pw", v6).as_deref(), Some("pw"));
        assert_eq!(pgpass_line(r"\:\:1:5432:d:u:pw", v6).as_deref(), Some("pw"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\n127.0.0.1:*:music:bob:s3cret:old\n*:*:empty:*:\n*:*:*:*:fallback\n",
        )
        .unwrap();
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
        assert_eq!(from_file(&file, &info("music")).as_deref(), Some("s3cret"));
        assert_eq!(
            from_file(&file, &info("other")).as_deref(),
            Some("fallback")
        );
        assert_eq!(
            from_file(&file, &info("empty")),
            None,
            "the first match counts, and an empty password is none"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            from_file(&file, &info("music")),
            None,
            "world-readable: ignored"
        );
    }
}
