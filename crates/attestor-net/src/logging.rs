//! Structured logs and stage timings through `tracing`: one JSON object per line on
//! stderr, so journald, Loki or any log shipper can index the fields without parsing
//! prose, and span durations by pipeline stage for `/metrics`.
//!
//! A line is `{"ts_ms": .., "level": "info"|"warn"|.., "event": NAME, ...fields}`, its
//! keys sorted. Events name themselves with an `event` field:
//! `tracing::warn!(event = "accept-failed", error = %e)`, or [`event_at!`](crate::event_at)
//! when the level is chosen at run time. A field declared but not recorded (an
//! `Option` that is `None`) is written as `null`; a field named `json.NAME` holds JSON
//! text and is written as the value `NAME` (objects nested in a line). `RUST_LOG`
//! filters lines (default `info`); stage timings are kept whatever it says.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Installs the process's subscriber: JSON lines on stderr filtered by `RUST_LOG`, and
/// the stage timer. Call once, first thing in `main`; a second call changes nothing.
pub fn init() {
    // An unset or unreadable RUST_LOG must not silence the service; an unreadable one is
    // reported once the subscriber is in place.
    let (filter, refused) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) => (
            EnvFilter::new("info"),
            std::env::var_os("RUST_LOG").map(|_| e.to_string()),
        ),
    };
    let stages = filter_fn(|meta: &Metadata<'_>| meta.is_span() && STAGES.contains(&meta.name()));
    let subscriber = tracing_subscriber::registry()
        .with(JsonLines(to_stderr).with_filter(filter))
        .with(StageTimer.with_filter(stages));
    // Already set: by an earlier call, or by a test harness that wants its own.
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(error) = refused {
        tracing::warn!(event = "log-filter-refused", error = %error, using = "info");
    }
}

/// Writes an event at a level known only at run time (tracing's macros need a constant):
/// `event_at!(level, "name", field = value, ...)`.
#[macro_export]
macro_rules! event_at {
    ($level:expr, $name:expr $(, $($field:tt)*)?) => {{
        let level: ::tracing::Level = $level;
        if level == ::tracing::Level::ERROR {
            ::tracing::error!(event = $name $(, $($field)*)?)
        } else if level == ::tracing::Level::WARN {
            ::tracing::warn!(event = $name $(, $($field)*)?)
        } else if level == ::tracing::Level::INFO {
            ::tracing::info!(event = $name $(, $($field)*)?)
        } else if level == ::tracing::Level::DEBUG {
            ::tracing::debug!(event = $name $(, $($field)*)?)
        } else {
            ::tracing::trace!(event = $name $(, $($field)*)?)
        }
    }};
}

/// Like [`event_at!`], for events that repeat with every request or connection while
/// something is wrong (a database outage fails every request): the same event (name and
/// level) is written at most once per [`LIMITED_EVENT_INTERVAL`], and the next line
/// written carries `"suppressed": N`, the occurrences left out since the previous one.
#[macro_export]
macro_rules! limited_event {
    ($level:expr, $name:literal $(, $($field:tt)*)?) => {{
        let level: ::tracing::Level = $level;
        match $crate::logging::admit(level, $name) {
            ::std::option::Option::Some(0) => $crate::event_at!(level, $name $(, $($field)*)?),
            ::std::option::Option::Some(suppressed) => {
                $crate::event_at!(level, $name, suppressed $(, $($field)*)?)
            }
            ::std::option::Option::None => {}
        }
    }};
}

/// How often [`limited_event!`](crate::limited_event) writes one event at most.
pub const LIMITED_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Whether [`limited_event!`](crate::limited_event) writes this occurrence now; see
/// [`RateLimiter::admit`].
pub fn admit(level: Level, name: &'static str) -> Option<u64> {
    static LIMITER: LazyLock<RateLimiter> =
        LazyLock::new(|| RateLimiter::new(LIMITED_EVENT_INTERVAL));
    LIMITER.admit(level, name, Instant::now())
}

