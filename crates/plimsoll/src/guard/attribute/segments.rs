//! Identifiers in key names, recognised so that `user:42:cart` and
//! `user:43:cart` fall into one family (`user:<n>:cart`): numbers, UUIDs,
//! hex digests, dates and the like become placeholders.

use std::borrow::Cow;

/// A segment with identifiers replaced by placeholders.
pub fn collapse_segment(segment: &str) -> Cow<'_, str> {
    if let Some(shape) = shape(segment) {
        return Cow::Borrowed(shape);
    }
    let bytes = segment.as_bytes();
    // Embedded UUIDs first: their dashes would otherwise split them.
    let mut out = String::new();
    let mut changed = false;
    let mut i = 0;
    let mut token_start = 0;
    let flush = |out: &mut String, token: &str, changed: &mut bool| match shape(token) {
        Some(s) => {
            out.push_str(s);
            *changed = true;
        }
        None => out.push_str(token),
    };
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&segment[i..i + 36]) {
            flush(&mut out, &segment[token_start..i], &mut changed);
            out.push_str("<uuid>");
            changed = true;
            i += 36;
            token_start = i;
            continue;
        }
        let c = bytes[i];
        if matches!(
            c,
            b'-' | b'_' | b'.' | b'|' | b'@' | b'/' | b'=' | b',' | b' ' | 0x06 | 0x16
        ) {
            flush(&mut out, &segment[token_start..i], &mut changed);
            out.push(c as char);
            token_start = i + 1;
        }
        i += 1;
    }
    if !changed && token_start == 0 {
        return Cow::Borrowed(segment);
    }
    flush(&mut out, &segment[token_start..], &mut changed);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(segment)
    }
}

/// The placeholder for a token that looks like an identifier.
fn shape(token: &str) -> Option<&'static str> {
    let b = token.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return Some("<n>");
    }
    if b.len() == 36 && is_uuid(token) {
        return Some("<uuid>");
    }
    if is_date(b) {
        return Some("<date>");
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if b.len() >= 12 && b.iter().all(u8::is_ascii_hexdigit) && digits > 0 {
        return Some("<hash>");
    }
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    if b.len() >= 8
        && digits >= 2
        && letters > 0
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    {
        return Some("<id>");
    }
    None
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DD`, optionally followed by a time (`T…`).
fn is_date(b: &[u8]) -> bool {
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || b[10] == b'T' || b[10] == b' ')
}
