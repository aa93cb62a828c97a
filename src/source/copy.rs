//! The direct reader: the same partition queries as the connectorx reader, sent as
//! `COPY (…) TO STDOUT (FORMAT binary)` and decoded straight into Arrow arrays.
//!
//! Why a second reader: connectorx 0.4.6 moves every cell through a type-dispatched function
//! pointer, a `try_get` with a type check, two divisions to find the cell's row and column, and
//! — for every text and uuid cell — an owned `String` that is copied into the Arrow builder and
//! freed. On this project's 11 columns that was the pipeline's largest CPU cost (measured with
//! `perf`; the numbers are in the README). Here a row is one slice of the COPY stream: fields
//! are cut by their length prefixes and appended to typed builders, text is validated and
//! copied once, and a uuid is formatted into a stack buffer. Each parallel partition keeps its
//! connection for the whole run instead of opening a pool per window.
//!
//! The Arrow types are the ones connectorx produces (strings as Utf8 instead of LargeUtf8, which
//! polars imports the same way), so everything after the reader is shared, and the connectorx
//! reader stays available (`--reader connectorx`) and is tested against this one. (Arrow string
//! views, which polars takes without converting, made the criterion benches of the conversion
//! and the normaliser faster, but a 5M-row load slower: the decoder spent 0.2–0.5 CPU-seconds
//! more building views than the normaliser saved; docs/HISTORY.md.)

use super::conn::{describe_error, ReadOnlyClient, SourceError, SourceUrl};
use super::mapping::SourceTable;
use super::query::{slice_query, Filter, Slice};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{
    ArrayRef, BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use postgres::types::Type;
use std::sync::Arc;

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 UTC.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The binary COPY signature that starts the stream.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// A source column type the decoder understands. The reader's queries cast every field to one
/// of these (see `source::mapping`), so anything else is a bug or an unmapped custom query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    I16,
    I32,
    I64,
    Text,
    Uuid,
    TimestampTz,
    Bool,
}

impl Kind {
    fn of(name: &str, t: &Type) -> Result<Self> {
        Ok(match *t {
            Type::INT2 => Kind::I16,
            Type::INT4 => Kind::I32,
            Type::INT8 => Kind::I64,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Kind::Text,
            Type::UUID => Kind::Uuid,
            Type::TIMESTAMPTZ => Kind::TimestampTz,
            Type::BOOL => Kind::Bool,
            _ => bail!(
                "source column {name} has type {t}, which the reader does not decode; \
                 cast it in the mapping (see `scrobsync config example`) or use --reader connectorx"
            ),
        })
    }
}

/// One column being filled.
enum Builder {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    Text(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::I16 => Builder::I16(Int16Builder::with_capacity(rows)),
            Kind::I32 => Builder::I32(Int32Builder::with_capacity(rows)),
            Kind::I64 => Builder::I64(Int64Builder::with_capacity(rows)),
            Kind::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::Uuid => Builder::Text(StringBuilder::with_capacity(rows, rows * 36)),
            Kind::TimestampTz => Builder::Ts(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("+00:00"),
            ),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// chrono's limits, which connectorx (and so the normaliser) use for `infinity`/`-infinity`.
fn infinity_sentinels() -> (i64, i64) {
    (
        chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros(),
        chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_micros(),
    )
}

/// Formats a uuid the way PostgreSQL prints it: lowercase, hyphenated.
fn format_uuid(b: &[u8; 16], out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 15) as usize];
        o += 2;
    }
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Cuts a binary COPY stream into rows: the header, then tuples of length-prefixed fields, then
/// the trailer. Each complete row is handed over as the (offset, length or -1) of its fields in
/// the buffer; a unit split across buffers is left for the next call.
struct Cutter {
    columns: usize,
    /// (offset, length or -1) of each field of the tuple being cut.
    fields: Vec<(usize, i32)>,
    header_done: bool,
    trailer_seen: bool,
}

impl Cutter {
    fn new(columns: usize) -> Self {
        Self {
            columns,
            fields: Vec::with_capacity(columns),
            header_done: false,
            trailer_seen: false,
        }
    }

