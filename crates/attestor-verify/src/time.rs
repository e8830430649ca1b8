//! Unix time as the log and the messages carry it: milliseconds (or seconds) since the
//! epoch, saturating instead of panicking for clocks before 1970 or past `u64`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch at `time` (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Seconds since the Unix epoch now (what claims carry).
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `secs` after the Unix epoch as an RFC 3339 UTC time (the number itself if out of range).
pub fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_saturate() {
        assert_eq!(unix_ms(from_unix_ms(1_800_000_000_123)), 1_800_000_000_123);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
        assert!(now_ms() > 1_700_000_000_000);
        assert_eq!(rfc3339(1_801_353_600), "2027-01-31T00:00:00Z");
    }
}
