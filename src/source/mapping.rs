//! What the pipeline reads from: the default `scrobbles` table, or a mapping (TOML config) of
//! another schema onto the canonical fields. A mapping resolves to one SQL *relation* — the
//! table itself, or a subquery that renames, casts and converts — so every later query (plans,
//! partition reads, verify hashes) is written once against canonical column names.
//!
//! The type mapping lives here, beside the source that owns it: each field's source type is
//! checked against what the field needs before anything is written, and errors name the field
//! and the column.

use super::conn::{explain_query_error, ReadOnlyClient, SourceError, SourceUrl};
use super::{quote_ident, quote_table, COLUMNS};
use crate::config::{PlayedAtType, SourceConfig, FIELDS};
use anyhow::{anyhow, bail, Context, Result};
use postgres::error::SqlState;
use postgres::types::Type;
use serde::Serialize;

/// Where rows come from, before it is checked against the server.
#[derive(Debug, Clone, Default)]
pub enum SourceSpec {
    /// The default table `scrobbles` with the default column names.
    #[default]
    Default,
    /// A mapping from a config file.
    Config(SourceConfig),
}

/// A resolved source: an SQL relation with the canonical columns.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// For messages: the table name, or `query`.
    pub name: String,
    relation: String,
    /// The relation with `{pct}` where a `TABLESAMPLE SYSTEM` percentage goes (tables only).
    sampled: Option<String>,
    /// The table whose planner statistics estimate the row count (tables only).
    pub stats_table: Option<String>,
    /// The relation's `id` beside each row's `xmin` (as `row_xmin`), for tables: what tells a
    /// resumed load whether rows it read before have changed. Else why it cannot tell.
    pub versioned: std::result::Result<String, String>,
    /// True for config mappings.
    pub mapped: bool,
    /// Where the connection that resolved it arrived (see `identity::ServerId`).
    pub server: Option<super::identity::ServerId>,
}

impl Default for SourceTable {
    fn default() -> Self {
        let t = quote_table("scrobbles");
        Self {
            name: "scrobbles".into(),
            relation: t.clone(),
            sampled: Some(format!("{t} TABLESAMPLE SYSTEM ({{pct}})")),
            versioned: Ok(format!("(SELECT id, xmin AS row_xmin FROM {t}) AS src")),
            stats_table: Some(t),
            mapped: false,
            server: None,
        }
    }
}

impl SourceTable {
    /// The FROM item every query uses.
    pub fn sql_name(&self) -> String {
        self.relation.clone()
    }

    /// `SELECT <canonical columns> FROM <relation>`, the start of every read query.
    pub fn select_sql(&self) -> String {
        self.select_columns_sql(&COLUMNS)
    }

    /// `SELECT <some canonical columns> FROM <relation>`.
    pub fn select_columns_sql(&self, columns: &[&str]) -> String {
        format!("SELECT {} FROM {}", columns.join(", "), self.relation)
    }

