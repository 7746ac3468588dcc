//! Structured JSON access log: one line per request, written off the request path.
//!
//! [`AccessLog::log`] serializes an [`AccessLogRecord`] (borrowed fields, no per-field
//! allocation) with `serde_json` into a buffer taken from a small pool, and hands it to a
//! background writer thread through a bounded `std::sync::mpsc::sync_channel` with
//! `try_send`. The request path therefore never waits on disk or stdout:
//!
//! * **Queue full** (writer slower than the request rate, or the disk is stuck): the line is
//!   *dropped*, its buffer returned to the pool, [`AccessLog::dropped`] incremented (and the
//!   optional Prometheus counter [`AccessLogConfig::drop_counter`], normally
//!   `gw_access_log_dropped_total`). Nothing is retried.
//! * **Writer**: while lines keep arriving it *polls* the channel every 5 ms and drains
//!   everything queued into a 64 KiB `BufWriter`; after 1 s without lines it flushes and parks
//!   in a blocking `recv`. Polling matters: a `try_send` to a parked receiver costs the
//!   producer a futex wake-up (~1 µs measured), polling makes it a plain lock-free push. The
//!   buffer is flushed at most [`AccessLogConfig::flush_interval`] (default 100 ms, plus up to
//!   one poll period) after the first unflushed line was written. Write
//!   errors are counted ([`AccessLog::write_errors`]) and warned about with exponential
//!   back-off (1st, 2nd, 4th, ... error); the writer keeps going.
//! * [`AccessLog::flush`] is a barrier for tests and shutdown: it returns once every line
//!   enqueued before the call is written and flushed. Dropping the [`AccessLog`] drains the
//!   queue, flushes and joins the writer thread.
//!
//! Timestamps are RFC 3339 UTC with milliseconds (`2024-02-29T23:59:59.999Z`), formatted by
//! [`UtcTimestamp`] without any date crate. The record carries `ts` explicitly (time is
//! injected by the caller). The flush timer of the writer thread is the only real-time
//! dependency, and tests do not depend on it (they call `flush`).

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::IntCounter;
use serde::{Serialize, Serializer};

/// One access-log line. Field order is the JSON key order. `None` serializes as `null`.
#[derive(Debug, Clone, Serialize)]
pub struct AccessLogRecord<'a> {
    /// Request completion time, rendered as RFC 3339 UTC with millis.
    #[serde(serialize_with = "serialize_ts")]
    pub ts: SystemTime,
    pub request_id: &'a str,
    /// W3C trace id (32 lowercase hex digits) of the trace the request belongs to, `None` if the
    /// request ended before its trace context was set.
    pub trace_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// Request path. Prefer the path without the query string (query strings often carry
    /// secrets); that choice is the caller's.
    pub path: &'a str,
    /// Matched route name, `None` if no route matched.
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    /// Upstream endpoint (`host:port`) of the last attempt, if any.
    pub endpoint: Option<&'a str>,
    /// Status sent to the client.
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Whole request as seen by the client; see [`duration_ms`].
    pub duration_ms: f64,
    /// Time spent in upstream attempts, `None` if the request never reached an upstream.
    pub upstream_duration_ms: Option<f64>,
    /// Rate-limit decision (`"allowed"`, `"rejected"`, `"shadow_rejected"`), `None` if no
    /// policy applied.
    pub limit: Option<&'a str>,
    /// Authenticated subject, `None` if anonymous.
    pub user: Option<&'a str>,
}

/// Milliseconds with microsecond resolution, e.g. `12.345` (prints without float noise).
#[inline]
pub fn duration_ms(d: Duration) -> f64 {
    // u128 -> f64 is exact for any realistic duration (< 2^53 µs ≈ 285 years).
    d.as_micros() as f64 / 1000.0
}

