//! The read-only source session: every statement scrobsync reads the source with goes through
//! [`ReadOnlyClient`], which guarantees three things a plain client does not:
//!
//! - **It cannot write.** Each statement runs inside `START TRANSACTION READ ONLY`: PostgreSQL
//!   refuses to make a transaction read-write once its first query has started ("transaction
//!   read-write mode must be set before any query"), so nothing inside the statement can turn
//!   writing back on, whatever it did to the session before. Every such transaction ends with a
//!   ROLLBACK, never a COMMIT: the few writes PostgreSQL still allows in a read-only transaction
//!   (large objects through `lo_from_bytea`, for one) are undone as well.
//! - **It leaves no session state behind.** A ROLLBACK undoes settings, but not session-level
//!   advisory locks: a mapping that takes `pg_advisory_lock` would keep it on the planning
//!   connection and make every reader connection wait for it for ever. Each transaction is
//!   followed by `pg_advisory_unlock_all()`, in the same round trip as the ROLLBACK.
//! - **It never waits for ever.** A server that stalls with the TCP connection alive (a stopped
//!   backend, a hung proxy) sends nothing, and keepalives see nothing wrong. The socket is
//!   wrapped so that a read that gets no byte for the read timeout (`--read-timeout`) while a
//!   statement runs fails the connection with a transient error, which the driver retries on a
//!   fresh connection. And every wait polls the Ctrl-C flag, so an interrupt ends it at once.
//!
//! Built on tokio-postgres with a runtime of its own per connection (the connection's I/O runs
//! only while a statement waits, on the calling thread), like the synchronous `postgres` client,
//! which offers no way to wrap the socket.

use super::SourceError;
use anyhow::Result;
use futures_core::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read timeout in milliseconds (0: none), set once from `--read-timeout`.
static READ_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_READ_TIMEOUT.as_millis() as u64);

/// How long a statement may go without a byte from the server unless `--read-timeout` says.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Sets the read timeout of every source connection opened from now on (`None`: no limit).
pub fn set_read_timeout(limit: Option<Duration>) {
    let ms = limit.map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64);
    READ_TIMEOUT_MS.store(ms, Ordering::SeqCst);
}

fn read_timeout() -> Option<Duration> {
    match READ_TIMEOUT_MS.load(Ordering::SeqCst) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// What the socket wrapper and the client share about the connection's waits.
#[derive(Debug, Default)]
struct Watch {
    /// Bumped whenever the client starts waiting (a new statement, the next chunk of a
    /// stream): a read timer started before then is stale.
    epoch: AtomicU64,
    /// Set when the read timeout fired.
    stalled: AtomicBool,
}

impl Watch {
    fn touch(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

/// The connection's transport, TCP or a Unix socket.
#[derive(Debug)]
enum Transport {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// A transport whose reads fail after `limit` without a byte while the client waits.
struct Watched {
    inner: Transport,
    limit: Option<Duration>,
    watch: Arc<Watch>,
    timer: Option<(u64, Pin<Box<tokio::time::Sleep>>)>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watched({:?})", self.inner)
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
        };
        if polled.is_ready() {
            this.timer = None;
            return polled;
        }
        let Some(limit) = this.limit else {
            return Poll::Pending;
        };
        let epoch = this.watch.epoch.load(Ordering::Relaxed);
        match &mut this.timer {
            Some((e, _)) if *e == epoch => {}
            t => *t = Some((epoch, Box::pin(tokio::time::sleep(limit)))),
        }
        let (_, sleep) = this.timer.as_mut().expect("set above");
        if sleep.as_mut().poll(cx).is_ready() {
            this.watch.stalled.store(true, Ordering::SeqCst);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                stall_message(limit),
            )));
        }
        Poll::Pending
    }
}

fn stall_message(limit: Duration) -> String {
    format!(
        "the server sent nothing for {} s while a statement ran (--read-timeout)",
        limit.as_secs_f64()
    )
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Why a wait ended early.
enum Stop {
    Interrupted,
    TimedOut,
}

/// Runs `fut` to completion on `rt`, checking the Ctrl-C flag every 100 ms, and giving up after
/// `limit` if one is given.
fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    limit: Option<Duration>,
    fut: impl Future<Output = T>,
) -> Result<T, Stop> {
    block_on_with(rt, limit, true, fut)
}