    /// Refuses a mapping whose id is not stable. Rows each window reads are chosen by their id,
    /// in separate statements on several connections: an id that changes between evaluations
    /// (`random()`, `nextval()`, the clock, the backend, a `row_number()` over an arbitrary
    /// order) would put some rows in no window and others in two. So the ids of the first rows
    /// with their text are read twice by one statement (no order, one snapshot: they must be
    /// equal), and the 1,000 smallest ids with their text by two statements on two connections
    /// more than a second apart: at least nine in ten must come back with the same text (a live
    /// source may delete or edit a few of its oldest rows meanwhile; an id made of `now()`,
    /// whole seconds or `pg_backend_pid()` changes them all). A sample cannot prove stability;
    /// it catches what is unstable everywhere. A full load and `config check` do it (a target
    /// refuses a changed mapping).
    pub fn check_stable_ids(&self, client: &mut ReadOnlyClient, url: &SourceUrl) -> Result<()> {
        if !self.mapped {
            return Ok(());
        }
        let text = "id::text || '|' || coalesce(username, '') || '|' || coalesce(artist_name, '') \
                    || '|' || coalesce(track_name, '') || '|' || coalesce(album_name, '\\N')";
        let unordered = |alias: &str| {
            format!(
                "(SELECT md5(string_agg({text}, ',')) FROM (SELECT * FROM {} LIMIT 5000) {alias})",
                self.relation
            )
        };
        let smallest = format!(
            "SELECT array_agg(id::text || ':' || md5({text})) FROM (SELECT * FROM {} ORDER BY id LIMIT 1000) s",
            self.relation
        );
        let err = "checking that the mapped id is stable failed";
        let within: bool = client
            .query_one_repeatable(&format!(
                "SELECT {} IS DISTINCT FROM {}",
                unordered("a"),
                unordered("b")
            ))
            .context(err)?
            .get(0);
        let before: Option<Vec<String>> = client.query_one(&smallest, &[]).context(err)?.get(0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let after: Option<Vec<String>> = url
            .connect_reader()?
            .query_one(&smallest, &[])
            .context(err)?
            .get(0);
        let (before, after) = (before.unwrap_or_default(), after.unwrap_or_default());
        let again: std::collections::HashSet<&String> = after.iter().collect();
        let same = before.iter().filter(|r| again.contains(r)).count();
        if within || same * 10 < before.len() * 9 {
            bail!(
                "field id gives other values each time it is read (random(), nextval(), the clock, the backend, or a row_number() over an arbitrary order?); map id to a stored column or an expression of stored columns"
            );
        }
        Ok(())
    }

    /// The relation on a block sample of `pct` percent of the table, if it is a table.
    pub fn sampled(&self, pct: f64) -> Option<String> {
        self.sampled
            .as_ref()
            .map(|s| s.replace("{pct}", &format!("{pct:.4}")))
    }
}

/// One field of a resolved mapping, for `config check`.
#[derive(Debug, Clone, Serialize)]
pub struct FieldInfo {
    pub field: &'static str,
    /// The column or expression it comes from (`NULL`/`false` when omitted).
    pub source: String,
    pub source_type: String,
    /// The SQL the relation uses for it.
    pub sql: String,
}

/// `scrobsync config check`: the mapping file at `path` resolved against the source, with
/// its ids checked for stability. The table's name and how each field is read.
pub fn check(path: &std::path::Path, url: &SourceUrl) -> Result<(String, Resolved)> {
    let cfg = crate::config::load(path)?;
    let mut client = url.connect_reader()?;
    let (table, resolved) = SourceSpec::Config(cfg).resolve_verbose(&mut client, url)?;
    table.check_stable_ids(&mut client, url)?;
    Ok((table.name, resolved))
}

/// The result of resolving a spec: the relation and, for mappings, the field-by-field story.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub query: String,
    pub fields: Vec<FieldInfo>,
}

fn is_text(t: &Type) -> bool {
    matches!(*t, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
}

fn is_int(t: &Type) -> bool {
    matches!(*t, Type::INT2 | Type::INT4 | Type::INT8)
}

fn is_number(t: &Type) -> bool {
    is_int(t) || matches!(*t, Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8)
}

/// Whether a value of type `t` can serve as `field`, and if not, what it needs.
fn check_type(field: &str, t: &Type, pat: PlayedAtType) -> Result<(), &'static str> {
    let ok = match field {
        "id" => is_int(t),
        "played_at" => match pat {
            PlayedAtType::Timestamptz => *t == Type::TIMESTAMPTZ,
            PlayedAtType::Timestamp => *t == Type::TIMESTAMP,
            PlayedAtType::EpochSeconds | PlayedAtType::EpochMilliseconds => is_number(t),
        },
        "artist_mbid" | "album_mbid" | "track_mbid" => *t == Type::UUID || is_text(t),
        "duration_ms" => is_number(t),
        "loved" => *t == Type::BOOL,
        _ => is_text(t),
    };
    if ok {
        return Ok(());
    }
    Err(match field {
        "id" => "an integer (smallint, integer or bigint)",
        "played_at" => match pat {
            PlayedAtType::Timestamptz => "timestamptz (or set played_at_type)",
            PlayedAtType::Timestamp => "timestamp (without time zone)",
            _ => "a number of seconds or milliseconds",
        },
        "artist_mbid" | "album_mbid" | "track_mbid" => "uuid or text",
        "duration_ms" => "a number",
        "loved" => "boolean (write an expression such as `rating >= 4`)",
        _ => "text",
    })
}

/// The SQL converting `played_at` as stored into timestamptz.
fn played_at_sql(e: &str, pat: PlayedAtType, tz: Option<&str>) -> String {
    match pat {
        PlayedAtType::Timestamptz => e.to_string(),
        PlayedAtType::Timestamp => format!(
            "({e} AT TIME ZONE '{}')",
            tz.unwrap_or("UTC").replace('\'', "''")
        ),
        PlayedAtType::EpochSeconds => {
            format!("(timestamptz 'epoch' + ({e}) * interval '1 second')")
        }
        PlayedAtType::EpochMilliseconds => {
            format!("(timestamptz 'epoch' + ({e}) * interval '1 millisecond')")
        }
    }
}