fn serialize_ts<S: Serializer>(ts: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(UtcTimestamp::from_system_time(*ts).as_str())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` on the stack. Times before the epoch clamp to the epoch,
/// times after year 9999 clamp to `9999-12-31T23:59:59.999Z`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UtcTimestamp([u8; 24]);

impl UtcTimestamp {
    /// Largest representable instant, in Unix milliseconds.
    const MAX_MILLIS: u64 = 253_402_300_799_999;

    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::from_unix_millis(ms)
    }

    pub fn from_unix_millis(ms: u64) -> Self {
        let ms = ms.min(Self::MAX_MILLIS);
        let secs = ms / 1000;
        let (y, mo, d) = civil_from_days(secs / 86_400);
        let sod = secs % 86_400;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut b[0..4], y);
        put_digits(&mut b[5..7], mo);
        put_digits(&mut b[8..10], d);
        put_digits(&mut b[11..13], sod / 3600);
        put_digits(&mut b[14..16], sod / 60 % 60);
        put_digits(&mut b[17..19], sod % 60);
        put_digits(&mut b[20..23], ms % 1000);
        Self(b)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

impl fmt::Display for UtcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for UtcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `v` as zero-padded decimal filling `out` (higher digits are truncated).
fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, restricted to non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Where lines go.
#[derive(Default)]
pub enum AccessLogSink {
    /// No access log; [`AccessLog::log`] returns immediately without serializing.
    #[default]
    Off,
    Stdout,
    /// Append to this file (created if missing). No rotation/reopen support.
    File(PathBuf),
    /// Any writer (tests, custom sinks); used from the writer thread only.
    Writer(Box<dyn Write + Send>),
}

impl fmt::Debug for AccessLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("Off"),
            Self::Stdout => f.write_str("Stdout"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// Access-log settings.
#[derive(Debug)]
pub struct AccessLogConfig {
    pub sink: AccessLogSink,
    /// Lines that may wait for the writer before new ones are dropped (min 1).
    pub queue_capacity: usize,
    /// Maximum time a written line may sit unflushed in the writer's buffer.
    pub flush_interval: Duration,
    /// Also incremented for every dropped line (e.g. [`super::Metrics::access_log_dropped`]).
    pub drop_counter: Option<IntCounter>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            sink: AccessLogSink::Off,
            queue_capacity: 16 * 1024,
            flush_interval: Duration::from_millis(100),
            drop_counter: None,
        }
    }
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutcome {
    /// Queued for the writer thread.
    Enqueued,
    /// Queue full (or writer gone): line discarded and counted.
    Dropped,
    /// Sink is [`AccessLogSink::Off`].
    Disabled,
}

/// Handle to the access log; share it (`Arc<AccessLog>` or `&'static`) across workers.
pub struct AccessLog {
    active: Option<Active>,
}

struct Active {
    tx: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<io::Result<()>>),
}

const INITIAL_BUF: usize = 512;
const MAX_POOLED_BUF: usize = 8 * 1024;
const MAX_POOLED: usize = 1024;
const WRITER_BATCH: usize = 256;
const WRITER_BUF: usize = 64 * 1024;
/// Writer poll period while lines keep arriving.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// After this long without lines the writer parks in a blocking `recv`.
const IDLE_BEFORE_PARK: Duration = Duration::from_secs(1);

struct Shared {
    dropped: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    drop_counter: Option<IntCounter>,
    /// Cleared line buffers handed back by the writer, so steady state allocates nothing.
    pool: Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    #[inline]
    fn take_buf(&self) -> Vec<u8> {
        self.pool
            .lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(INITIAL_BUF))
    }

    #[inline]
    fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= MAX_POOLED_BUF {
            buf.clear();
            let mut pool = self.pool.lock();
            if pool.len() < MAX_POOLED {
                pool.push(buf);
            }
        }
    }

    fn recycle_all(&self, bufs: &mut Vec<Vec<u8>>) {
        if bufs.is_empty() {
            return;
        }
        let mut pool = self.pool.lock();
        for mut buf in bufs.drain(..) {
            if pool.len() >= MAX_POOLED {
                break;
            }
            if buf.capacity() <= MAX_POOLED_BUF {
                buf.clear();
                pool.push(buf);
            }
        }
        drop(pool);
        bufs.clear();
    }

    #[inline]
    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.drop_counter {
            c.inc();
        }
    }

    fn count_error(&self, what: &str, e: &io::Error) {
        let n = self.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(error = %e, errors = n, "access log {what} failed");
        }
    }
}

impl AccessLog {
    /// Opens the sink (so a bad path fails at startup) and starts the writer thread
    /// (`gw-access-log`). [`AccessLogSink::Off`] starts nothing.
    pub fn new(config: AccessLogConfig) -> io::Result<Self> {
        let (mut log, writer) = Self::build(config)?;
        if let Some(w) = writer {
            log.start(w)?;
        }
        Ok(log)
    }

    /// An access log that discards everything.
    pub fn disabled() -> Self {
        Self { active: None }
    }

