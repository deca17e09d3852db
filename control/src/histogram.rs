//! A Prometheus histogram with the client libraries' default buckets (what the original's
//! histograms use), rendered in the text exposition format.

use std::fmt::Write as _;

/// The default buckets, in seconds.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Observations of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at most each bucket's bound (not cumulative).
    buckets: [u64; DEFAULT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = DEFAULT_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the series `name` with `labels` (`k="v",…`, already escaped) to `out`:
    /// cumulative `_bucket` lines up to `+Inf`, then `_sum` and `_count`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in DEFAULT_BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// `v` escaped for a label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_everything() {
        let mut h = Histogram::default();
        for s in [0.001, 0.005, 0.3, 20.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "name=\"q\"");
        assert!(
            out.contains("x_seconds_bucket{name=\"q\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{name=\"q\",le=\"0.25\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{name=\"q\",le=\"0.5\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{name=\"q\",le=\"10\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{name=\"q\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_sum{name=\"q\"} 20.30"), "{out}");
        assert!(out.contains("x_seconds_count{name=\"q\"} 4\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
