//! Dimension attributes (`mbid`, `duration_ms`) checked and repaired against the source.
//!
//! The rule: an artist, album or track carries the first non-NULL value in ascending source-id
//! order. A full load computes it exactly. The incremental modes only set a value when an entity
//! first appears and fill one that is NULL; when the row that supplied a value is edited or
//! deleted, or a lower id arrives later with an earlier value, they cannot know without reading
//! every row of the entity. So `verify` compares, per dimension, a digest of (identity, values)
//! of every entity the source's rows name with the same digest over the entities the target's
//! scrobbles reference (computed in `modes::verify` as it streams the rows), and
//! `verify --repair` recomputes the values from the source here.

use crate::sink::facts::{AttributeKind, AttributeUpdate};
use crate::sink::target::Target;
use crate::source::conn::ReadOnlyClient;
use crate::source::plan::SourceTable;
use crate::source::SourceUrl;
use anyhow::{Context, Result};
use serde::Serialize;

/// The three dimensions with attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Artists,
    Albums,
    Tracks,
}

pub const DIMENSIONS: [Dimension; 3] = [Dimension::Artists, Dimension::Albums, Dimension::Tracks];

impl Dimension {
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Artists => "artists",
            Dimension::Albums => "albums",
            Dimension::Tracks => "tracks",
        }
    }

    /// The source's entities with their first non-NULL values in id order, as text columns:
    /// artist[, album][, track], mbid[, duration].
    fn source_sql(self, rel: &str) -> String {
        let first = |col: &str| {
            format!("(array_agg({col}::text ORDER BY id) FILTER (WHERE {col} IS NOT NULL))[1]")
        };
        match self {
            Dimension::Artists => format!(
                "SELECT artist_name, {} FROM {rel} WHERE isfinite(played_at) GROUP BY artist_name",
                first("artist_mbid")
            ),
            Dimension::Albums => format!(
                "SELECT artist_name, album_name, {} FROM {rel} \
                 WHERE isfinite(played_at) AND album_name IS NOT NULL GROUP BY artist_name, album_name",
                first("album_mbid")
            ),
            Dimension::Tracks => format!(
                "SELECT artist_name, album_name, track_name, {}, {} FROM {rel} \
                 WHERE isfinite(played_at) GROUP BY artist_name, album_name, track_name",
                first("track_mbid"),
                first("duration_ms")
            ),
        }
    }

    fn width(self) -> usize {
        match self {
            Dimension::Artists => 2,
            Dimension::Albums => 3,
            Dimension::Tracks => 5,
        }
    }
}

fn for_each_source_entity(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    d: Dimension,
    mut f: impl FnMut(&[Option<String>]) -> Result<()>,
) -> Result<()> {
    let width = d.width();
    client
        .for_each_row(&d.source_sql(&table.sql_name()), |row| {
            let fields: Vec<Option<String>> = (0..width).map(|i| row.get(i)).collect();
            f(&fields)
        })
        .with_context(|| format!("reading the source's {} attributes failed", d.name()))
}

/// Sets every dimension row's values to what the source's rows give (first non-NULL in id
/// order), in one transaction. Returns the number of rows changed.
pub fn refresh(target: &Target, url: &SourceUrl, table: &SourceTable) -> Result<u64> {
    let mut client = url.connect_reader()?;
    target.write(|conn| {
        let mut changed = 0u64;
        for d in DIMENSIONS {
            let kind = match d {
                Dimension::Artists => AttributeKind::Artist,
                Dimension::Albums => AttributeKind::Album,
                Dimension::Tracks => AttributeKind::Track,
            };
            let mut update = AttributeUpdate::new(conn, kind)?;
            for_each_source_entity(&mut client, table, d, |fields| {
                changed += update.apply(fields)?;
                Ok(())
            })?;
        }
        Ok(changed)
    })
}
