//! Turns untrusted text into validated values, or a one-line reason.
//!
//! Identifiers (customer ids, SKUs, references, carriers, tracking numbers) are
//! restricted to a safe alphabet so they can be shown, logged and keyed on
//! without escaping; free text (a cancel reason) accepts any printable
//! characters and is always passed to SQL as a parameter.

use outbox_events::OrderLine;

/// Input that can never become a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidInput {
    InvalidInput {
        field,
        reason: reason.into(),
    }
}

pub const MAX_IDENTIFIER_LEN: usize = 64;
/// The events' bound on text (one source: [`outbox_events::text`]).
pub const MAX_TEXT_LEN: usize = outbox_events::text::MAX_TEXT_CHARS;
pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i32 = 10_000;
/// 1,000,000.00 per unit: keeps every total far from i64 overflow.
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// An identifier: 1..=64 of `A-Z a-z 0-9 . _ - :`, starting with a letter or digit.
pub fn identifier(field: &'static str, raw: &str) -> Result<String, InvalidInput> {
    if raw.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if raw.chars().count() > MAX_IDENTIFIER_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_IDENTIFIER_LEN} characters"),
        ));
    }
    if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(field, "must start with a letter or digit"));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        return Err(invalid(
            field,
            format!("character {bad:?} not allowed (use letters, digits, '.', '_', '-', ':')"),
        ));
    }
    Ok(raw.to_owned())
}

/// Free text: 1..=500 printable characters, trimmed.
pub fn text(field: &'static str, raw: &str) -> Result<String, InvalidInput> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_TEXT_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    hidden_or_bidi(field, trimmed)?;
    Ok(trimmed.to_owned())
}

/// Refuses bidirectional controls and invisible characters (they make a
/// value display as something else, or two values look alike).
fn hidden_or_bidi(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    match value
        .chars()
        .find(|c| outbox_events::text::is_hidden_or_bidi(*c))
    {
        Some(c) => Err(invalid(
            field,
            format!(
                "contains U+{:04X}, an invisible or bidirectional control character",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// An e-mail address: `local@domain`, no spaces, at most 254 characters.
pub fn email(raw: &str) -> Result<String, InvalidInput> {
    let bad = |why: &str| invalid("email", format!("{raw:?} {why}"));
    if raw.len() > 254 {
        return Err(invalid("email", "longer than 254 characters"));
    }
    let Some((local, domain)) = raw.split_once('@') else {
        return Err(bad("has no @"));
    };
    if local.is_empty() || domain.is_empty() || !domain.contains('.') || domain.contains('@') {
        return Err(bad("is not an address like name@example.com"));
    }
    if raw
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | ';' | '<' | '>'))
    {
        return Err(bad("contains characters not allowed in an address"));
    }
    hidden_or_bidi("email", raw)?;
    Ok(raw.to_owned())
}

/// An ISO 3166-1 alpha-2 country code, stored upper-case.
pub fn country(raw: &str) -> Result<String, InvalidInput> {
    if raw.len() == 2 && raw.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(invalid(
            "country",
            format!("{raw:?} is not a two-letter code such as DE"),
        ))
    }
}

/// A postal address from its parts.
pub fn address(
    street: &str,
    city: &str,
    postal_code: &str,
    country_code: &str,
) -> Result<outbox_events::Address, InvalidInput> {
    let postal = text("postal code", postal_code)?;
    if postal.chars().count() > 16
        || !postal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        return Err(invalid(
            "postal code",
            format!("{postal_code:?} is not a postal code"),
        ));
    }
    Ok(outbox_events::Address {
        street: text("street", street)?,
        city: text("city", city)?,
        postal_code: postal,
        country: country(country_code)?,
    })
}

/// An ISO 4217 code: three letters, stored upper-case.
pub fn currency(raw: &str) -> Result<String, InvalidInput> {
    if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(invalid(
            "currency",
            format!("{raw:?} is not a three-letter code such as EUR"),
        ))
    }
}

