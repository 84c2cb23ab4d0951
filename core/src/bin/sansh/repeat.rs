//! `--repeat N`: the command N times, one after another, each on a fresh
//! channel of the one connection; then latency percentiles on stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use sansh::tokio::{Client, ClientError};

/// Latency summary of the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises latency samples.
pub fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    let total: Duration = s.iter().sum();
    Summary {
        runs: s.len(),
        p50: percentile(&s, 50.0),
        p90: percentile(&s, 90.0),
        p99: percentile(&s, 99.0),
        mean: if s.is_empty() { Duration::ZERO } else { total / s.len() as u32 },
        min: s.first().copied().unwrap_or_default(),
        max: s.last().copied().unwrap_or_default(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `command` `n` times; returns the last run's exit code (for a
/// signal, 255 as ssh) or the connection's error.
pub async fn run(client: &Client, command: &str, n: u32) -> Result<i32, ClientError> {
    let mut samples = Vec::with_capacity(n as usize);
    let mut code = 0;
    for _ in 0..n {
        let t = Instant::now();
        let out = client.exec(command).await?;
        samples.push(t.elapsed());
        let _ = std::io::stdout().write_all(&out.stdout);
        let _ = std::io::stderr().write_all(&out.stderr);
        code = crate::exit_code(out.exit.as_ref());
    }
    let _ = std::io::stdout().flush();
    let s = summarize(&samples);
    eprintln!(
        "sansh: {} runs of {command:?} over one connection: p50 {}, p90 {}, p99 {}, mean {} (min {}, max {})",
        s.runs,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.mean),
        ms(s.min),
        ms(s.max)
    );
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = summarize(&samples);
        assert_eq!(
            (s.p50, s.p90, s.p99),
            (Duration::from_millis(50), Duration::from_millis(90), Duration::from_millis(99))
        );
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let one = summarize(&[Duration::from_millis(3)]);
        assert_eq!(
            (one.p50, one.p99, one.max),
            (Duration::from_millis(3), Duration::from_millis(3), Duration::from_millis(3))
        );
    }
}
