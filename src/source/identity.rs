//! Which source a target belongs to: the server (host and port), the database and the mapping.
//!
//! A target records the identity of the source it was loaded from. Incremental runs that change
//! it (`sync`, `backfill`, `verify --repair`) refuse another source, because mixing two sources'
//! rows in one target is silent damage: ids and marks of one mean nothing in the other. The
//! password and other connection options are not part of the identity.
//!
//! The server is identified by what the connection reached, not by how the source spelled it:
//! `127.1`, `localhost`, a socket folder, `PG*` variables or a service name that lead to the
//! same cluster and database are the same source. The cluster is its system identifier
//! (`pg_control_system()`), else the server's address and port as it reports them.

use super::conn::{ReadOnlyClient, SourceUrl};
use super::mapping::SourceTable;
use anyhow::{Context, Result};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// Host name, lower case; `localhost`, `127.0.0.1` and `::1` all read `localhost`.
    pub host: String,
    pub port: u16,
    pub database: String,
    /// What is read: the default table's name or the mapping's name, for messages.
    pub relation: String,
    /// md5 of the resolved SELECT every read uses, so any change of the mapping shows.
    pub mapping: String,
    /// The cluster and database the connection reached (empty in targets written before).
    #[serde(default)]
    pub server: String,
}

/// The cluster and the database a connection reached, as the server reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerId(pub String);

impl ServerId {
    /// `None` where the server does not tell its system identifier to this role (then the
    /// spelling of the source decides, as for targets written before servers were recorded: an
    /// address depends on the route taken, so it is no identity).
    pub fn of(client: &mut ReadOnlyClient) -> Result<Option<Self>> {
        let row = match client.query_one(
            "SELECT system_identifier::text, current_database()::text FROM pg_control_system()",
            &[],
        ) {
            Ok(row) => row,
            Err(e) if e.transient => {
                return Err(e).context("cannot ask the source which server it is")
            }
            Err(e) => {
                tracing::debug!(error = %e, "no system identifier; the source is identified by its spelling");
                return Ok(None);
            }
        };
        let (cluster, db): (String, String) = (row.get(0), row.get(1));
        Ok(Some(Self(format!("{cluster}/{db}"))))
    }
}

impl SourceIdentity {
    pub fn of(url: &SourceUrl, table: &SourceTable) -> Self {
        let (host, port, database) = url.server_identity();
        let host = host.to_ascii_lowercase();
        let host = match host.trim_start_matches('[').trim_end_matches(']') {
            "localhost" | "127.0.0.1" | "::1" | "" => "localhost".to_string(),
            _ => host,
        };
        let digest = Md5::digest(table.select_sql().as_bytes());
        Self {
            host,
            port,
            database,
            relation: table.name.clone(),
            mapping: digest.iter().map(|b| format!("{b:02x}")).collect(),
            server: table.server.as_ref().map_or(String::new(), |s| s.0.clone()),
        }
    }

    /// The stored form (`_scrobsync_state.source_identity`).
    pub fn to_state(&self) -> String {
        serde_json::to_string(self).expect("serialisable")
    }

    pub fn from_state(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }

    /// `database 'music' on db.example:5432, table scrobbles`
    pub fn describe(&self) -> String {
        format!(
            "database '{}' on {}:{}, {}",
            self.database,
            self.host,
            self.port,
            self.what()
        )
    }

    /// Whether `self` (the target's) and `other` (this run's) reach the same server and
    /// database; a target written before servers were recorded only knows the spelling.
    pub fn same_server(&self, other: &SourceIdentity) -> bool {
        if !self.server.is_empty() && !other.server.is_empty() {
            return self.server == other.server;
        }
        self.host == other.host && self.port == other.port && self.database == other.database
    }

    /// Whether `self` (the target's) and `other` (this run's) are the same source; a target
    /// written before identities were recorded only knows its server and database.
    pub fn same_as(&self, other: &SourceIdentity) -> bool {
        self.same_server(other) && (self.mapping.is_empty() || self.mapping == other.mapping)
    }

    /// Whether the stored identity lacks something this run knows (then it is recorded).
    pub fn needs_update(&self) -> bool {
        self.mapping.is_empty() || self.server.is_empty()
    }

    /// How `other` (this run's) differs from `self` (the target's), in words.
    pub fn difference(&self, other: &SourceIdentity) -> String {
        if self.same_server(other) {
            format!(
                "with {} whose SELECT differs from this run's (the mapping changed)",
                self.what()
            )
        } else {
            format!("from {}, not from {}", self.describe(), other.describe())
        }
    }

    fn what(&self) -> String {
        if self.relation == "query" {
            "a mapping query".to_string()
        } else {
            format!("table {}", self.relation)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(url: &str) -> SourceIdentity {
        SourceIdentity::of(&SourceUrl::parse(url).unwrap(), &SourceTable::default())
    }

    #[test]
    fn password_and_options_do_not_matter_but_server_and_database_do() {
        let a = id("postgresql://bob:one@127.0.0.1:5432/music");
        assert!(a.same_as(&id("postgresql://bob:two@localhost/music?sslmode=disable")));
        assert!(!a.same_as(&id("postgresql://bob@127.0.0.1:5433/music")));
        assert!(!a.same_as(&id("postgresql://bob@127.0.0.1:5432/other")));
        assert!(!a.same_as(&id("postgresql://bob@db.example:5432/music")));
        assert!(!a.to_state().contains("one"));
        assert_eq!(SourceIdentity::from_state(&a.to_state()), Some(a));
    }

    #[test]
    fn the_server_reached_decides_not_the_spelling() {
        let on = |url: &str, server: &str| SourceIdentity {
            server: server.into(),
            ..id(url)
        };
        let a = on("postgresql://bob@127.0.0.1:5432/music", "42/music");
        assert!(a.same_as(&on("host=/var/run/postgresql dbname=music", "42/music")));
        assert!(!a.same_as(&on("postgresql://bob@127.0.0.1:5432/music", "43/music")));
        let mut other_mapping = on("postgresql://bob@127.1/music", "42/music");
        other_mapping.mapping = "x".into();
        assert!(!a.same_as(&other_mapping));
        assert!(a.difference(&other_mapping).contains("the mapping changed"));
        // Stored before servers were recorded: the spelling decides.
        let old = SourceIdentity::from_state(
            r#"{"host":"localhost","port":5432,"database":"music","relation":"scrobbles","mapping":""}"#,
        )
        .unwrap();
        assert!(old.same_as(&a) && old.needs_update());
    }
}
