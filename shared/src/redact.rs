//! Untrusted text on its way to a person: cut before it reaches a log line,
//! escaped before it reaches a terminal.
//!
//! What a provider or a backend sends (a field's value, an answer's body,
//! a header) is never trusted to be short or printable. A log line copies at
//! most [`LOG_VALUE_CHARS`] characters of one such value ([`for_log`]), and
//! says how long the whole was; an operator's terminal gets control
//! characters as visible escapes ([`for_terminal`]), so an escape sequence in
//! a webhook cannot clear the screen, retitle the window or hide a line.
//! URLs are shown without userinfo, query or fragment:
//! [`crate::config::redact_url`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// How many characters of one provider- or backend-supplied value a log
/// line or an error text copies.
pub const LOG_VALUE_CHARS: usize = 256;

/// `text` cut to at most `max_chars` characters; a cut one ends with
/// `… (N bytes)`, N being the whole's length.
pub fn truncate(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} bytes)", &text[..cut], text.len())),
    }
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a
/// character boundary: for fields with a byte budget (NATS headers, KV
/// entries) that must not grow a suffix.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One untrusted value as a log line or an error text may copy it.
pub fn for_log(text: &str) -> Cow<'_, str> {
    truncate(text, LOG_VALUE_CHARS)
}

/// `value` as one line of JSON that a terminal prints rather than acts on:
/// serde escapes C0 controls but writes C1 controls and bidirectional
/// overrides as they are, so those become `\uXXXX` escapes here. The result
/// is the same JSON value for any parser; structure is ASCII, so only
/// string contents change.
pub fn json_line(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if !text
        .chars()
        .any(|c| (c as u32) >= 0x80 && acts_on_terminal(c))
    {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if (c as u32) >= 0x80 && acts_on_terminal(c) {
            // Every such character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters a terminal may act on rather than print: C0 controls, DEL,
/// C1 controls (`U+009B` is a one-character CSI on some terminals), and the
/// bidirectional overrides and isolates that reorder what is shown.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| acts_on_terminal(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !acts_on_terminal(c) || keep(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// One line of untrusted text for a terminal: every control character
/// (newlines and tabs too) as a visible escape (`\x1b`, `\u{9b}`).
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// Untrusted text of several lines (a body) for a terminal: as
/// [`for_terminal`], keeping newlines and tabs.
pub fn for_terminal_lines(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_a_terminal_acts_on_and_parse_back() {
        let v = serde_json::json!({"body": "a\u{9b}2J\u{202e}b\u{1b}[2J é"});
        let line = json_line(&v);
        assert_eq!(line, r#"{"body":"a\u009b2J\u202eb\u001b[2J é"}"#);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap(), v);
        assert_eq!(json_line(&serde_json::json!({"a": "é"})), r#"{"a":"é"}"#);
    }

    #[test]
    fn long_values_are_cut_and_say_how_long_they_were() {
        assert_eq!(truncate("short", 8), "short");
        assert!(matches!(truncate("short", 8), Cow::Borrowed(_)));
        assert_eq!(truncate("abcdef", 3), "abc… (6 bytes)");
        // Cut on a character, not a byte.
        assert_eq!(truncate("مطعم", 2), "مط… (8 bytes)");
        let huge = "9".repeat(500_000);
        let shown = for_log(&huge);
        assert_eq!(
            shown,
            format!("{}… (500000 bytes)", "9".repeat(LOG_VALUE_CHARS))
        );
    }

    #[test]
    fn terminal_text_has_no_control_characters_left() {
        let hostile = "a\x1b[2J\x1b]0;pwned\x07b\u{9b}31m\u{202e}c\x7f\r\n\td";
        assert_eq!(
            for_terminal(hostile),
            "a\\x1b[2J\\x1b]0;pwned\\x07b\\u{9b}31m\\u{202e}c\\x7f\\x0d\\x0a\\x09d"
        );
        assert_eq!(
            for_terminal_lines(hostile),
            "a\\x1b[2J\\x1b]0;pwned\\x07b\\u{9b}31m\\u{202e}c\\x7f\\x0d\n\td"
        );
        for shown in [for_terminal(hostile), for_terminal_lines(hostile)] {
            assert!(
                !shown
                    .chars()
                    .any(|c| acts_on_terminal(c) && c != '\n' && c != '\t'),
                "{shown:?}"
            );
        }
        // Text with nothing to escape, Arabic included, is left alone.
        assert!(matches!(
            for_terminal("order مطعم #7"),
            Cow::Borrowed("order مطعم #7")
        ));
    }
}
