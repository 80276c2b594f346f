//! People's commands on stock: set the units on hand, add a delivery, show.
//!
//! Each change is one transaction: the SKU's row (locked), a line in
//! `stock_movements`, and its event in the outbox (`StockSet`,
//! `StockRestocked`), so the stock read model and the oracle see exactly
//! what happened. A set below the units reserved for confirmed orders is
//! refused: those units are promised.

use outbox_events::{Envelope, Event, StockLevel, StockRestocked, StockSet};
use serde::Serialize;
use service::DbError;

/// Most units a command may set or add at once.
pub const MAX_UNITS: i64 = 1_000_000_000;

/// Why a stock command changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("SKU {0:?} is not valid: 1 to 64 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit")]
    InvalidSku(String),
    #[error("quantity {quantity} is out of range: {min} to {MAX_UNITS}")]
    InvalidQuantity { quantity: i64, min: i64 },
    #[error("SKU {sku} has {reserved} units reserved for confirmed orders: it cannot be set to {quantity} (cancel or ship those orders, or set at least {reserved})")]
    BelowReserved {
        sku: String,
        quantity: i64,
        reserved: i64,
    },
    #[error("SKU {0} has no stock yet: set it first (`inventory stock set {0} --quantity N`)")]
    UnknownSku(String),
    #[error("SKU {sku} would hold more than {MAX_UNITS} units")]
    TooMany { sku: String },
    /// What failed is the source.
    #[error("inventory database")]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for StockError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError(e))
    }
}

fn valid_sku(sku: &str) -> Result<(), StockError> {
    let ok = (1..=64).contains(&sku.len())
        && sku
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StockError::InvalidSku(sku.to_owned()))
    }
}

fn valid_quantity(quantity: i64, min: i64) -> Result<(), StockError> {
    if (min..=MAX_UNITS).contains(&quantity) {
        Ok(())
    } else {
        Err(StockError::InvalidQuantity { quantity, min })
    }
}

/// `inventory stock set SKU --quantity N`: N units on hand from now on.
pub async fn set(
    client: &mut tokio_postgres::Client,
    sku: &str,
    quantity: i64,
) -> Result<StockLevel, StockError> {
    valid_sku(sku)?;
    valid_quantity(quantity, 0)?;
    change(
        client,
        sku,
        |level| match level {
            Some(l) if quantity < l.reserved => Err(StockError::BelowReserved {
                sku: sku.to_owned(),
                quantity,
                reserved: l.reserved,
            }),
            _ => Ok(quantity),
        },
        |level| {
            Event::StockSet(StockSet {
                sku: sku.to_owned(),
                quantity,
                level,
            })
        },
        "set",
        quantity,
    )
    .await
}

/// `inventory stock add SKU --quantity N`: a delivery of N units.
pub async fn add(
    client: &mut tokio_postgres::Client,
    sku: &str,
    quantity: i64,
) -> Result<StockLevel, StockError> {
    valid_sku(sku)?;
    valid_quantity(quantity, 1)?;
    change(
        client,
        sku,
        |level| match level {
            None => Err(StockError::UnknownSku(sku.to_owned())),
            Some(l) if l.on_hand + quantity > MAX_UNITS => Err(StockError::TooMany {
                sku: sku.to_owned(),
            }),
            Some(l) => Ok(l.on_hand + quantity),
        },
        |level| {
            Event::StockRestocked(StockRestocked {
                sku: sku.to_owned(),
                quantity,
                level,
            })
        },
        "restock",
        quantity,
    )
    .await
}

/// One change of a SKU's units on hand, in one transaction: `decide` gets
/// the locked level (if any) and returns the new units on hand.
async fn change(
    client: &mut tokio_postgres::Client,
    sku: &str,
    decide: impl FnOnce(Option<&StockLevel>) -> Result<i64, StockError>,
    event: impl FnOnce(StockLevel) -> Event,
    kind: &str,
    quantity: i64,
) -> Result<StockLevel, StockError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT on_hand, reserved, version, events FROM stock WHERE sku = $1 FOR UPDATE",
            &[&sku],
        )
        .await?;
    let before = row.as_ref().map(|r| {
        (
            StockLevel {
                sku: sku.to_owned(),
                on_hand: r.get(0),
                reserved: r.get(1),
                version: r.get(2),
            },
            r.get::<_, i64>(3),
        )
    });
    let on_hand = decide(before.as_ref().map(|(l, _)| l))?;
    let (level, events) = match before {
        Some((l, events)) => {
            let level = StockLevel {
                on_hand,
                version: l.version + 1,
                ..l
            };
            tx.execute(
                "UPDATE stock SET on_hand = $2, version = $3, events = $4, updated_at = now() WHERE sku = $1",
                &[&sku, &level.on_hand, &level.version, &(events + 1)],
            )
            .await?;
            (level, events + 1)
        }
        None => {
            tx.execute(
                "INSERT INTO stock (sku, on_hand, reserved, version, events) VALUES ($1, $2, 0, 1, 1)",
                &[&sku, &on_hand],
            )
            .await?;
            (
                StockLevel {
                    sku: sku.to_owned(),
                    on_hand,
                    reserved: 0,
                    version: 1,
                },
                1,
            )
        }
    };
    tx.execute(
        "INSERT INTO stock_movements (sku, kind, quantity) VALUES ($1, $2, $3)",
        &[&sku, &kind, &quantity],
    )
    .await?;
    let envelope = Envelope::new(event(level.clone()), events, chrono::Utc::now());
    let step = consumer::outbox::append(&envelope);
    tx.execute(
        step.sql.as_str(),
        &service::pipeline::param_refs(&step.params),
    )
    .await?;
    tx.commit().await?;
    Ok(level)
}

/// One SKU's stock, as `inventory stock show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockRow {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// Every SKU's stock, by SKU.
pub async fn show(client: &tokio_postgres::Client) -> Result<Vec<StockRow>, StockError> {
    let rows = client
        .query("SELECT sku, on_hand, reserved FROM stock ORDER BY sku", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (on_hand, reserved): (i64, i64) = (r.get(1), r.get(2));
            StockRow {
                sku: r.get(0),
                on_hand,
                reserved,
                available: on_hand - reserved,
            }
        })
        .collect())
}