/// [`block_on`], optionally deaf to Ctrl-C (for the clean-up a Ctrl-C itself asks for).
fn block_on_with<T>(
    rt: &tokio::runtime::Runtime,
    limit: Option<Duration>,
    interruptible: bool,
    fut: impl Future<Output = T>,
) -> Result<T, Stop> {
    rt.block_on(async {
        let mut fut = std::pin::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let deadline = limit.map(|l| Box::pin(tokio::time::sleep(l)));
        let mut deadline = deadline;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if let Some(d) = deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Stop::TimedOut));
                }
            }
            while tick.poll_tick(cx).is_ready() {
                if interruptible && crate::cancel::requested() {
                    return Poll::Ready(Err(Stop::Interrupted));
                }
            }
            Poll::Pending
        })
        .await
    })
}

type Params<'a> = &'a [&'a (dyn postgres::types::ToSql + Sync)];

/// A source connection that can only read (see the module header).
pub struct ReadOnlyClient {
    /// `None` only while dropping.
    client: Option<tokio_postgres::Client>,
    /// `None` only while dropping (shut down without waiting for its blocking tasks, such as a
    /// name lookup that hangs).
    rt: Option<tokio::runtime::Runtime>,
    /// The task that drives the connection.
    task: Option<tokio::task::JoinHandle<()>>,
    watch: Arc<Watch>,
    limit: Option<Duration>,
    /// The connection task's error, if it ended with one.
    failure: Arc<Mutex<Option<String>>>,
    /// Where to send a cancel request (see [`ReadOnlyClient::cancel_running`]).
    host: String,
    port: u16,
    tls: Option<postgres_openssl::MakeTlsConnector>,
    /// An exported snapshot that this client's COPYs read in (see [`SnapshotHolder`]).
    snapshot: Option<String>,
}

/// How a source connection is made (from `SourceUrl`).
pub struct Connect<'a> {
    pub config: &'a tokio_postgres::Config,
    pub host: &'a str,
    pub port: u16,
    /// `None`: plain; `Some`: TLS as the config's sslmode says.
    pub tls: Option<postgres_openssl::MakeTlsConnector>,
    pub keepalives: bool,
    pub connect_limit: Option<Duration>,
}

/// Why a connection could not be made.
pub enum Failure {
    /// The server refused (authentication, database, …) or the protocol failed.
    Pg(tokio_postgres::Error),
    /// The socket could not be opened.
    Io(io::Error),
    /// No answer within the connect limit.
    TimedOut,
    Interrupted,
}

/// Connects to the server.
pub fn connect(c: Connect<'_>) -> Result<ReadOnlyClient, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Failure::Io)?;
    // As in libpq, a Unix socket is never encrypted, whatever sslmode says.
    let tls = c.tls.filter(|_| !is_socket(c.host));
    let watch = Arc::new(Watch::default());
    let limit = read_timeout();
    let failure = Arc::new(Mutex::new(None));
    let attempt = async {
        let inner = open_transport(c.host, c.port, c.keepalives)
            .await
            .map_err(Failure::Io)?;
        let stream = Watched {
            inner,
            limit,
            watch: watch.clone(),
            timer: None,
        };
        let failure = failure.clone();
        let client = match tls.clone() {
            None => {
                let (client, conn) = c
                    .config
                    .connect_raw(stream, tokio_postgres::NoTls)
                    .await
                    .map_err(Failure::Pg)?;
                (client, tokio::spawn(drive(conn, failure)))
            }
            Some(mut tls) => {
                let tls = tokio_postgres::tls::MakeTlsConnect::<Watched>::make_tls_connect(
                    &mut tls, c.host,
                )
                .map_err(|e| Failure::Io(io::Error::other(e)))?;
                let (client, conn) = c
                    .config
                    .connect_raw(stream, tls)
                    .await
                    .map_err(Failure::Pg)?;
                (client, tokio::spawn(drive(conn, failure)))
            }
        };
        Ok::<_, Failure>(client)
    };
    let out = block_on(&rt, c.connect_limit, attempt);
    let failed = |rt: tokio::runtime::Runtime, f: Failure| {
        rt.shutdown_background();
        Err(f)
    };
    match out {
        Ok(Ok((client, task))) => Ok(ReadOnlyClient {
            client: Some(client),
            rt: Some(rt),
            task: Some(task),
            watch,
            limit,
            failure,
            host: c.host.to_string(),
            port: c.port,
            tls,
            snapshot: None,
        }),
        Ok(Err(e)) => failed(rt, e),
        Err(Stop::TimedOut) => failed(rt, Failure::TimedOut),
        Err(Stop::Interrupted) => failed(rt, Failure::Interrupted),
    }
}