/// The canonical column SQL of `field` from source SQL `e` (None: the field is omitted).
fn field_sql(field: &str, e: Option<&str>, pat: PlayedAtType, tz: Option<&str>) -> String {
    let v = match (field, e) {
        // no cast on id: a cast would hide the column from its index in partition queries
        ("id", Some(e)) => e.to_string(),
        ("played_at", Some(e)) => played_at_sql(e, pat, tz),
        ("duration_ms", Some(e)) => format!("({e})::int8"),
        ("duration_ms", None) => "NULL::int8".into(),
        // No coalesce: a NULL is an error of the normaliser (it names the rows), never false.
        ("loved", Some(e)) => format!("({e})::bool"),
        ("loved", None) => "false".into(),
        (_, Some(e)) => format!("({e})::text"),
        (_, None) => "NULL::text".into(),
    };
    format!("{v} AS {field}")
}

/// Interprets a failed check with `f`, unless the failure is a transient fault of the
/// connection (then it is passed on as it is, to be retried, not explained as a wrong mapping).
fn unless_transient(
    e: SourceError,
    f: impl FnOnce(&SourceError) -> anyhow::Error,
) -> anyhow::Error {
    if e.transient {
        e.into()
    } else {
        f(&e)
    }
}

fn missing_table(name: &str, url: &SourceUrl, msg: &str) -> anyhow::Error {
    anyhow!(
        "source table '{name}' not found in database '{}' ({msg}); point --source at the right database, or describe your own table with --config (a target loaded through a mapping needs the same --config)",
        url.database()
    )
}

impl SourceSpec {
    /// Checks the spec against the server and returns the relation to read from.
    pub fn resolve(&self, client: &mut ReadOnlyClient, url: &SourceUrl) -> Result<SourceTable> {
        Ok(self.resolve_verbose(client, url)?.0)
    }

    /// Like [`SourceSpec::resolve`], also describing each field (for `config check`).
    pub fn resolve_verbose(
        &self,
        client: &mut ReadOnlyClient,
        url: &SourceUrl,
    ) -> Result<(SourceTable, Resolved)> {
        super::role::check(client)?;
        let server = super::identity::ServerId::of(client)?;
        let (mut table, resolved) = self.resolve_spec(client, url)?;
        table.server = server;
        Ok((table, resolved))
    }

    fn resolve_spec(
        &self,
        client: &mut ReadOnlyClient,
        url: &SourceUrl,
    ) -> Result<(SourceTable, Resolved)> {
        match self {
            SourceSpec::Default => resolve_default(client, url),
            SourceSpec::Config(c) => {
                c.check()?;
                if let Some(tz) = &c.timezone {
                    client
                        .query_one("SELECT now() AT TIME ZONE $1", &[tz])
                        .map_err(|e| unless_transient(e, |e| anyhow!("timezone '{tz}' is not known to PostgreSQL ({}); use a name such as Europe/Berlin", explain_query_error(e))))?;
                }
                let (table, resolved) = match (&c.table, &c.query) {
                    (Some(t), _) => resolve_table(c, t, client, url)?,
                    (None, Some(q)) => resolve_query(c, q, client)?,
                    (None, None) => unreachable!("checked by SourceConfig::check"),
                };
                // The id must never be NULL: partitions, marks and backfill order rest on it.
                let null_id = client
                    .query_opt(
                        &format!("SELECT 1 FROM {} WHERE id IS NULL LIMIT 1", table.relation),
                        &[],
                    )
                    .context("checking the mapped id failed")?;
                if null_id.is_some() {
                    let src = resolved
                        .fields
                        .first()
                        .map_or("id".into(), |f| f.source.clone());
                    bail!("field id: `{src}` is NULL in some rows; the id must be a unique, non-null integer");
                }
                Ok((table, resolved))
            }
        }
    }
}

