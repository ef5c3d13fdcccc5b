//! How long to wait before a retry: the endpoint's own hint when it gives one, else capped
//! exponential backoff with full jitter.
//!
//! Endpoints and proxies spell the hint in several ways; the first one present wins:
//!
//! | header | form |
//! |---|---|
//! | `retry-after-ms` | milliseconds |
//! | `retry-after` | seconds, or an HTTP date |
//! | `llm_provider-retry-after-ms`, `llm_provider-retry-after` | the same, passed on by a proxy (LiteLLM prefixes the upstream's headers) |
//! | `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens` (also `llm_provider-` prefixed) | a duration such as `1s`, `6m0s`, `250ms`, plain seconds, or a Unix time; on a 429 only, the later of the two |
//!
//! A hint is capped by the provider's `retry_max_ms`; one in the past, or unreadable, is no hint.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// A proxy's prefix for the headers it passes on from the upstream.
const PROXY_PREFIX: &str = "llm_provider-";

/// Values above this many seconds are Unix times, not durations (2001-09-09).
const UNIX_TIME_FLOOR: f64 = 1e9;

/// The wait an answer asks for before the next attempt, capped at `cap`; none when it gives no
/// readable hint. `rate_limited` (HTTP 429) also reads the rate-limit reset headers, which
/// endpoints send with every answer and which mean "wait" only on a 429.
pub(super) fn wait_hint(
    headers: &HeaderMap,
    rate_limited: bool,
    now: jiff::Timestamp,
    cap: Duration,
) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .or_else(|| headers.get(format!("{PROXY_PREFIX}{name}")))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let hint = get("retry-after-ms")
        .and_then(parse_millis)
        .or_else(|| get("retry-after").and_then(|v| parse_retry_after(v, now)))
        .or_else(|| {
            if !rate_limited {
                return None;
            }
            ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
                .into_iter()
                .filter_map(|name| get(name).and_then(|v| parse_reset(v, now)))
                .max()
        })?;
    Some(hint.min(cap))
}

/// `retry-after-ms`: a non-negative number of milliseconds.
fn parse_millis(value: &str) -> Option<Duration> {
    let ms = value.parse::<f64>().ok()?;
    seconds(ms / 1000.0)
}

/// `Retry-After`: delay-seconds, or an HTTP date (RFC 9110), counted from `now`.
fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(until(at, now))
}

/// `x-ratelimit-reset-*`: a Go-style duration (`1h2m3.5s`, `250ms`, `6m0s`), plain seconds, a
/// Unix time in seconds, or an RFC 3339 time.
fn parse_reset(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        if secs >= UNIX_TIME_FLOOR {
            let at = jiff::Timestamp::from_millisecond((secs * 1000.0) as i64).ok()?;
            return Some(until(at, now));
        }
        return seconds(secs);
    }
    if let Ok(at) = value.parse::<jiff::Timestamp>() {
        return Some(until(at, now));
    }
    parse_go_duration(value)
}

/// A Go `time.Duration` string of non-negative parts: `1h2m3.5s`, `250ms`, `6m0s`, `1.5s`.
fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    seconds(total)
}

/// A finite, non-negative number of seconds as a duration.
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// The time from `now` until `at`; zero when `at` has passed.
fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Wait before retry number `retry` (1-based): full jitter, uniform over
/// `0..=min(max, base * 2^(retry-1))`.
pub(super) fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let ceiling = backoff_ceiling(base, max, retry);
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(rand::random_range(0.0..=ceiling.as_secs_f64()))
}