fn is_socket(host: &str) -> bool {
    host.starts_with('/') || host.starts_with('@')
}

/// Drives a connection until it ends, keeping its error for the client's messages.
async fn drive<F>(conn: F, failure: Arc<Mutex<Option<String>>>)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "source connection ended");
        if let Ok(mut f) = failure.lock() {
            *f = Some(super::describe_error(&e));
        }
    }
}

async fn open_transport(host: &str, port: u16, keepalives: bool) -> io::Result<Transport> {
    if is_socket(host) {
        // libpq reads a leading `@` as Linux's abstract namespace.
        let path = format!("{host}/.s.PGSQL.{port}").replacen('@', "\0", 1);
        return Ok(Transport::Unix(
            tokio::net::UnixStream::connect(path).await?,
        ));
    }
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    if keepalives {
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10))
            .with_retries(3);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka)?;
    }
    Ok(Transport::Tcp(tcp))
}

impl ReadOnlyClient {
    /// Waits for `fut`, turning a stall, a lost connection or an interrupt into the error to
    /// report.
    fn wait<T>(
        &self,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, SourceError> {
        self.watch.touch();
        match block_on(self.rt(), None, fut) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let e = self.explain(e);
                if self.watch.stalled.load(Ordering::SeqCst) {
                    self.cancel_running();
                }
                Err(e)
            }
            Err(Stop::Interrupted) => {
                self.cancel_running();
                Err(SourceError::interrupted())
            }
            Err(Stop::TimedOut) => unreachable!("no deadline was set"),
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the client")
    }

    fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("the client lives until dropped")
    }

    /// Asks the server to stop what this connection's backend runs (a stalled, interrupted or
    /// abandoned statement would otherwise go on computing; a retry would run it a second
    /// time). Best effort, on a connection of its own, within two seconds.
    fn cancel_running(&self) {
        let token = self.client().cancel_token();
        let (host, port, tls) = (self.host.as_str(), self.port, self.tls.clone());
        let send = async {
            let inner = open_transport(host, port, false).await.ok()?;
            let stream = Watched {
                inner,
                limit: None,
                watch: Arc::new(Watch::default()),
                timer: None,
            };
            match tls {
                None => token
                    .cancel_query_raw(stream, tokio_postgres::NoTls)
                    .await
                    .ok(),
                Some(mut tls) => {
                    let tls = tokio_postgres::tls::MakeTlsConnect::<Watched>::make_tls_connect(
                        &mut tls, host,
                    )
                    .ok()?;
                    token.cancel_query_raw(stream, tls).await.ok()
                }
            }
        };
        let sent = block_on_with(self.rt(), Some(Duration::from_secs(2)), false, send);
        tracing::debug!(sent = matches!(sent, Ok(Some(()))), "cancel request");
    }

    fn explain(&self, e: tokio_postgres::Error) -> SourceError {
        if self.watch.stalled.load(Ordering::SeqCst) {
            let limit = self.limit.unwrap_or_default();
            return SourceError::stalled(stall_message(limit));
        }
        let mut err = SourceError::from(e);
        if err.transient {
            if let Some(cause) = self.failure.lock().ok().and_then(|f| f.clone()) {
                err.add_cause(&cause);
            }
        }
        err
    }

    /// Runs `f` inside a read-only transaction that is rolled back, then frees the session.
    fn in_read_only<'s, T, F>(
        &'s self,
        f: impl FnOnce(&'s tokio_postgres::Client) -> F,
    ) -> Result<T, SourceError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        self.in_read_only_as(BEGIN, f)
    }

    /// [`Self::in_read_only`], the transaction begun with `begin`.
    fn in_read_only_as<'s, T, F>(
        &'s self,
        begin: &str,
        f: impl FnOnce(&'s tokio_postgres::Client) -> F,
    ) -> Result<T, SourceError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        self.wait(self.client().batch_execute(begin))?;
        let out = self.wait(f(self.client()));
        let end = self.wait(self.client().batch_execute(END));
        let out = out?;
        end?;
        Ok(out)
    }

    pub fn query(&mut self, sql: &str, params: Params) -> Result<Vec<postgres::Row>, SourceError> {
        self.in_read_only(|c| c.query(sql, params))
    }

    pub fn query_one(&mut self, sql: &str, params: Params) -> Result<postgres::Row, SourceError> {
        self.in_read_only(|c| c.query_one(sql, params))
    }

    /// [`Self::query_one`] with a plan that gives rows in the same order each time a part of it
    /// runs: no parallel workers, no scan joining another one midway.
    pub fn query_one_repeatable(&mut self, sql: &str) -> Result<postgres::Row, SourceError> {
        self.in_read_only_as(REPEATABLE, |c| c.query_one(sql, &[]))
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: Params,
    ) -> Result<Option<postgres::Row>, SourceError> {
        self.in_read_only(|c| c.query_opt(sql, params))
    }

    /// Prepares (parses and describes) a statement, for its column names and types.
    pub fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, SourceError> {
        self.in_read_only(|c| c.prepare(sql))
    }

    /// Runs a query and hands its rows to `f` one at a time, without holding them all.
    pub fn for_each_row(
        &mut self,
        sql: &str,
        mut f: impl FnMut(&postgres::Row) -> Result<()>,
    ) -> Result<()> {
        self.wait(self.client().batch_execute(BEGIN))?;
        let out = (|| -> Result<()> {
            let stream = self.wait(self.client().query_raw(
                sql,
                std::iter::empty::<&(dyn postgres::types::ToSql + Sync)>(),
            ))?;
            let mut stream = Box::pin(stream);
            while let Some(row) = self.next(&mut stream)? {
                if let Err(e) = f(&row) {
                    // The rest of the rows are not wanted: stop the server sending them.
                    self.cancel_running();
                    return Err(e);
                }
            }
            Ok(())
        })();
        let end = self.wait(self.client().batch_execute(END));
        out?;
        end?;
        Ok(())
    }

    /// The next item of a stream of the server's answers.
    fn next<S, T>(&self, stream: &mut Pin<Box<S>>) -> Result<Option<T>, SourceError>
    where
        S: Stream<Item = Result<T, tokio_postgres::Error>> + ?Sized,
    {
        // An answer the connection task has already parsed is taken without entering the
        // runtime (which costs a timer, locks and clock reads: per row of a COPY, a large
        // share of the reader's time). Only when none is waiting does the runtime run the
        // connection until one arrives; that poll registers the real waker.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(item) = stream.as_mut().poll_next(&mut cx) {
            self.watch.touch();
            return match item.transpose() {
                Ok(v) => Ok(v),
                Err(e) => self.wait(std::future::ready(Err(e))),
            };
        }
        self.wait(async {
            std::future::poll_fn(|cx| stream.as_mut().poll_next(cx))
                .await
                .transpose()
        })
    }

    /// Makes this client's COPYs read in the snapshot another connection exported (None: each
    /// in a snapshot of its own).
    pub fn set_snapshot(&mut self, id: Option<&str>) {
        self.snapshot = id.map(str::to_string);
    }

    /// Begins a repeatable-read transaction on this connection and exports its snapshot, so
    /// that statements on other connections see exactly the same rows (`SET TRANSACTION
    /// SNAPSHOT`). The transaction stays open for as long as the holder lives.
    pub fn export_snapshot(self) -> Result<SnapshotHolder, SourceError> {
        self.wait(
            self.client()
                .batch_execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )?;
        let row = self.wait(self.client().query_one("SELECT pg_export_snapshot()", &[]))?;
        Ok(SnapshotHolder {
            id: row.get(0),
            client: self,
        })
    }

    /// Runs `COPY (…) TO STDOUT` inside a read-only transaction and hands the stream to `read`.
    pub fn copy_out<T>(
        &mut self,
        sql: &str,
        read: impl FnOnce(&mut dyn std::io::BufRead) -> Result<T>,
    ) -> Result<T> {
        let begin = match &self.snapshot {
            Some(id) => format!(
                "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 SET TRANSACTION SNAPSHOT '{}'",
                id.replace('\'', "''")
            ),
            None => BEGIN.to_string(),
        };
        self.wait(self.client().batch_execute(&begin))?;
        let out = (|| -> Result<T> {
            let stream = self.wait(self.client().copy_out(sql))?;
            let mut reader = CopyReader {
                client: self,
                stream: Box::pin(stream),
                chunk: bytes::Bytes::new(),
                ended: false,
            };
            let out = read(&mut reader);
            if out.is_err() && !reader.ended && !self.watch.stalled.load(Ordering::SeqCst) {
                // Stopped early (a decoding error): stop the server sending the rest.
                self.cancel_running();
            }
            out
        })();
        let end = self.wait(self.client().batch_execute(END));
        let out = out?;
        end?;
        Ok(out)
    }
}

