//! What the source role may do. scrobsync only reads (every statement in a read-only
//! transaction that is rolled back), but SQL in a mapping is code and runs with the role's
//! rights, and a ROLLBACK cannot undo everything: writes through `dblink` or `postgres_fdw` to
//! another session, replication slots, `pg_stat_reset()`, sequences advanced by `nextval()`,
//! signals to other backends. A role that cannot write is the only complete guard, so a role that
//! can is named before reading (once per run), and `--require-read-only-role` refuses it.

use super::conn::ReadOnlyClient;
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static REQUIRE: AtomicBool = AtomicBool::new(false);
static CHECKED: AtomicBool = AtomicBool::new(false);

/// `--require-read-only-role`: a role that can write is an error, not a warning.
pub fn require_read_only(yes: bool) {
    REQUIRE.store(yes, Ordering::SeqCst);
}

/// Warns (or, when required, fails) if the connected role can write; checked once per process.
pub fn check(client: &mut ReadOnlyClient) -> Result<()> {
    let require = REQUIRE.load(Ordering::SeqCst);
    if !require && CHECKED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let row = client
        .query_one(
            "WITH w AS (
               SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname !~ '^pg_toast'
                  AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'UPDATE, USAGE')
                           WHEN c.relkind IN ('r', 'p', 'f', 'v', 'm') THEN
                                has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                                OR has_any_column_privilege(c.oid, 'INSERT, UPDATE')
                           ELSE false END
               UNION ALL
               SELECT 'schema ' || quote_ident(nspname) FROM pg_namespace
                WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_'
                  AND has_schema_privilege(oid, 'CREATE')
               UNION ALL
               SELECT 'database ' || quote_ident(current_database())
                WHERE has_database_privilege(current_database(), 'CREATE'))
             SELECT current_user::text, r.rolsuper,
                    (SELECT string_agg(name, ', ') FROM (SELECT name FROM w ORDER BY name LIMIT 3) f),
                    (SELECT count(*) FROM w)
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .context("cannot read the source role's rights")?;
    CHECKED.store(true, Ordering::SeqCst);
    let (role, superuser, writable, n): (String, bool, Option<String>, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let more = if n > 3 { ", …" } else { "" };
    let why = match (superuser, writable) {
        (true, _) => "is a superuser".to_string(),
        (false, Some(what)) => format!("may write or create objects ({what}{more})"),
        (false, None) => return Ok(()),
    };
    let fix = "read as a role that can only read (GRANT pg_read_all_data TO reader);";
    if require {
        bail!("the source role '{role}' {why} and --require-read-only-role is set; {fix}");
    }
    tracing::warn!(
        "the source role '{role}' {why}: SQL in a mapping runs with its rights, and a ROLLBACK cannot undo all of it (dblink, replication slots); {fix} --require-read-only-role refuses such roles"
    );
    Ok(())
}
