//! Retries of model calls: exponential backoff with jitter, honouring `Retry-After`.

use std::time::Duration;

/// How a model client retries a call that failed in a way that may pass (429, 5xx, a
/// timeout or a broken connection before any answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first one.
    pub max_retries: u32,
    /// The first wait; each next one doubles it.
    pub base_delay: Duration,
    /// No wait is longer, not even one a `Retry-After` header asks for: a longer one ends
    /// the retries instead.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first), or `None` to give up: the
    /// retries are spent, or the provider asked for a longer wait than `max_delay`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        match retry_after {
            Some(asked) if asked > self.max_delay => None,
            Some(asked) => Some(asked),
            None => {
                let doubled = self
                    .base_delay
                    .saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX));
                let capped = doubled.min(self.max_delay);
                // Full jitter on the upper half, so that many clients spread out.
                let half = capped / 2;
                Some(half + half.mul_f64(jitter()))
            }
        }
    }
}

/// A number in `[0, 1)`.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// The wait a `Retry-After` header asks for, in its delta-seconds form (an HTTP date is
/// not honoured: the backoff applies then).
#[cfg_attr(not(any(feature = "openai", feature = "anthropic")), allow(dead_code))]
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for (retry, most) in [(0, 100), (1, 200), (2, 300), (3, 300)] {
            let delay = policy.delay(retry, None).unwrap();
            assert!(delay <= Duration::from_millis(most), "{retry}: {delay:?}");
            assert!(
                delay >= Duration::from_millis(most / 2),
                "{retry}: {delay:?}"
            );
        }
        assert_eq!(policy.delay(4, None), None, "retries spent");
        assert_eq!(
            policy.delay(0, Some(Duration::from_millis(250))),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(1))),
            None,
            "too long a wait"
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(RetryPolicy::none().delay(0, None), None);
    }
}