/// The layer that writes each event as one JSON line, by one call of `W` (stderr in the
/// service, a buffer in tests).
struct JsonLines<W>(W);

fn to_stderr(line: &[u8]) {
    // A log line that cannot be written must not take the service down.
    let _ = std::io::stderr().lock().write_all(line);
}

impl<S: Subscriber, W: Fn(&[u8]) + Send + Sync + 'static> Layer<S> for JsonLines<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut line = fields.0;
        for declared in meta.fields() {
            line.entry(key_of(declared.name())).or_insert(Value::Null);
        }
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        line.insert(
            "ts_ms".into(),
            Value::from(u64::try_from(ts_ms).unwrap_or(u64::MAX)),
        );
        line.insert("level".into(), Value::from(level_name(*meta.level())));
        // Events of other crates carry no name: their module stands in for it.
        line.entry("event")
            .or_insert_with(|| Value::from(meta.target()));
        // One write(2) per line: stderr is unbuffered, and formatting straight into it
        // would issue a system call per JSON token (measurable at a thousand submissions a
        // second), and lines of concurrent threads could interleave.
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        (self.0)(text.as_bytes());
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        _ => "trace",
    }
}

/// The key a field is written under (`json.NAME` as `NAME`).
fn key_of(field: &str) -> String {
    field.strip_prefix("json.").unwrap_or(field).to_string()
}

/// An event's recorded fields as JSON values.
struct Fields(Map<String, Value>);

