//! What a text field of an event may hold, for the writer (which refuses such
//! input) and every consumer (which refuses such a record) alike.
//!
//! Beyond NUL (which no PostgreSQL `text` stores), two kinds of character are
//! refused: bidirectional overrides and isolates (U+202A–U+202E,
//! U+2066–U+2069), which make a name or reason display as something else than
//! it is ("Trojan Source"), and invisible ones (zero-width spaces and joiners,
//! word joiners, the byte-order mark, direction marks), which make two
//! different values look identical to a person comparing them.

/// The most characters any text field of an event holds (names, reasons,
/// addresses; e-mails are shorter still).
pub const MAX_TEXT_CHARS: usize = 500;

/// A bidirectional control or an invisible formatting character.
pub fn is_hidden_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{061C}'               // Arabic letter mark
        | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
        | '\u{202A}'..='\u{202E}' // embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // isolates
        | '\u{FEFF}') // zero-width no-break space (BOM)
}

/// Why `value` may not be an event's text, if it may not.
pub fn check(value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err("a text field contains a NUL character".into());
    }
    if let Some(c) = value.chars().find(|c| is_hidden_or_bidi(*c)) {
        return Err(format!(
            "a text field contains U+{:04X}, an invisible or bidirectional control character",
            u32::from(c)
        ));
    }
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "a text field has {chars} characters, more than {MAX_TEXT_CHARS}"
        ));
    }
    Ok(())
}

/// [`check`] on every string of a JSON value (keys included).
pub fn check_json(value: &serde_json::Value) -> Result<(), String> {
    match value {
        serde_json::Value::String(s) => check(s),
        serde_json::Value::Array(items) => items.iter().try_for_each(check_json),
        serde_json::Value::Object(fields) => fields.iter().try_for_each(|(k, v)| {
            check(k)?;
            check_json(v)
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_overrides_isolates_invisible_characters_nul_and_oversize() {
        assert_eq!(check("Zoë O'Brien, 1 Main St"), Ok(()));
        for bad in [
            "abc\u{202E}fdp.exe",
            "\u{2066}x\u{2069}",
            "Ada\u{200B}",
            "\u{FEFF}Ada",
            "a\0b",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check(&"x".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(check(&"x".repeat(MAX_TEXT_CHARS + 1)).is_err());
        let nested = serde_json::json!({"a": [{"b": "ok"}, {"c": "bad\u{202E}"}]});
        assert!(check_json(&nested).unwrap_err().contains("U+202E"));
    }
}
