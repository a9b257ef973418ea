//! Human-readable quantities, shared by alert messages, the CLI and the
//! dashboard so that all three print a size the same way.

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

#[cfg(test)]
mod tests {
    use super::*;

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
