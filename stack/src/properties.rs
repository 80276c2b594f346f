//! Java `.properties` files written from settings types: each type derives
//! `Serialize` with the Java key names, so a config file is a value, not a
//! format string, and a key cannot be misspelled in one place only.

use serde::Serialize;

use crate::{Result, StackError};

/// `key=value` lines of `settings` (a struct or map of scalars), in field order.
pub fn to_properties(settings: &impl Serialize) -> Result<String> {
    let value = serde_json::to_value(settings).map_err(|e| StackError::Config(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(StackError::Config(
            "properties must serialize to a map".into(),
        ));
    };
    let mut out = String::new();
    for (key, value) in map {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.push_str(&escape(&key));
        out.push('=');
        out.push_str(&escape(&text));
        out.push('\n');
    }
    Ok(out)
}

/// Backslashes and line breaks are the only characters our keys and values
/// could carry that `.properties` would read differently.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Example {
        #[serde(rename = "a.b")]
        ab: u16,
        #[serde(rename = "c", skip_serializing_if = "Option::is_none")]
        c: Option<String>,
        #[serde(rename = "d")]
        d: String,
    }

    #[test]
    fn scalars_become_lines_in_field_order_and_none_is_left_out() {
        let text = to_properties(&Example {
            ab: 9092,
            c: None,
            d: "x\\y=z".into(),
        })
        .expect("serializes");
        assert_eq!(text, "a.b=9092\nd=x\\\\y=z\n");
    }
}
