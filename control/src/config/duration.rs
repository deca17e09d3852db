//! Go's duration syntax (`time.ParseDuration`): the original's config carries durations
//! as Go strings (`"10s"`, `"1m30s"`) or as plain numbers of nanoseconds.

use std::time::Duration;

use serde_json::Value;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not Go's syntax (a number without a unit, an unknown unit, an empty string).
    #[error("invalid duration {0:?}")]
    Syntax(String),
    /// Below zero.
    #[error("negative duration {0:?}")]
    Negative(String),
    /// A JSON value that is neither a string nor a non-negative integer.
    #[error("expected a duration string or nanoseconds, got {0}")]
    NotADuration(String),
}

/// A duration from JSON: a Go duration string or a non-negative number of nanoseconds.
pub fn from_json(v: &Value) -> Result<Duration, DurationError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_nanos)
            .ok_or_else(|| DurationError::NotADuration(n.to_string())),
        Value::String(s) => parse_go_duration(s),
        other => Err(DurationError::NotADuration(other.to_string())),
    }
}

/// Parses Go's `time.ParseDuration` syntax (`"10s"`, `"1m30s"`, `"1.5h"`, `"300ms"`, `"0"`),
/// non-negative only.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError::Syntax(s.to_string());
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * nanos_per;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}