    /// Cuts every complete unit (header, tuple, trailer) at the start of `buf`, calling `row`
    /// for each tuple with the tuple's bytes and its fields; returns how many bytes were used.
    fn feed(
        &mut self,
        buf: &[u8],
        mut row: impl FnMut(&[u8], &[(usize, i32)]) -> Result<()>,
    ) -> Result<usize> {
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                bail!("the COPY stream does not start with the binary signature");
            }
            let ext = be_i32(&buf[SIGNATURE.len() + 4..]) as usize;
            let end = SIGNATURE.len() + 8 + ext;
            if buf.len() < end {
                return Ok(0);
            }
            pos = end;
            self.header_done = true;
        }
        while pos < buf.len() && !self.trailer_seen {
            let b = &buf[pos..];
            match self.tuple(b)? {
                Some(0) => {}
                Some(used) => {
                    row(b, &self.fields)?;
                    pos += used;
                    continue;
                }
                None => break,
            }
            pos += 2; // the trailer
        }
        Ok(pos)
    }

    /// Cuts one tuple at the start of `b` into `self.fields`: Some(its length), Some(0) for the
    /// trailer, None if it is not complete yet.
    fn tuple(&mut self, b: &[u8]) -> Result<Option<usize>> {
        if b.len() < 2 {
            return Ok(None);
        }
        let n = be_i16(b);
        if n == -1 {
            self.trailer_seen = true;
            return Ok(Some(0));
        }
        if n as usize != self.columns {
            bail!(
                "a COPY row has {n} fields where {} were expected",
                self.columns
            );
        }
        self.fields.clear();
        let mut pos = 2;
        for _ in 0..n {
            if b.len() < pos + 4 {
                return Ok(None);
            }
            let len = be_i32(&b[pos..]);
            pos += 4;
            let start = pos;
            if len > 0 {
                pos += len as usize;
                if b.len() < pos {
                    return Ok(None);
                }
            }
            self.fields.push((start, len));
        }
        Ok(Some(pos))
    }
}

/// Decodes the binary COPY stream of one query into one record batch.
struct Decoder {
    names: Vec<String>,
    kinds: Vec<Kind>,
    builders: Vec<Builder>,
    cutter: Cutter,
    sentinels: (i64, i64),
    rows: usize,
}

impl Decoder {
    fn new(names: &[String], kinds: &[Kind], rows_hint: usize) -> Self {
        Self {
            names: names.to_vec(),
            kinds: kinds.to_vec(),
            builders: kinds.iter().map(|k| Builder::new(*k, rows_hint)).collect(),
            cutter: Cutter::new(kinds.len()),
            sentinels: infinity_sentinels(),
            rows: 0,
        }
    }

    /// Decodes every complete unit at the start of `buf`; returns how many bytes were used.
    fn feed(&mut self, buf: &[u8]) -> Result<usize> {
        let Decoder {
            names,
            kinds,
            builders,
            cutter,
            sentinels,
            rows,
        } = self;
        cutter.feed(buf, |b, fields| {
            append_row(names, kinds, builders, *sentinels, b, fields)?;
            *rows += 1;
            Ok(())
        })
    }

