//! The source mapping file (TOML): how a PostgreSQL scrobble store that does not use the
//! default names maps onto the canonical fields. Parsing and checks that need no database live
//! here; resolving names against the server is `source::mapping`.

use anyhow::{anyhow, bail, Context, Result};
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
                for (field, expr) in &self.columns {
                    if !FIELDS.iter().any(|(f, _)| f == field) {
                        bail!(
                            "[source.columns] has unknown field '{field}'; fields are {}",
                            FIELDS.map(|f| f.0).join(", ")
                        );
                    }
                    if expr.trim().is_empty() {
                        bail!("[source.columns] {field} is empty; name a column or write an expression");
                    }
                }
            }
        }
        match (self.played_at_type, &self.timezone) {
            (PlayedAtType::Timestamp, None) => bail!(
                "played_at_type = \"timestamp\" needs `timezone`, e.g. timezone = \"Europe/Berlin\""
            ),
            (PlayedAtType::Timestamp, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => bail!("`timezone` only applies to played_at_type = \"timestamp\""),
        }
    }
}

/// Reads and checks a mapping file.
pub fn load(path: &Path) -> Result<SourceConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "config file {} is not valid: {}",
            path.display(),
            e.to_string().replace('\n', " ")
        )
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
loved = "rating >= 4"                 # optional; false when omitted

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
        let f: ConfigFile = toml::from_str(s).map_err(|e| anyhow!("{e}"))?;
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
