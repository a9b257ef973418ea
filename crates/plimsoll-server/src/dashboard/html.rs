//! HTML helpers: the page layout, escaping, and number formatting.

use std::time::{Duration, UNIX_EPOCH};

/// A page: its title and the inside of `<main>`.
#[derive(Debug)]
pub struct Page {
    title: String,
    pub body: String,
}

impl Page {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            body: String::new(),
        }
    }

    pub fn push(&mut self, html: &str) {
        self.body.push_str(html);
    }

    /// The whole document.
    pub fn render(&self) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · Plimsoll</title><link rel=\"stylesheet\" href=\"/static/app.css\"></head><body>\
             <header><a class=\"brand\" href=\"/\">Plimsoll</a><a href=\"/\">Overview</a>\
             <a href=\"/v1/openapi.json\">API</a><span class=\"right\"><a href=\"/logout\">Log out</a></span></header>\
             <main>{}</main><div id=\"flash\"></div><script src=\"/static/app.js\"></script></body></html>",
            escape(&self.title),
            self.body
        )
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment (queue names are already plain;
/// this also keeps user-typed ids safe).
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub use plimsoll::units::{human_bytes, human_signed_bytes};

/// Seconds as `3 d 4 h`, `5 h 12 min`, `42 min`, `30 s`.
pub fn fmt_duration(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

/// A rate per second, short.
pub fn fmt_rate(per_s: f64) -> String {
    if per_s == 0.0 {
        "0".into()
    } else if per_s < 10.0 {
        format!("{per_s:.2}")
    } else {
        format!("{per_s:.0}")
    }
}

/// The first instant RFC 3339 cannot write (year 10000), in milliseconds.
const RFC3339_END_MS: u64 = 253_402_300_800_000;

/// Epoch milliseconds as `2026-11-25 02:40:01Z`, for any value: past the
/// year 9999 (which RFC 3339 cannot write, and `humantime` refuses with a
/// formatting error that `to_string` turns into a panic) as the raw number.
/// A job due at 2^64 - 1 ms once made every page that listed it fail.
pub fn fmt_time(ms: u64) -> String {
    if ms >= RFC3339_END_MS {
        return format!("{ms} ms after 1970 (after the year 9999)");
    }
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(url_segment("a b/c?"), "a%20b%2Fc%3F");
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_rate(0.5), "0.50");
        assert_eq!(fmt_rate(1234.4), "1234");
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
    }

    /// A job due at `u64::MAX` ms panicked every page that showed it.
    #[test]
    fn any_time_formats_without_a_panic() {
        assert_eq!(fmt_time(RFC3339_END_MS - 1000), "9999-12-31 23:59:59Z");
        for ms in [RFC3339_END_MS, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            assert!(fmt_time(ms).contains("after the year 9999"), "{ms}");
        }
        for secs in [f64::MAX, f64::INFINITY, f64::NAN, -1.0, 1e300] {
            fmt_duration(secs);
        }
        fmt_rate(f64::MAX);
        fmt_rate(f64::NAN);
    }
}