fn resolve_default(
    client: &mut ReadOnlyClient,
    url: &SourceUrl,
) -> Result<(SourceTable, Resolved)> {
    let table = SourceTable::default();
    let stmt = match client.prepare(&format!("{} LIMIT 0", table.select_sql())) {
        Ok(s) => s,
        Err(e) if e.transient => return Err(e.into()),
        Err(e) => {
            let code = e.code.clone();
            let msg = explain_query_error(&e);
            return Err(if code == Some(SqlState::UNDEFINED_TABLE) {
                missing_table(&table.name, url, &msg)
            } else if code == Some(SqlState::UNDEFINED_COLUMN) {
                anyhow!(
                    "source table '{}' lacks a required column ({msg}); it needs columns {}, or map your own schema with --config (see `scrobsync config example`)",
                    table.name,
                    COLUMNS.join(", ")
                )
            } else {
                anyhow!("cannot read source table '{}': {msg}", table.name)
            });
        }
    };
    let mut fields = Vec::new();
    for (col, name) in stmt.columns().iter().zip(COLUMNS) {
        let ty = col.type_();
        let name: &'static str = name;
        if let Err(need) = check_type(name, ty, PlayedAtType::Timestamptz) {
            bail!(
                "source column '{}.{name}' has type {}, but {name} needs {need}; change the column type or map it with --config",
                table.name,
                ty.name()
            );
        }
        fields.push(FieldInfo {
            field: name,
            source: name.to_string(),
            source_type: ty.name().to_string(),
            sql: name.to_string(),
        });
    }
    let resolved = Resolved {
        query: table.select_sql(),
        fields,
    };
    Ok((table, resolved))
}

fn resolve_table(
    c: &SourceConfig,
    name: &str,
    client: &mut ReadOnlyClient,
    url: &SourceUrl,
) -> Result<(SourceTable, Resolved)> {
    let quoted = if name.contains('"') {
        name.to_string()
    } else {
        quote_table(name)
    };
    let cols: Vec<(String, Type)> = {
        let stmt = client
            .prepare(&format!("SELECT * FROM {quoted} LIMIT 0"))
            .map_err(|e| {
                unless_transient(e, |e| missing_table(name, url, &explain_query_error(e)))
            })?;
        stmt.columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect()
    };
    let mut fields = Vec::new();
    let mut select = Vec::new();
    // The first field mapped to an expression rather than a column.
    let mut expression: Option<&str> = None;
    for (field, required) in FIELDS {
        let given = c.columns.get(field).map(|s| s.trim());
        let (src_sql, ty) = match given {
            None if required => bail!(
                "[source.columns] must map the required field '{field}' to a column or expression of {name}"
            ),
            None => (None, None),
            Some(e) => match cols.iter().find(|(n, _)| n == e) {
                Some((n, t)) => (Some(quote_ident(n)), Some(t.clone())),
                None => {
                    // Not a column name: an SQL expression over the table.
                    let stmt = client
                        .prepare(&format!("SELECT ({e}) FROM {quoted} LIMIT 0"))
                        .map_err(|err| unless_transient(err, |err| {
                            anyhow!(
                                "field {field}: `{e}` is neither a column of {name} nor a valid expression ({}); fix [source.columns] {field}",
                                explain_query_error(err)
                            )
                        }))?;
                    expression = expression.or(Some(field));
                    (Some(format!("({e})")), Some(stmt.columns()[0].type_().clone()))
                }
            },
        };
        if let (Some(e), Some(t)) = (given, &ty) {
            if let Err(need) = check_type(field, t, c.played_at_type) {
                bail!(
                    "field {field}: `{e}` of {name} has type {}, but {field} needs {need}; fix [source.columns] {field}{}",
                    t.name(),
                    if field == "played_at" { " or played_at_type" } else { "" }
                );
            }
        }
        let sql = field_sql(
            field,
            src_sql.as_deref(),
            c.played_at_type,
            c.timezone.as_deref(),
        );
        fields.push(FieldInfo {
            field,
            source: given.map_or_else(
                || {
                    if field == "loved" {
                        "false".into()
                    } else {
                        "NULL".into()
                    }
                },
                str::to_string,
            ),
            source_type: ty.map_or("-".into(), |t| t.name().to_string()),
            sql: sql.clone(),
        });
        select.push(sql);
    }
    let inner = format!("SELECT {} FROM {quoted}", select.join(", "));
    let table = SourceTable {
        server: None,
        name: name.to_string(),
        relation: format!("({inner}) AS src"),
        sampled: Some(format!(
            "(SELECT {} FROM {quoted} TABLESAMPLE SYSTEM ({{pct}})) AS src",
            select.join(", ")
        )),
        versioned: match expression {
            None => Ok(format!(
                "(SELECT {}, xmin AS row_xmin FROM {quoted}) AS src",
                select.join(", ")
            )),
            Some(field) => Err(format!(
                "the mapping's field {field} is an SQL expression, which may read what the rows' versions do not show (other tables, functions)"
            )),
        },
        stats_table: Some(quoted),
        mapped: true,
    };
    let resolved = Resolved {
        query: table.select_sql(),
        fields,
    };
    Ok((table, resolved))
}