    fn finish(mut self) -> Result<RecordBatch> {
        if !self.cutter.trailer_seen {
            bail!("the COPY stream ended without its trailer");
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let fields: Vec<Field> = self
            .names
            .iter()
            .zip(&columns)
            .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
            .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// Appends one cut row to the column builders.
fn append_row(
    names: &[String],
    kinds: &[Kind],
    builders: &mut [Builder],
    sentinels: (i64, i64),
    b: &[u8],
    fields: &[(usize, i32)],
) -> Result<()> {
    for (col, &(start, len)) in fields.iter().enumerate() {
        let v = (len >= 0).then(|| &b[start..start + len as usize]);
        match (&mut builders[col], v) {
            (Builder::I16(c), v) => c.append_option(v.map(be_i16)),
            (Builder::I32(c), v) => c.append_option(v.map(be_i32)),
            (Builder::I64(c), v) => c.append_option(v.map(be_i64)),
            (Builder::Bool(c), v) => c.append_option(v.map(|x| x[0] != 0)),
            (Builder::Text(c), None) => c.append_null(),
            (Builder::Text(c), Some(x)) if kinds[col] == Kind::Uuid => {
                let mut s = [0u8; 36];
                let bytes: &[u8; 16] = x
                    .try_into()
                    .map_err(|_| anyhow!("a uuid field has {} bytes", x.len()))?;
                format_uuid(bytes, &mut s);
                c.append_value(std::str::from_utf8(&s).expect("hex digits are ASCII"));
            }
            (Builder::Text(c), Some(x)) => {
                let s = std::str::from_utf8(x).map_err(|_| {
                    anyhow!(
                        "source column {} holds text that is not UTF-8; set the database \
                         encoding to UTF8 or convert the column",
                        names[col]
                    )
                })?;
                c.append_value(s);
            }
            (Builder::Ts(c), None) => c.append_null(),
            (Builder::Ts(c), Some(x)) => {
                let us = unix_micros(be_i64(x), sentinels).ok_or_else(|| {
                    let id = match fields.first() {
                        Some(&(s, 8)) => be_i64(&b[s..]).to_string(),
                        _ => "?".into(),
                    };
                    anyhow!(
                        "source row with id {id} has a {} after the year 294246, which \
                         has no Unix time in microseconds; fix or delete that row",
                        names[col]
                    )
                })?;
                c.append_value(us);
            }
        }
    }
    Ok(())
}

/// A binary timestamptz (microseconds from 2000-01-01 UTC) as Unix microseconds, with
/// `infinity`/`-infinity` as the given sentinels; None past the year 294246.
fn unix_micros(pg: i64, sentinels: (i64, i64)) -> Option<i64> {
    match pg {
        i64::MAX => Some(sentinels.0),
        i64::MIN => Some(sentinels.1),
        v => v.checked_add(PG_EPOCH_US),
    }
}

/// Decodes a complete binary COPY stream of the canonical columns ([`super::COLUMNS`]) with the
/// default table's types: for benches and tests that must not need a database.
pub fn decode_canonical(stream: &[u8]) -> Result<RecordBatch> {
    use Kind::*;
    let kinds = [
        I64,
        Text,
        TimestampTz,
        Text,
        Uuid,
        Text,
        Uuid,
        Text,
        Uuid,
        I32,
        Bool,
    ];
    let names: Vec<String> = super::COLUMNS.iter().map(|c| c.to_string()).collect();
    let mut dec = Decoder::new(&names, &kinds, 1024);
    let used = dec.feed(stream)?;
    if used != stream.len() {
        bail!(
            "the COPY stream has {} bytes after its trailer or an incomplete row",
            stream.len() - used
        );
    }
    dec.finish()
}

/// Streams `COPY (query) TO STDOUT (FORMAT binary)` through `feed`, which uses what it can of
/// each buffer and returns how many bytes that was.
fn copy_stream(
    client: &mut ReadOnlyClient,
    query: &str,
    mut feed: impl FnMut(&[u8]) -> Result<usize>,
) -> Result<()> {
    client.copy_out(
        &format!("COPY ({query}) TO STDOUT (FORMAT binary)"),
        |reader| {
            // PostgreSQL sends one message per row, and the client hands them over one by one:
            // decode straight from the message, and only buffer a unit that is split across
            // messages.
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let chunk = reader
                    .fill_buf()
                    .map_err(|e| SourceError::from_chain(&e, describe_error(&e)))?;
                if chunk.is_empty() {
                    break;
                }
                let len = chunk.len();
                if pending.is_empty() {
                    let used = feed(chunk)?;
                    pending.extend_from_slice(&chunk[used..]);
                } else {
                    pending.extend_from_slice(chunk);
                    let used = feed(&pending)?;
                    pending.drain(..used);
                }
                reader.consume(len);
            }
            if !pending.is_empty() {
                bail!("the COPY stream ended inside a row");
            }
            Ok(())
        },
    )
}

/// Streams `COPY (query) TO STDOUT (FORMAT binary)` through a decoder.
fn copy_query(
    client: &mut ReadOnlyClient,
    query: &str,
    names: &[String],
    kinds: &[Kind],
    rows_hint: usize,
) -> Result<RecordBatch> {
    let mut dec = Decoder::new(names, kinds, rows_hint);
    copy_stream(client, query, |buf| dec.feed(buf))?;
    dec.finish()
}

/// One field of a streamed row (see [`for_each_row`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    /// Text as sent (UTF-8: the session's client encoding), not validated.
    Text(&'a [u8]),
    Uuid(&'a [u8; 16]),
    /// A timestamptz in Unix microseconds; `infinity`/`-infinity` as `i64::MAX`/`i64::MIN`.
    Micros(i64),
    Bool(bool),
}

impl Value<'_> {
    /// The field as text bytes (a uuid formatted as PostgreSQL prints it, into `scratch`).
    pub fn text<'s>(&'s self, scratch: &'s mut [u8; 36]) -> Option<&'s [u8]> {
        match self {
            Value::Text(t) => Some(t),
            Value::Uuid(u) => {
                format_uuid(u, scratch);
                Some(&scratch[..])
            }
            _ => None,
        }
    }
}

/// The column types of a query's select list, for [`for_each_row`].
pub fn column_kinds(client: &mut ReadOnlyClient, query: &str) -> Result<Vec<Kind>> {
    let stmt = client.prepare(query)?;
    stmt.columns()
        .iter()
        .map(|c| Kind::of(c.name(), c.type_()))
        .collect()
}

/// Streams the rows of `query` (whose columns have `kinds`) one at a time through `row`,
/// without building batches: for work that only looks at each row once (verify's hashing).
pub fn for_each_row(
    client: &mut ReadOnlyClient,
    query: &str,
    kinds: &[Kind],
    mut row: impl FnMut(&[Value]) -> Result<()>,
) -> Result<()> {
    const MAX_COLUMNS: usize = 16;
    if kinds.len() > MAX_COLUMNS {
        bail!("a streamed query has more than {MAX_COLUMNS} columns");
    }
    let mut cutter = Cutter::new(kinds.len());
    let mut seen_trailer = false;
    copy_stream(client, query, |buf| {
        let used = cutter.feed(buf, |b, fields| {
            let mut vals = [Value::Null; MAX_COLUMNS];
            for ((&(start, len), kind), out) in fields.iter().zip(kinds).zip(vals.iter_mut()) {
                let v = (len >= 0).then(|| &b[start..start + len as usize]);
                *out = match (kind, v) {
                    (_, None) => Value::Null,
                    (Kind::I16, Some(x)) => Value::Int(be_i16(x).into()),
                    (Kind::I32, Some(x)) => Value::Int(be_i32(x).into()),
                    (Kind::I64, Some(x)) => Value::Int(be_i64(x)),
                    (Kind::Text, Some(x)) => Value::Text(x),
                    (Kind::Uuid, Some(x)) => Value::Uuid(
                        x.try_into()
                            .map_err(|_| anyhow!("a uuid field has {} bytes", x.len()))?,
                    ),
                    (Kind::TimestampTz, Some(x)) => Value::Micros(
                        unix_micros(be_i64(x), (i64::MAX, i64::MIN)).ok_or_else(|| {
                            let id = match fields.first() {
                                Some(&(s, 8)) => be_i64(&b[s..]).to_string(),
                                _ => "?".into(),
                            };
                            anyhow!(
                                "source row with id {id} has a timestamp after the year \
                                     294246, which has no Unix time in microseconds; fix or \
                                     delete that row"
                            )
                        })?,
                    ),
                    (Kind::Bool, Some(x)) => Value::Bool(x[0] != 0),
                };
            }
            row(&vals[..kinds.len()])
        })?;
        seen_trailer = cutter.trailer_seen;
        Ok(used)
    })?;
    if !seen_trailer {
        bail!("the COPY stream ended without its trailer");
    }
    Ok(())
}

/// The direct reader: one connection per parallel partition, kept for the whole run.
pub struct CopyReader {
    url: SourceUrl,
    clients: Vec<ReadOnlyClient>,
    /// Column names and kinds of the select list (the same for every slice query).
    columns: Option<(Vec<String>, Vec<Kind>)>,
    rows_hint: usize,
}

impl CopyReader {
    pub fn new(url: SourceUrl, rows_hint: usize) -> Self {
        Self {
            url,
            clients: Vec::new(),
            columns: None,
            rows_hint,
        }
    }

    /// Drops the connections (after a failure: the next window connects afresh).
    pub fn reset(&mut self) {
        self.clients.clear();
    }

    /// Reads one window: one COPY per slice, in parallel on as many connections.
    pub fn read_window(
        &mut self,
        table: &SourceTable,
        filter: &Filter,
        slices: &[Slice],
    ) -> Result<Vec<RecordBatch>> {
        while self.clients.len() < slices.len() {
            self.clients.push(self.url.connect_reader()?);
        }
        let queries: Vec<String> = slices
            .iter()
            .map(|s| slice_query(table, *s, filter))
            .collect();
        if self.columns.is_none() {
            let Some(first) = queries.first() else {
                return Ok(Vec::new());
            };
            let stmt = self.clients[0].prepare(first)?;
            let mut names = Vec::new();
            let mut kinds = Vec::new();
            for c in stmt.columns() {
                kinds.push(Kind::of(c.name(), c.type_())?);
                names.push(c.name().to_string());
            }
            self.columns = Some((names, kinds));
        }
        let (names, kinds) = self.columns.as_ref().expect("set above");
        let hint = self.rows_hint;
        let context =
            |s: &Slice| format!("reading ids {} to {} from PostgreSQL failed", s.lo, s.hi);
        if slices.len() == 1 {
            let batch = copy_query(&mut self.clients[0], &queries[0], names, kinds, hint)
                .with_context(|| context(&slices[0]))?;
            return Ok(vec![batch]);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .clients
                .iter_mut()
                .zip(&queries)
                .map(|(client, q)| scope.spawn(move || copy_query(client, q, names, kinds, hint)))
                .collect();
            handles
                .into_iter()
                .zip(slices)
                .map(|(h, s)| {
                    h.join()
                        .map_err(|_| anyhow!("a reader thread panicked"))?
                        .with_context(|| context(s))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests;
