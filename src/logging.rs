//! Structured logs: one JSON object per line on stderr, so journald, Loki or any log
//! shipper can index the fields without parsing prose.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// Severity of a log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