/// `min(max, base * 2^(retry-1))`, the ceiling of [`backoff`] (retry 1-based).
pub(super) fn backoff_ceiling(base: Duration, max: Duration, retry: u32) -> Duration {
    let exponent = f64::from(retry.saturating_sub(1).min(32));
    let ceiling = (base.as_secs_f64() * exponent.exp2()).min(max.as_secs_f64());
    Duration::from_secs_f64(ceiling.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    const CAP: Duration = Duration::from_secs(60);

    fn now() -> jiff::Timestamp {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn hint(pairs: &[(&str, &str)], rate_limited: bool) -> Option<Duration> {
        wait_hint(&headers(pairs), rate_limited, now(), CAP)
    }

    #[test]
    fn retry_after_in_seconds_fractions_and_capped() {
        assert_eq!(
            hint(&[("retry-after", "3")], false),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            hint(&[("retry-after", "0.5")], true),
            Some(Duration::from_millis(500))
        );
        assert_eq!(hint(&[("retry-after", "86400")], true), Some(CAP));
        assert_eq!(hint(&[("retry-after", "-1")], true), None);
        assert_eq!(hint(&[("retry-after", "soon")], true), None);
        assert_eq!(hint(&[("retry-after", "NaN")], true), None);
        assert_eq!(hint(&[], true), None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        assert_eq!(
            hint(&[("retry-after", "Mon, 07 Dec 2026 12:00:07 GMT")], true),
            Some(Duration::from_secs(7))
        );
        // A date that has passed asks for no wait at all.
        assert_eq!(
            hint(&[("retry-after", "Mon, 07 Dec 2026 11:59:00 GMT")], true),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hint(&[("retry-after", "Tue, 08 Dec 2026 12:00:00 GMT")], true),
            Some(CAP)
        );
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        assert_eq!(
            hint(&[("retry-after-ms", "1500"), ("retry-after", "9")], true),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hint(&[("retry-after-ms", "x"), ("retry-after", "9")], true),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn a_proxys_passed_on_headers_are_read() {
        assert_eq!(
            hint(&[("llm_provider-retry-after", "4")], true),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            hint(&[("llm_provider-retry-after-ms", "40")], false),
            Some(Duration::from_millis(40))
        );
        assert_eq!(
            hint(&[("llm_provider-x-ratelimit-reset-requests", "2s")], true),
            Some(Duration::from_secs(2))
        );
        // The endpoint's own header wins over the one passed on.
        assert_eq!(
            hint(
                &[("retry-after", "1"), ("llm_provider-retry-after", "5")],
                true
            ),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn rate_limit_resets_count_on_a_429_only_and_the_later_wins() {
        let resets = [
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hint(&resets, true), Some(CAP));
        assert_eq!(hint(&resets, false), None);
        assert_eq!(
            hint(&[("x-ratelimit-reset-tokens", "250ms")], true),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            hint(&[("x-ratelimit-reset-requests", "1m30.5s")], true),
            Some(CAP)
        );
        assert_eq!(
            hint(&[("x-ratelimit-reset-requests", "12")], true),
            Some(Duration::from_secs(12))
        );
        // A Unix time, and an RFC 3339 time.
        let unix = (now().as_second() + 3).to_string();
        assert_eq!(
            hint(&[("x-ratelimit-reset-requests", &unix)], true),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            hint(
                &[("x-ratelimit-reset-tokens", "2026-12-07T12:00:02Z")],
                true
            ),
            Some(Duration::from_secs(2))
        );
        // Explicit Retry-After wins over the resets.
        assert_eq!(
            hint(
                &[("retry-after", "2"), ("x-ratelimit-reset-tokens", "30s")],
                true
            ),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn go_durations_parse_and_garbage_does_not() {
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(d("500us"), Some(Duration::from_micros(500)));
        for bad in ["", "s", "5", "5x", "1h-2m", "..s", "1.2.3s"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff_ceiling(base, max, 1), base);
        assert_eq!(backoff_ceiling(base, max, 3), Duration::from_millis(400));
        assert_eq!(backoff_ceiling(base, max, 40), max);
        for retry in 1..10 {
            let wait = backoff(base, max, retry);
            assert!(wait <= backoff_ceiling(base, max, retry), "{wait:?}");
        }
        assert_eq!(backoff(Duration::ZERO, Duration::ZERO, 3), Duration::ZERO);
        // Full jitter: waits spread over the whole range rather than sitting at the ceiling.
        let waits: Vec<Duration> = (0..200).map(|_| backoff(base, max, 3)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(200)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(200)));
    }
}