/// A decimal amount with at most two fractional digits ("12", "12.5", "12.50") in cents.
pub fn money(field: &'static str, raw: &str) -> Result<i64, InvalidInput> {
    let bad = || invalid(field, format!("{raw:?} is not an amount like 12.50"));
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty()
        || whole.len() > 10
        || frac.len() > 2
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    Ok(whole * 100 + frac)
}

/// An order line written as `SKU:QTY:UNIT_PRICE`, e.g. `BOOK-1:2:19.99`.
pub fn order_line(raw: &str) -> Result<OrderLine, InvalidInput> {
    let parts: Vec<&str> = raw.split(':').collect();
    let [sku, qty, price] = parts.as_slice() else {
        return Err(invalid(
            "line",
            format!("{raw:?} is not SKU:QTY:UNIT_PRICE (e.g. BOOK-1:2:19.99)"),
        ));
    };
    let sku = identifier("sku", sku)?;
    let quantity: i32 = qty
        .parse()
        .map_err(|_| invalid("quantity", format!("{qty:?} is not a whole number")))?;
    if quantity <= 0 {
        return Err(invalid(
            "quantity",
            format!("must be at least 1, got {quantity}"),
        ));
    }
    if quantity > MAX_QUANTITY {
        return Err(invalid(
            "quantity",
            format!("must be at most {MAX_QUANTITY}, got {quantity}"),
        ));
    }
    let unit_price_cents = money("unit price", price)?;
    if unit_price_cents > MAX_UNIT_PRICE_CENTS {
        return Err(invalid("unit price", "above 1000000.00"));
    }
    Ok(OrderLine {
        sku,
        quantity,
        unit_price_cents,
    })
}

/// Formats cents as a decimal amount: 1999 -> "19.99".
pub fn format_money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_reject() {
        let line = order_line("BOOK-1:2:19.9").unwrap();
        assert_eq!((line.quantity, line.unit_price_cents), (2, 1990));
        assert_eq!(order_line("A:1:5").unwrap().unit_price_cents, 500);
        for bad in [
            "BOOK",
            "BOOK:0:1",
            "BOOK:-1:1",
            "BOOK:x:1",
            "BOOK:1:1.999",
            "BOOK:1:-1",
            "B'K:1:1",
            ":1:1",
            "a:b:c:d",
        ] {
            assert!(order_line(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn identifiers_reject_metacharacters_and_oversize() {
        assert!(identifier("customer", "c-42").is_ok());
        assert!(identifier("customer", "x'; DROP TABLE orders;--").is_err());
        assert!(identifier("customer", &"a".repeat(65)).is_err());
        assert!(identifier("customer", "").is_err());
    }

    #[test]
    fn text_allows_quotes_but_not_control_characters() {
        assert_eq!(text("reason", " it's \"late\" ").unwrap(), "it's \"late\"");
        assert!(text("reason", "a\u{0}b").is_err());
        assert!(text("reason", &"x".repeat(501)).is_err());
        let reversed = text("reason", "refund to \u{202E}gpj.exe").unwrap_err();
        assert_eq!(reversed.field, "reason");
        assert!(reversed.reason.contains("U+202E"), "{reversed}");
        assert!(text("name", "Ada\u{200B}").is_err());
        assert!(email("ada\u{2066}@example.com").is_err());
    }

    #[test]
    fn emails_and_addresses() {
        assert!(email("ada@example.com").is_ok());
        for bad in [
            "ada",
            "@x.com",
            "ada@",
            "ada@localhost",
            "a b@x.com",
            "a'@x.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(address("1 Main", "Berlin", "10115", "de").is_ok());
        assert!(address("1 Main", "Berlin", "10115; DROP", "DE").is_err());
        assert!(address("1 Main", "Berlin", "10115", "DEU").is_err());
    }

    #[test]
    fn money_round_trips() {
        assert_eq!(money("amount", "12.5").unwrap(), 1250);
        assert_eq!(format_money(1250), "12.50");
        assert!(money("amount", "1e3").is_err());
        assert!(currency("eu").is_err());
        assert_eq!(currency("eur").unwrap(), "EUR");
    }
}
