//! Structured logs: one JSON object per line on stderr, so journald, Loki or any log
//! shipper can index the fields without parsing prose.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// Severity of a log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes `{"ts_ms": .., "level": .., "event": .., ...fields}` as one line.
pub fn event(level: Level, event: &str, fields: Value) {
    let ts_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut line = Map::new();
    line.insert("ts_ms".into(), json!(ts_ms));
    line.insert("level".into(), json!(level.as_str()));
    line.insert("event".into(), json!(event));
    if let Value::Object(fields) = fields {
        line.extend(fields);
    }
    // One write(2) per line: stderr is unbuffered, and formatting straight into it would
    // issue a system call per JSON token (measurable at a thousand submissions a second).
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    // A log line that cannot be written must not take the service down.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// How often [`limited_event`] writes one event at most.
pub const LIMITED_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Like [`event`], for events that repeat with every request or connection while
/// something is wrong (a database outage fails every request): the same event (name and
/// level) is written at most once per [`LIMITED_EVENT_INTERVAL`], and the next line
/// written carries `"suppressed": N`, the occurrences left out since the previous one.
pub fn limited_event(level: Level, name: &'static str, mut fields: Value) {
    static LIMITER: LazyLock<RateLimiter> =
        LazyLock::new(|| RateLimiter::new(LIMITED_EVENT_INTERVAL));
    let Some(suppressed) = LIMITER.admit(level, name, Instant::now()) else {
        return;
    };
    if suppressed > 0 {
        if let Value::Object(fields) = &mut fields {
            fields.insert("suppressed".into(), json!(suppressed));
        }
    }
    event(level, name, fields);
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

    #[test]
    fn one_line_per_interval_and_event_then_the_count_of_those_left_out() {
        let limiter = RateLimiter::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(
            limiter.admit(Level::Error, "request-failed", at(0)),
            Some(0)
        );
        for ms in 1..=999 {
            assert_eq!(limiter.admit(Level::Error, "request-failed", at(ms)), None);
        }
        // Other names and other levels of the same name have intervals of their own.
        assert_eq!(
            limiter.admit(Level::Warn, "request-failed", at(500)),
            Some(0)
        );
        assert_eq!(limiter.admit(Level::Error, "tls-refused", at(500)), Some(0));
        assert_eq!(
            limiter.admit(Level::Error, "request-failed", at(1000)),
            Some(999)
        );
        assert_eq!(
            limiter.admit(Level::Error, "request-failed", at(1500)),
            None
        );
        // After a quiet spell the next occurrence is written with what was left out.
        assert_eq!(
            limiter.admit(Level::Error, "request-failed", at(60_000)),
            Some(1)
        );
        assert_eq!(
            limiter.admit(Level::Error, "request-failed", at(61_000)),
            Some(0)
        );
        // A clock that steps back (another thread's earlier reading) is not an interval.
        assert_eq!(limiter.admit(Level::Error, "request-failed", at(0)), None);
    }
}