impl Fields {
    fn text(&mut self, field: &Field, text: String) {
        let value = match field.name().strip_prefix("json.") {
            // Our own serializer's output; should it not parse, the text is still shown.
            Some(_) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            None => Value::String(text),
        };
        self.0.insert(key_of(field.name()), value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not finite (no JSON number): null, as serde_json writes it.
        self.0.insert(key_of(field.name()), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(key_of(field.name()), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(key_of(field.name()), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(key_of(field.name()), Value::from(value));
    }
}

/// The pipeline stages of a submission whose spans are timed, by span name. A fixed set,
/// so `/metrics` has one series per stage whatever spans other code opens.
pub const STAGES: [&str; 7] = [
    "tls_accept",
    "parse",
    "judge",
    "appraise",
    "append",
    "checkpoint",
    "answer",
];

/// A stage's label on the stage histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    stage: &'static str,
}

/// Span durations by stage (seconds), shared by the stage timer and whoever exports them.
pub type StageSeconds = Family<StageLabel, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 10 µs (a parse) to about 5 s (an append waiting on a stalled disk).
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

/// The process's stage histograms, every stage present from the start (at zero).
pub fn stage_seconds() -> StageSeconds {
    static STAGE_SECONDS: LazyLock<StageSeconds> = LazyLock::new(|| {
        let family = StageSeconds::new_with_constructor(stage_histogram);
        for stage in STAGES {
            let _ = family.get_or_create(&StageLabel { stage });
        }
        family
    });
    // A clone shares the histograms.
    STAGE_SECONDS.clone()
}

/// The layer that times stage spans from creation to close: wall time, so an `append`
/// includes the wait for its group commit.
struct StageTimer;

/// When a stage span was opened.
struct Opened(Instant);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StageTimer {
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(stage) = STAGES.iter().find(|s| **s == span.name()) else {
            return;
        };
        let opened = span.extensions().get::<Opened>().map(|Opened(at)| *at);
        if let Some(at) = opened {
            stage_seconds()
                .get_or_create(&StageLabel { stage })
                .observe(at.elapsed().as_secs_f64());
        }
    }
}

/// Decides which occurrences of an event are written: one per interval and event. The
/// clock is the caller's, so it can be tested without waiting.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// Keyed by static names only, so it stays as small as the set of call sites.
    events: Mutex<HashMap<(Level, &'static str), Written>>,
}

/// When an event was last written, and how many occurrences were left out since.
#[derive(Debug)]
struct Written {
    at: Instant,
    suppressed: u64,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            events: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` if the occurrence at `now` is to be written, `n` being how many were
    /// suppressed since the last one written; `None` if it is suppressed.
    pub fn admit(&self, level: Level, name: &'static str, now: Instant) -> Option<u64> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match events.get_mut(&(level, name)) {
            Some(last) if now.saturating_duration_since(last.at) < self.interval => {
                last.suppressed += 1;
                None
            }
            Some(last) => {
                last.at = now;
                Some(std::mem::take(&mut last.suppressed))
            }
            None => {
                let first = Written {
                    at: now,
                    suppressed: 0,
                };
                events.insert((level, name), first);
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The lines `events` writes, each parsed, through a subscriber of this thread only.
    fn lines_of(events: impl FnOnce()) -> Vec<Value> {
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let layer = JsonLines(move |line: &[u8]| {
            // One call per line: each ends with the only newline it holds.
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(line.last(), Some(&b'\n'));
            sink.lock().unwrap().extend_from_slice(line);
        });
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, events);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_keep_the_shape_operators_read() {
        #[derive(serde::Serialize)]
        struct Outcome {
            ok: bool,
            attempts: u32,
        }
        let outcome = serde_json::to_string(&Outcome {
            ok: true,
            attempts: 2,
        })
        .unwrap();
        let reason: Option<&str> = None;
        let error = std::io::Error::other("disk full");
        let lines = lines_of(|| {
            tracing::info!(event = "submission", tenant = "acme", index = 7u64, reason);
            crate::event_at!(Level::WARN, "action-run", json.outcome = %outcome, at_ms = 5u64);
            tracing::error!(event = "append-failed", error = %error, retry_in_s = 1.5);
        });
        assert_eq!(lines.len(), 3);
        let keys = |line: &Value| {
            line.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        // Sorted keys, as serde_json's map wrote them before tracing.
        assert_eq!(
            keys(&lines[0]),
            ["event", "index", "level", "reason", "tenant", "ts_ms"]
        );
        assert_eq!(lines[0]["event"], "submission");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["index"], 7);
        assert_eq!(lines[0]["reason"], Value::Null);
        assert!(lines[0]["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(
            lines[1]["outcome"],
            serde_json::json!({"ok": true, "attempts": 2})
        );
        assert_eq!(lines[2]["level"], "error");
        assert_eq!(lines[2]["error"], "disk full");
        assert_eq!(lines[2]["retry_in_s"], 1.5);
    }

    #[test]
    fn a_limited_event_repeated_at_once_is_written_once() {
        let lines = lines_of(|| {
            for _ in 0..5 {
                crate::limited_event!(Level::ERROR, "test-only-limited", error = "down");
            }
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["event"], "test-only-limited");
        assert_eq!(lines[0].get("suppressed"), None);
    }

    #[test]
    fn one_line_per_interval_and_event_then_the_count_of_those_left_out() {
        let limiter = RateLimiter::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(
            limiter.admit(Level::ERROR, "request-failed", at(0)),
            Some(0)
        );
        for ms in 1..=999 {
            assert_eq!(limiter.admit(Level::ERROR, "request-failed", at(ms)), None);
        }
        // Other names and other levels of the same name have intervals of their own.
        assert_eq!(
            limiter.admit(Level::WARN, "request-failed", at(500)),
            Some(0)
        );
        assert_eq!(limiter.admit(Level::ERROR, "tls-refused", at(500)), Some(0));
        assert_eq!(
            limiter.admit(Level::ERROR, "request-failed", at(1000)),
            Some(999)
        );
        assert_eq!(
            limiter.admit(Level::ERROR, "request-failed", at(1500)),
            None
        );
        // After a quiet spell the next occurrence is written with what was left out.
        assert_eq!(
            limiter.admit(Level::ERROR, "request-failed", at(60_000)),
            Some(1)
        );
        assert_eq!(
            limiter.admit(Level::ERROR, "request-failed", at(61_000)),
            Some(0)
        );
        // A clock that steps back (another thread's earlier reading) is not an interval.
        assert_eq!(limiter.admit(Level::ERROR, "request-failed", at(0)), None);
    }
}