fn resolve_query(
    c: &SourceConfig,
    query: &str,
    client: &mut ReadOnlyClient,
) -> Result<(SourceTable, Resolved)> {
    // The query becomes a subquery: without its final semicolons, and closed on a line of its
    // own so that a trailing `-- comment` does not swallow the closing parenthesis.
    let query = &format!("{}\n", strip_trailing_semicolons(query));
    let stmt = client
        .prepare(&format!("SELECT * FROM ({query}) AS q LIMIT 0"))
        .context("the [source] query does not run")?;
    let cols: Vec<(String, Type)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let mut fields = Vec::new();
    let mut select = Vec::new();
    for (field, required) in FIELDS {
        let found = cols.iter().find(|(n, _)| n == field);
        match (found, required) {
            (None, true) => bail!(
                "the [source] query returns no column named '{field}'; name the right expression `AS {field}`"
            ),
            (Some((_, t)), _) => {
                if let Err(need) = check_type(field, t, c.played_at_type) {
                    bail!(
                        "field {field}: the query's column '{field}' has type {}, but {field} needs {need}; cast it in the query{}",
                        t.name(),
                        if field == "played_at" { " or set played_at_type" } else { "" }
                    );
                }
            }
            (None, false) => {}
        }
        let src = found.map(|_| format!("q.{}", quote_ident(field)));
        let sql = field_sql(
            field,
            src.as_deref(),
            c.played_at_type,
            c.timezone.as_deref(),
        );
        fields.push(FieldInfo {
            field,
            source: src.clone().unwrap_or_else(|| {
                if field == "loved" {
                    "false".into()
                } else {
                    "NULL".into()
                }
            }),
            source_type: found.map_or("-".into(), |(_, t)| t.name().to_string()),
            sql: sql.clone(),
        });
        select.push(sql);
    }
    let table = SourceTable {
        server: None,
        name: "query".into(),
        relation: format!("(SELECT {} FROM ({query}) AS q) AS src", select.join(", ")),
        sampled: None,
        stats_table: None,
        versioned: Err("the source is a query, whose rows carry no row versions".into()),
        mapped: true,
    };
    let resolved = Resolved {
        query: table.select_sql(),
        fields,
    };
    Ok((table, resolved))
}

/// `sql` without the semicolons (and the whitespace and comments around them) at its end. Quoted
/// text, quoted names, comments and dollar-quoted bodies are skipped, so a `;` or `--` inside
/// them is left alone.
fn strip_trailing_semicolons(sql: &str) -> &str {
    let b = sql.as_bytes();
    // The end of the last token that is not a semicolon, and of the last token at all.
    let (mut keep, mut i) = (0usize, 0usize);
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                continue;
            }
            b'\'' | b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
            }
            b'$' => {
                // A dollar quote: $$ or $tag$ … the same tag.
                let tag_end = sql[i + 1..].find('$').map(|e| i + 1 + e).filter(|&e| {
                    sql[i + 1..e]
                        .chars()
                        .all(|ch| ch.is_alphanumeric() || ch == '_')
                });
                match tag_end {
                    Some(e) => {
                        let tag = &sql[i..=e];
                        i = sql[e + 1..]
                            .find(tag)
                            .map_or(b.len(), |f| e + 1 + f + tag.len());
                    }
                    None => i += 1,
                }
            }
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => i += 1,
        }
        if b[start] != b';' {
            keep = i;
        }
    }
    &sql[..keep]
}

#[cfg(test)]
mod strip_tests {
    use super::strip_trailing_semicolons as strip;

    #[test]
    fn trailing_semicolons_and_comments_go_quoted_text_stays() {
        assert_eq!(strip("SELECT 1;"), "SELECT 1");
        assert_eq!(strip("SELECT 1 ; -- the end\n"), "SELECT 1");
        assert_eq!(strip("SELECT 1 -- ends here"), "SELECT 1");
        assert_eq!(strip("SELECT ';' AS x;;"), "SELECT ';' AS x");
        assert_eq!(strip("SELECT '--' AS x"), "SELECT '--' AS x");
        assert_eq!(strip("SELECT $f$;$f$ /* ; */ ;"), "SELECT $f$;$f$");
        assert_eq!(
            strip("SELECT \"a;\" FROM t /* c */"),
            "SELECT \"a;\" FROM t"
        );
        assert_eq!(strip("SELECT 'it''s'"), "SELECT 'it''s'");
    }
}
