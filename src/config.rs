//! The source mapping file (TOML): how a PostgreSQL scrobble store that does not use the
//! default names maps onto the canonical fields. Parsing and checks that need no database live
//! here; resolving names against the server is `source::mapping`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Canonical fields, and whether a mapping must provide them.
pub const FIELDS: [(&str, bool); 11] = [
    ("id", true),
    ("username", true),
    ("played_at", true),
    ("artist_name", true),
    ("artist_mbid", false),
    ("album_name", false),
    ("album_mbid", false),
    ("track_name", true),
    ("track_mbid", false),
    ("duration_ms", false),
    ("loved", false),
];

/// How the `played_at` column stores time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PlayedAtType {
    /// `timestamptz` (the default).
    #[default]
    Timestamptz,
    /// `timestamp` without time zone, in the zone named by `timezone`.
    Timestamp,
    /// An integer (or numeric) count of seconds since 1970-01-01 UTC.
    EpochSeconds,
    /// An integer (or numeric) count of milliseconds since 1970-01-01 UTC.
    EpochMilliseconds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub source: SourceConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `schema.table` or `table`; names are quoted for you (write them as they are).
    pub table: Option<String>,
    /// A SELECT returning the canonical field names (instead of `table` + `columns`).
    pub query: Option<String>,
    /// Canonical field → column name or SQL expression over `table`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub played_at_type: PlayedAtType,
    /// Time zone of a `timestamp` (without time zone) `played_at`, e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
}

impl SourceConfig {
    /// Checks what can be checked without a database.
    pub fn check(&self) -> Result<()> {
        match (&self.table, &self.query) {
            (Some(_), Some(_)) => bail!("[source] has both `table` and `query`; keep one"),
            (None, None) => bail!("[source] needs `table` (with [source.columns]) or `query`"),
            (None, Some(q)) => {
                if !self.columns.is_empty() {
                    bail!("[source.columns] only applies with `table`; a `query` must name its columns after the canonical fields");
                }
                if q.trim().is_empty() {
                    bail!("[source] query is empty");
                }
            }
            (Some(t), None) => {
                if t.trim().is_empty() {
                    bail!("[source] table is empty");
                }
            }
        }
        // Every problem at once, so a mapping is fixed in one round.
        let mut problems = Vec::new();
        if let (Some(t), None) = (&self.table, &self.query) {
            for (field, expr) in &self.columns {
                if !FIELDS.iter().any(|(f, _)| f == field) {
                    problems.push(format!(
                        "[source.columns] has unknown field '{field}'{}; fields are {}",
                        did_you_mean(field, FIELDS.iter().map(|f| f.0)),
                        FIELDS.map(|f| f.0).join(", ")
                    ));
                } else if expr.trim().is_empty() {
                    problems.push(format!(
                        "[source.columns] {field} is empty; name a column or write an expression"
                    ));
                }
            }
            let missing: Vec<String> = FIELDS
                .iter()
                .filter(|(f, required)| *required && !self.columns.contains_key(*f))
                .map(|(f, _)| format!("'{f}'"))
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "[source.columns] must map the required field{} {} to a column or expression of {t}",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", ")
                ));
            }
        }
        match (self.played_at_type, &self.timezone) {
            (PlayedAtType::Timestamp, None) => problems.push(
                "played_at_type = \"timestamp\" needs `timezone`, e.g. timezone = \"Europe/Berlin\"".into(),
            ),
            (PlayedAtType::Timestamp, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                problems.push("`timezone` only applies to played_at_type = \"timestamp\"".into())
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(())
    }
}

/// ` (did you mean `table`?)` for the known key nearest to `word`, if one is near.
fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> String {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push(
                    (prev[j] + usize::from(ca != *cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1),
                );
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known
        .map(|k| (distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map_or(String::new(), |(_, k)| format!(" (did you mean `{k}`?)"))
}

/// A TOML syntax or type error: shown with TOML's own snippet (several lines) and, for an
/// unknown key, the nearest known one.
#[derive(Debug)]
pub struct ConfigSyntaxError(pub String);

impl std::fmt::Display for ConfigSyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigSyntaxError {}

/// Reads and checks a mapping file.
pub fn load(path: &Path) -> Result<SourceConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        let msg = e.to_string();
        let hint = msg
            .split("unknown field `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .map(|unknown| {
                did_you_mean(
                    unknown,
                    [
                        "table",
                        "query",
                        "columns",
                        "played_at_type",
                        "timezone",
                        "source",
                    ]
                    .into_iter(),
                )
            })
            .unwrap_or_default();
        anyhow::Error::new(ConfigSyntaxError(format!(
            "config file {} is not valid{hint}:\n{}",
            path.display(),
            msg.trim_end()
        )))
    })?;
    file.source
        .check()
        .with_context(|| format!("config file {}", path.display()))?;
    Ok(file.source)
}

