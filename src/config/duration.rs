//! Durations as users type them: `30s`, `5m`, `1h 30m` (humantime's forms), or a bare number
//! in the unit of the flag's older name (`--handshake-timeout-secs 10`,
//! `--database-operation-timeout-ms 5000`), which is still accepted beside the new one.

use std::time::Duration;

/// A duration whose bare numbers are seconds.
pub fn seconds(text: &str) -> Result<Duration, String> {
    parse(text, Duration::from_secs)
}

/// A duration whose bare numbers are milliseconds.
pub fn millis(text: &str) -> Result<Duration, String> {
    parse(text, Duration::from_millis)
}

fn parse(text: &str, bare: fn(u64) -> Duration) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<u64>() {
        return Ok(bare(number));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("{err}: give a duration such as 30s, 5m, 1h or 250ms (or a bare number in the flag's old unit)")
    })
}

/// How a duration is shown back (the defaults in `--help`).
pub fn shown(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_is_read_in_humantime_or_as_a_bare_number_in_the_old_unit() {
        assert_eq!(seconds("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(seconds("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(seconds("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(millis("5000"), Ok(Duration::from_secs(5)));
        assert_eq!(millis("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(millis("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        let refused = seconds("soon").unwrap_err();
        assert!(refused.contains("such as 30s"), "{refused}");
        assert!(seconds("-5").is_err(), "no negative durations");
    }

    #[test]
    fn a_default_is_shown_as_it_would_be_typed() {
        assert_eq!(shown(Duration::from_secs(30 * 24 * 3600)), "30days");
        assert_eq!(shown(Duration::from_millis(2500)), "2s 500ms");
    }
}
