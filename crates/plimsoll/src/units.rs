//! Human-readable quantities, shared by alert messages, the CLI, the
//! server's configuration and the dashboard, so that all of them read and
//! print a size the same way.
//!
//! Sizes are written with their unit's own meaning: `MB` is 10⁶ bytes and
//! `MiB` is 2²⁰, as the SI and IEC say. Note that redis.conf reads `1gb` as
//! 2³⁰ bytes and `1g` as 10⁹; Plimsoll does not follow it there, and refuses
//! a bare `k`, `m`, `g` or `t` as ambiguous rather than guess which one a
//! reader meant.

/// Bytes in binary units: `200 B`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A change in bytes, always signed: `+1.5 MiB`, `-200 B`.
pub fn human_signed_bytes(bytes: f64) -> String {
    let sign = if bytes < 0.0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(bytes.abs() as u64))
}

/// A growth rate for people: "+1.5 MiB/h", "shrinking 20.0 KiB/h", "flat".
pub fn human_rate_per_hour(bytes_per_sec: f64) -> String {
    let per_hour = bytes_per_sec * 3600.0;
    if per_hour.abs() < 1.0 {
        "flat".into()
    } else if per_hour < 0.0 {
        format!("shrinking {}/h", human_bytes(per_hour.abs() as u64))
    } else {
        format!("growing {}/h", human_bytes(per_hour as u64))
    }
}

/// Seconds for people: "45 s", "12 min", "3.5 h", "2.1 days".
pub fn human_duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 60.0 {
        format!("{secs:.0} s")
    } else if secs < 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 48.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}

/// A size or duration that [`parse_bytes`] or [`parse_duration`] cannot
/// read; the message says why and what would be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Reads a size: a number (fractions allowed), optionally a space, and a
/// unit — `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), in any case. A number alone
/// is bytes. At most 2⁶⁰ bytes; fractions of a byte are dropped.
pub fn parse_bytes(text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| ParseError(format!("{text:?} is not a size like 512MiB or 8GB")))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0f64.powi(3),
        "tib" => 1024.0f64.powi(4),
        bare @ ("k" | "m" | "g" | "t") => {
            let upper = bare.to_ascii_uppercase();
            return Err(ParseError(format!(
                "{text:?} is ambiguous: write {number}{upper}iB (powers of 1024) or {number}{upper}B (powers of 1000)"
            )));
        }
        other => {
            return Err(ParseError(format!(
                "unknown size unit {other:?} in {text:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            )));
        }
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes > (1u64 << 60) as f64 {
        return Err(ParseError(format!("{text:?} is out of range")));
    }
    Ok(bytes as u64)
}

/// Reads a duration: `250ms`, `10s`, `5m`, `2h 30m`, `1day` (humantime's
/// spelling).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, ParseError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        ParseError(format!(
            "{text:?} is not a duration: {e} (try e.g. 500ms, 10s, 5m, 2h)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_mean_what_their_unit_says() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_bytes("8gb"), Ok(8_000_000_000));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert_eq!(parse_bytes("2kb"), Ok(2000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes(" 64 b "), Ok(64));
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration(" 2h 30m"),
            Ok(std::time::Duration::from_secs(9000))
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .to_string()
                .contains("try e.g.")
        );
    }

    #[test]
    fn bare_and_unknown_units_are_refused_with_the_fix() {
        let bare = parse_bytes("512m").unwrap_err().to_string();
        assert!(bare.contains("512MiB") && bare.contains("512MB"), "{bare}");
        assert!(
            parse_bytes("5 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("").is_err());
        assert!(
            parse_bytes("2000000TiB")
                .unwrap_err()
                .to_string()
                .contains("range")
        );
    }

    #[test]
    fn picks_the_largest_unit_below_1024() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_signed_bytes(-200.0), "-200 B");
        assert_eq!(human_signed_bytes(1536.0), "+1.5 KiB");
    }
}
