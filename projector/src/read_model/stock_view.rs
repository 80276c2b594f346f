//! `stock_view`: stock per SKU (on hand, reserved, available) as the
//! inventory reports it. Every inventory event carries the levels after its
//! change, each with the SKU's change counter; the row keeps the level with
//! the highest counter, so the view converges whatever order the events of
//! different orders and SKUs arrive in (a later level never goes back).

use outbox_events::{Envelope, Event, StockLevel};

use super::{p, Step};

pub fn plan(envelope: &Envelope, steps: &mut Vec<Step>) -> Result<(), String> {
    let levels: Vec<&StockLevel> = match &envelope.event {
        Event::StockSet(e) => vec![&e.level],
        Event::StockRestocked(e) => vec![&e.level],
        Event::StockReserved(e) => e.levels.iter().collect(),
        Event::StockReleased(e) => e.levels.iter().collect(),
        Event::StockShipped(e) => e.levels.iter().collect(),
        _ => return Ok(()),
    };
    if levels.is_empty() {
        return Ok(());
    }
    steps.push(Step::new(
        "INSERT INTO stock_view AS s (sku, on_hand, reserved, version) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) \
         ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, \
             version = EXCLUDED.version, updated_at = now() \
         WHERE s.version < EXCLUDED.version",
        vec![
            p(levels.iter().map(|l| l.sku.clone()).collect::<Vec<_>>()),
            p(levels.iter().map(|l| l.on_hand).collect::<Vec<_>>()),
            p(levels.iter().map(|l| l.reserved).collect::<Vec<_>>()),
            p(levels.iter().map(|l| l.version).collect::<Vec<_>>()),
        ],
    ));
    Ok(())
}