/// A connection holding a transaction open whose snapshot other connections read in (see
/// [`ReadOnlyClient::export_snapshot`]). Dropping it ends the transaction with the connection.
pub struct SnapshotHolder {
    client: ReadOnlyClient,
    pub id: String,
}

impl SnapshotHolder {
    /// Whether the transaction is still open (an import fails once it has ended).
    pub fn alive(&self) -> bool {
        self.client
            .wait(self.client.client().simple_query("SELECT 1"))
            .is_ok()
    }
}

/// What begins every transaction.
const BEGIN: &str = "START TRANSACTION READ ONLY";

/// [`BEGIN`], for plans that read rows in a repeatable order.
const REPEATABLE: &str =
    "START TRANSACTION READ ONLY; SET LOCAL max_parallel_workers_per_gather = 0; \
     SET LOCAL synchronize_seqscans = off";

/// What ends every read-only transaction: its ROLLBACK, and the release of any session-level
/// advisory lock its statement took (one round trip).
const END: &str = "ROLLBACK; SELECT pg_advisory_unlock_all()";

/// A COPY stream as `BufRead`: each chunk is one message of the server.
struct CopyReader<'c> {
    client: &'c ReadOnlyClient,
    stream: Pin<Box<tokio_postgres::CopyOutStream>>,
    chunk: bytes::Bytes,
    /// The stream ended (completely, or with an error of the server).
    ended: bool,
}

impl io::Read for CopyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = io::BufRead::fill_buf(self)?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for CopyReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.is_empty() {
            match self.client.next(&mut self.stream) {
                Ok(Some(bytes)) => self.chunk = bytes,
                Ok(None) => {
                    self.ended = true;
                    break;
                }
                Err(e) => {
                    self.ended = true;
                    let kind = if e.transient {
                        io::ErrorKind::TimedOut
                    } else {
                        io::ErrorKind::Other
                    };
                    return Err(io::Error::new(kind, e));
                }
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amt: usize) {
        bytes::Buf::advance(&mut self.chunk, amt);
    }
}

impl Drop for ReadOnlyClient {
    /// Says goodbye to the server (a Terminate message, as the synchronous client does, so the
    /// server logs no broken connection), within a moment, then lets the runtime go without
    /// waiting for anything it still runs.
    fn drop(&mut self) {
        drop(self.client.take());
        if let (Some(rt), Some(task)) = (self.rt.as_ref(), self.task.take()) {
            if !crate::cancel::requested() {
                let _ = block_on_with(rt, Some(Duration::from_millis(200)), false, task);
            }
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