    /// `false` for [`AccessLogSink::Off`]: callers may skip building records.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.active.is_some()
    }

    /// Serializes `record` and enqueues it without blocking; see the module docs for the
    /// drop policy.
    pub fn log(&self, record: &AccessLogRecord<'_>) -> LogOutcome {
        let Some(a) = &self.active else {
            return LogOutcome::Disabled;
        };
        let mut buf = a.shared.take_buf();
        if serde_json::to_writer(&mut buf, record).is_err() {
            // Unreachable for this record type (io into a Vec cannot fail); count as a drop.
            a.shared.recycle(buf);
            a.shared.count_drop();
            return LogOutcome::Dropped;
        }
        buf.push(b'\n');
        let Some(tx) = &a.tx else {
            a.shared.recycle(buf);
            a.shared.count_drop();
            return LogOutcome::Dropped;
        };
        match tx.try_send(Msg::Line(buf)) {
            Ok(()) => LogOutcome::Enqueued,
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                if let Msg::Line(buf) = msg {
                    a.shared.recycle(buf);
                }
                a.shared.count_drop();
                LogOutcome::Dropped
            }
        }
    }

    /// Blocks until every line enqueued before this call is written and the sink flushed.
    /// For tests and shutdown only (waits for queue space and for the writer).
    pub fn flush(&self) -> io::Result<()> {
        let Some(a) = &self.active else {
            return Ok(());
        };
        let stopped = || io::Error::other("access log writer stopped");
        let tx = a.tx.as_ref().ok_or_else(stopped)?;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(ack_tx)).map_err(|_| stopped())?;
        ack_rx.recv().map_err(|_| stopped())?
    }

    /// Lines dropped because the queue was full (or the writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.active
            .as_ref()
            .map_or(0, |a| a.shared.dropped.load(Ordering::Relaxed))
    }

    /// Lines handed to the sink's buffer by the writer thread.
    pub fn lines_written(&self) -> u64 {
        self.active
            .as_ref()
            .map_or(0, |a| a.shared.written.load(Ordering::Relaxed))
    }

    /// Failed writes/flushes to the sink.
    pub fn write_errors(&self) -> u64 {
        self.active
            .as_ref()
            .map_or(0, |a| a.shared.write_errors.load(Ordering::Relaxed))
    }

    /// Creates the channel and opens the sink, without starting the writer thread.
    fn build(config: AccessLogConfig) -> io::Result<(Self, Option<Writer>)> {
        let out: Box<dyn Write + Send> = match config.sink {
            AccessLogSink::Off => return Ok((Self::disabled(), None)),
            AccessLogSink::Stdout => Box::new(io::stdout()),
            AccessLogSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            AccessLogSink::Writer(w) => w,
        };
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            drop_counter: config.drop_counter,
            pool: Mutex::new(Vec::new()),
        });
        let writer = Writer {
            rx,
            out: BufWriter::with_capacity(WRITER_BUF, out),
            shared: Arc::clone(&shared),
            interval: config.flush_interval,
            dirty_since: None,
            spent: Vec::with_capacity(WRITER_BATCH + 1),
        };
        let log = Self {
            active: Some(Active {
                tx: Some(tx),
                shared,
                thread: None,
            }),
        };
        Ok((log, Some(writer)))
    }

    fn start(&mut self, writer: Writer) -> io::Result<()> {
        let handle = std::thread::Builder::new()
            .name("gw-access-log".into())
            .spawn(move || writer.run())?;
        if let Some(a) = &mut self.active {
            a.thread = Some(handle);
        }
        Ok(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued, flush and exit.
        drop(self.tx.take());
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.is_enabled())
            .field("dropped", &self.dropped())
            .finish()
    }
}

struct Writer {
    rx: Receiver<Msg>,
    out: BufWriter<Box<dyn Write + Send>>,
    shared: Arc<Shared>,
    interval: Duration,
    /// When the oldest unflushed line was written.
    dirty_since: Option<Instant>,
    spent: Vec<Vec<u8>>,
}

