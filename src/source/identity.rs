//! Which source a target belongs to: the server (host and port), the database and the mapping.
//!
//! A target records the identity of the source it was loaded from. Incremental runs that change
//! it (`sync`, `backfill`, `verify --repair`) refuse another source, because mixing two sources'
//! rows in one target is silent damage: ids and marks of one mean nothing in the other. The
//! password and other connection options are not part of the identity.

use super::conn::SourceUrl;
use super::mapping::SourceTable;
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
            if self.relation == "query" {
                "a mapping query".to_string()
            } else {
                format!("table {}", self.relation)
            }
        )
    }

    /// Whether `self` (the target's) and `other` (this run's) are the same source; a target
    /// written before identities were recorded only knows its server and database.
    pub fn same_as(&self, other: &SourceIdentity) -> bool {
        self.host == other.host
            && self.port == other.port
            && self.database == other.database
            && (self.mapping.is_empty() || self.mapping == other.mapping)
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
}
