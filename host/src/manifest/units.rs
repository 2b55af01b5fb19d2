//! Durations (`30s`, `10m`, `1h30m`, `500ms`) and sizes (`256MiB`, `1GiB`, `512KB`) as written in
//! the manifest.

use std::time::Duration;

/// Parse a duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`; never zero
/// (a phase needs time to run).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let total = parse_duration_or_zero(text)?;
    if total.is_zero() {
        return Err(format!("{text:?} is zero; a phase needs time to run"));
    }
    Ok(total)
}

/// [`parse_duration`], zero allowed.
fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || {
        format!("{text:?} is not a duration; write e.g. \"30s\", \"10m\", \"1h30m\" or \"500ms\"")
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration written the way [`parse_duration`] and `--lock-wait` read it: `30s`, `1m30s`,
/// `1h`, `500ms`, `2s500ms`; `0s` for zero. Sub-millisecond parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parse a wait as `--lock-wait` takes it: a duration as in the manifest (`30s`, `1m30s`,
/// `500ms`), or a bare number of seconds (`10`, `2.5`: the original tool's form); zero waits not
/// at all. At most a day. A number of seconds is rounded up to whole milliseconds, so a wait
/// that is not zero prints as one ([`format_duration`]): `0.0004` waits 1ms.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let wait = match s.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) => {
            Duration::from_millis((seconds * 1000.0).ceil() as u64)
        }
        Ok(_) => Duration::MAX,
        Err(_) => parse_duration_or_zero(s).map_err(|_| {
            format!(
                "{text:?} is not a wait; write a duration such as \"30s\", \"2m\" or \"500ms\", \
                 or a number of seconds"
            )
        })?,
    };
    if wait > Duration::from_secs(86_400) {
        return Err(format!(
            "{text:?} is not a wait between 0 and a day (86400 seconds)"
        ));
    }
    Ok(wait)
}

/// Parse a size: `<number><unit>`, units `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB` (all powers of
/// 1024: memory is allocated in pages, and nobody means 10^6 here).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("{text:?} is not a size; write e.g. \"256MiB\" or \"1GiB\"");
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match s[digits..].trim() {
        "B" => 1,
        "KB" | "KiB" | "K" => 1 << 10,
        "MB" | "MiB" | "M" => 1 << 20,
        "GB" | "GiB" | "G" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < (1 << 20) {
        return Err(format!(
            "{text:?} is below the 1MiB minimum a component needs"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 500ms "), Ok(Duration::from_millis(500)));
        for bad in ["", "30", "s", "10 m", "1.5s", "5d", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        for bad in [
            "",
            "MiB",
            "12",
            "1.5GiB",
            "10TiB",
            "1KiB",
            "99999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }
}

#[cfg(test)]
mod wait_tests {
    use super::*;

    #[test]
    fn a_formatted_duration_reads_back_as_itself() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (2_500, "2s500ms"),
            (30_000, "30s"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (5_400_000, "1h30m"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_wait(text), Ok(d));
        }
    }

    #[test]
    fn a_wait_is_a_duration_or_a_number_of_seconds_up_to_a_day() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_wait(" 2.5 "), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert_eq!(parse_wait("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_wait("0.0004"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_wait("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["abc", "-1", "25h", "90000", "10 s", "NaN", "inf", ""] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }
}