/// A commented example, printed by `scrobsync config example`.
pub const EXAMPLE: &str = r#"# scrobsync source mapping. Use it with --config FILE on load, sync, backfill, verify, bench,
# and check it with: scrobsync config check --config FILE --source URL
#
# Either map a table's columns ...
[source]
table = "music.plays"                 # schema.table or table; quoted for you
played_at_type = "epoch_seconds"      # timestamptz (default) | timestamp | epoch_seconds | epoch_milliseconds
# timezone = "Europe/Berlin"          # required with played_at_type = "timestamp"

[source.columns]
# canonical field = a column name (any spelling: "User Name", "select", ...) or an SQL expression
id = "play_id"                        # required: unique, non-null integer; partitions, marks, backfill
username = "user"                     # required
played_at = "ts"                      # required
artist_name = "artist"                # required
track_name = "title"                  # required
album_name = "album"                  # optional: omitted means every scrobble has no album (NULL)
artist_mbid = "artist_mbid"           # optional mbids (NULL when omitted)
# album_mbid = "album_mbid"
# track_mbid = "track_mbid"
duration_ms = "length_s * 1000"       # optional; an expression is fine
loved = "coalesce(rating, 0) >= 4"    # optional; false when omitted; NULL is an error

# ... or give a query that returns the canonical field names (joins, JSONB, casts):
# [source]
# query = """
# SELECT l.listen_id AS id, u.name AS username, l.listened_at AS played_at,
#        l.data->>'artist' AS artist_name, l.data->>'track' AS track_name,
#        l.data->>'album' AS album_name
#   FROM listens l JOIN users u ON u.user_id = l.user_id
# """
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SourceConfig> {
        let f: ConfigFile = toml::from_str(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        f.source.check()?;
        Ok(f.source)
    }

    #[test]
    fn example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.played_at_type, PlayedAtType::EpochSeconds);
        assert_eq!(c.columns["id"], "play_id");
    }

    #[test]
    fn clear_errors() {
        let e = parse("[source]\ntable = \"t\"\nquery = \"select 1\"").unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        let e = parse("[source]\ntable = \"t\"\n[source.columns]\nartist = \"a\"").unwrap_err();
        assert!(e.to_string().contains("unknown field 'artist'"), "{e}");
        let e = parse("[source]\ntable = \"t\"\nplayed_at_type = \"timestamp\"").unwrap_err();
        assert!(e.to_string().contains("timezone"), "{e}");
        assert!(parse("[source]\ntable = \"t\"\nplayed_at_type = \"weeks\"").is_err());
        assert!(parse("[source]\ntabel = \"t\"").is_err());
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn mapping_errors_suggest_and_list_everything() {
        assert_eq!(
            did_you_mean("tabel", ["table", "query"].into_iter()),
            " (did you mean `table`?)"
        );
        assert_eq!(did_you_mean("zzzzzz", ["table", "query"].into_iter()), "");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "[source]\ntabel = \"plays\"\n").unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(
            e.contains("did you mean `table`?") && e.contains('\n'),
            "{e}"
        );
        std::fs::write(
            &p,
            "[source]\ntable = \"plays\"\n[source.columns]\nusername = \"u\"\n",
        )
        .unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        for f in ["'id'", "'played_at'", "'artist_name'", "'track_name'"] {
            assert!(e.contains(f), "every missing field at once: {e}");
        }
        std::fs::write(
            &p,
            "[source]\ntable = \"plays\"\n[source.columns]\nid = \"i\"\nusername = \"u\"\nplayed_at = \"p\"\nartist_name = \"a\"\ntrack_name = \"t\"\nalbum_nme = \"x\"\n",
        )
        .unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("did you mean `album_name`?"), "{e}");
    }
}