impl Writer {
    fn run(mut self) {
        let poll = POLL_INTERVAL
            .min(self.interval)
            .max(Duration::from_millis(1));
        let mut last_activity = Instant::now();
        'outer: loop {
            let (mut n, mut batch) = (0usize, 0usize);
            loop {
                match self.rx.try_recv() {
                    Ok(m) => {
                        self.handle(m);
                        n += 1;
                        batch += 1;
                        if batch == WRITER_BATCH {
                            batch = 0;
                            self.shared.recycle_all(&mut self.spent);
                            self.flush_if_due();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'outer,
                }
            }
            self.shared.recycle_all(&mut self.spent);
            self.flush_if_due();
            let now = Instant::now();
            if n > 0 {
                last_activity = now;
            }
            if now.duration_since(last_activity) < IDLE_BEFORE_PARK {
                // Busy period: poll, so producers never pay for waking a parked receiver.
                std::thread::sleep(poll);
                continue;
            }
            // Idle: flush and park; the next producer pays one wake-up.
            if self.dirty_since.is_some() {
                let _ = self.flush();
            }
            match self.rx.recv() {
                Ok(m) => {
                    self.handle(m);
                    last_activity = Instant::now();
                }
                Err(_) => break,
            }
        }
        let _ = self.flush();
    }

    fn flush_if_due(&mut self) {
        if self
            .dirty_since
            .is_some_and(|since| since.elapsed() >= self.interval)
        {
            let _ = self.flush();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Line(buf) => {
                match self.out.write_all(&buf) {
                    Ok(()) => {
                        self.shared.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => self.shared.count_error("write", &e),
                }
                if self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
                self.spent.push(buf);
            }
            Msg::Flush(ack) => {
                let r = self.flush();
                let _ = ack.send(r);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.dirty_since = None;
        let r = self.out.flush();
        if let Err(e) = &r {
            self.shared.count_error("flush", e);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "gw-access-log-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(i: u64) -> AccessLogRecord<'static> {
        AccessLogRecord {
            ts: UNIX_EPOCH + Duration::from_millis(1_709_251_199_999 + i),
            request_id: "req-1",
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            client_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            method: "GET",
            path: "/users/42",
            route: Some("users"),
            upstream: Some("users-svc"),
            endpoint: Some("10.0.0.1:8080"),
            status: 200,
            bytes_in: 12,
            bytes_out: 3456 + i,
            duration_ms: duration_ms(Duration::from_micros(12_345)),
            upstream_duration_ms: Some(10.5),
            limit: Some("allowed"),
            user: Some("alice"),
        }
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn timestamp_formatting() {
        let f = |ms| UtcTimestamp::from_unix_millis(ms).to_string();
        assert_eq!(f(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(f(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(f(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(f(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        assert_eq!(f(4_107_542_400_007), "2100-03-01T00:00:00.007Z");
        assert_eq!(f(1_735_689_599_123), "2024-12-31T23:59:59.123Z");
        assert_eq!(f(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(f(u64::MAX), "9999-12-31T23:59:59.999Z");
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(
            UtcTimestamp::from_system_time(before).as_str(),
            "1970-01-01T00:00:00.000Z"
        );
        // Cross-check every day boundary across 1970..2500 against a naive day counter.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for day in 0..(530 * 366) {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let dim = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > dim[(m - 1) as usize] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn duration_ms_is_clean() {
        assert_eq!(duration_ms(Duration::from_micros(12_345)), 12.345);
        assert_eq!(
            serde_json::to_string(&duration_ms(Duration::from_nanos(1_500_999))).unwrap(),
            "1.5"
        );
    }

    #[test]
    fn file_sink_lines_are_json_with_all_fields() {
        let dir = temp_dir("fields");
        let path = dir.join("access.log");
        std::fs::write(&path, "existing line\n").unwrap();
        let log = AccessLog::new(AccessLogConfig {
            sink: AccessLogSink::File(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert!(log.is_enabled());
        assert_eq!(log.log(&record(0)), LogOutcome::Enqueued);
        let anon = AccessLogRecord {
            trace_id: None,
            client_ip: None,
            route: None,
            upstream: None,
            endpoint: None,
            upstream_duration_ms: None,
            limit: None,
            user: None,
            method: "PROPFIND",
            path: "/we\"ird\n\u{e9}",
            status: 404,
            ..record(1)
        };
        assert_eq!(log.log(&anon), LogOutcome::Enqueued);
        log.flush().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "existing line"); // append mode
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        let expected = serde_json::json!({
            "ts": "2024-02-29T23:59:59.999Z",
            "request_id": "req-1",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "client_ip": "10.1.2.3",
            "method": "GET",
            "path": "/users/42",
            "route": "users",
            "upstream": "users-svc",
            "endpoint": "10.0.0.1:8080",
            "status": 200,
            "bytes_in": 12,
            "bytes_out": 3456,
            "duration_ms": 12.345,
            "upstream_duration_ms": 10.5,
            "limit": "allowed",
            "user": "alice",
        });
        assert_eq!(v, expected);
        // Key order follows the struct.
        assert!(lines[1].starts_with("{\"ts\":\"2024-02-29T23:59:59.999Z\",\"request_id\""));

        let v: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 16);
        for k in [
            "trace_id",
            "client_ip",
            "route",
            "upstream",
            "endpoint",
            "upstream_duration_ms",
            "limit",
            "user",
        ] {
            assert!(obj[k].is_null(), "{k}");
        }
        assert_eq!(obj["ts"], "2024-03-01T00:00:00.000Z");
        assert_eq!(obj["path"], "/we\"ird\n\u{e9}");
        assert_eq!(obj["status"], 404);
        assert_eq!(log.dropped(), 0);
        assert_eq!(log.lines_written(), 2);
        assert_eq!(log.write_errors(), 0);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let dir = temp_dir("drops");
        let path = dir.join("access.log");
        let counter = IntCounter::new("dropped", "test").unwrap();
        let (mut log, writer) = AccessLog::build(AccessLogConfig {
            sink: AccessLogSink::File(path.clone()),
            queue_capacity: 4,
            drop_counter: Some(counter.clone()),
            ..Default::default()
        })
        .unwrap();
        // Writer not started yet: the queue fills deterministically.
        let outcomes: Vec<_> = (0..10).map(|i| log.log(&record(i))).collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == LogOutcome::Enqueued)
                .count(),
            4
        );
        assert!(outcomes[..4].iter().all(|o| *o == LogOutcome::Enqueued));
        assert!(outcomes[4..].iter().all(|o| *o == LogOutcome::Dropped));
        assert_eq!(log.dropped(), 6);
        assert_eq!(counter.get(), 6);

        log.start(writer.unwrap()).unwrap();
        log.flush().unwrap();
        assert_eq!(log.log(&record(10)), LogOutcome::Enqueued);
        log.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let outs: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["bytes_out"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(outs, [3456, 3457, 3458, 3459, 3466]);
        assert_eq!(log.dropped(), 6);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drop_drains_and_flushes_without_explicit_flush() {
        let buf = SharedBuf::default();
        let log = AccessLog::new(AccessLogConfig {
            sink: AccessLogSink::Writer(Box::new(buf.clone())),
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        })
        .unwrap();
        for i in 0..1000 {
            assert_eq!(log.log(&record(i)), LogOutcome::Enqueued);
        }
        drop(log);
        let text = String::from_utf8(buf.0.lock().clone()).unwrap();
        assert_eq!(text.lines().count(), 1000);
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }

    #[test]
    fn concurrent_producers() {
        let buf = SharedBuf::default();
        let log = AccessLog::new(AccessLogConfig {
            sink: AccessLogSink::Writer(Box::new(buf.clone())),
            queue_capacity: 100_000,
            ..Default::default()
        })
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..2_500 {
                        log.log(&record(t * 10_000 + i));
                    }
                });
            }
        });
        log.flush().unwrap();
        assert_eq!(log.dropped(), 0);
        let text = String::from_utf8(buf.0.lock().clone()).unwrap();
        let mut outs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["bytes_out"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        outs.sort_unstable();
        outs.dedup();
        assert_eq!(outs.len(), 10_000);
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let log = AccessLog::new(AccessLogConfig {
            sink: AccessLogSink::Writer(Box::new(Failing)),
            ..Default::default()
        })
        .unwrap();
        log.log(&record(0));
        assert!(log.flush().is_err());
        assert!(log.write_errors() >= 1);
        // Still accepting lines afterwards.
        assert_eq!(log.log(&record(1)), LogOutcome::Enqueued);
    }

    #[test]
    fn off_and_bad_path() {
        let log = AccessLog::new(AccessLogConfig::default()).unwrap();
        assert!(!log.is_enabled());
        assert_eq!(log.log(&record(0)), LogOutcome::Disabled);
        log.flush().unwrap();
        assert_eq!(log.dropped(), 0);
        let dir = temp_dir("bad");
        assert!(AccessLog::new(AccessLogConfig {
            sink: AccessLogSink::File(dir.join("missing-dir").join("x.log")),
            ..Default::default()
        })
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<AccessLog>();
    }
}
