//! The order's statuses: the one mapping between the status an order is in,
//! its name in SQL (`orders.status` on the write side, whose CHECK constraint
//! lists these names, and `order_view.status` on the read side) and the
//! event that puts an order in it. Writer, projector and the oracle all use
//! this, so a status cannot be spelled two ways.

use std::fmt;

use crate::EventType;

/// Where an order is in its life cycle: `placed -> confirmed | rejected`
/// (the inventory's reply to the placed order, through the order reactor:
/// stock reserved for every line, or not); `confirmed -> paid -> shipped ->
/// delivered`; `placed | confirmed | paid -> cancelled`; a paid-then-cancelled
/// or a delivered (returned) order can be `refunded`. `rejected` ends the
/// order, unpaid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Placed,
    Confirmed,
    Rejected,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ];

    /// The name stored in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// The status named `raw` in SQL, if there is one.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The status an order is in after an event of type `kind` (`None`: not
    /// an order event, e.g. a customer's or the inventory's).
    pub fn after(kind: EventType) -> Option<Self> {
        match kind {
            EventType::OrderPlaced => Some(OrderStatus::Placed),
            EventType::OrderPaid => Some(OrderStatus::Paid),
            EventType::OrderShipped => Some(OrderStatus::Shipped),
            EventType::OrderDelivered => Some(OrderStatus::Delivered),
            EventType::OrderCancelled => Some(OrderStatus::Cancelled),
            EventType::OrderRefunded => Some(OrderStatus::Refunded),
            EventType::OrderConfirmed => Some(OrderStatus::Confirmed),
            EventType::OrderRejected => Some(OrderStatus::Rejected),
            EventType::CustomerRegistered
            | EventType::CustomerContactChanged
            | EventType::CustomerAddressChanged
            | EventType::StockSet
            | EventType::StockRestocked
            | EventType::StockReserved
            | EventType::StockRejected
            | EventType::StockReleased
            | EventType::StockShipped => None,
        }
    }

    /// Still in progress: neither delivered nor ended (cancelled, refunded,
    /// rejected) (`customer_summary.open_orders`).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            OrderStatus::Placed | OrderStatus::Confirmed | OrderStatus::Paid | OrderStatus::Shipped
        )
    }

    /// Counts as a sale (`product_sales_daily`): not cancelled, not refunded,
    /// not rejected.
    pub fn is_sale(self) -> bool {
        !matches!(
            self,
            OrderStatus::Cancelled | OrderStatus::Refunded | OrderStatus::Rejected
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_one_name_and_one_event_that_leads_to_it() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            let events: Vec<EventType> = EventType::ALL
                .iter()
                .copied()
                .filter(|&k| OrderStatus::after(k) == Some(status))
                .collect();
            assert_eq!(events.len(), 1, "{status}: {events:?}");
        }
        assert_eq!(OrderStatus::parse("Placed"), None);
    }

    /// The names are the ones the write side's CHECK constraint admits, all
    /// of them: the newest migration that (re)defines `orders_status_check`.
    #[test]
    fn the_statuses_are_the_ones_the_orders_table_admits() {
        let migration = include_str!("../../sql/write/V7__saga_statuses.sql");
        let names: Vec<String> = OrderStatus::ALL.iter().map(|s| format!("'{s}'")).collect();
        assert!(
            migration.contains("ADD CONSTRAINT orders_status_check")
                && migration.contains(&format!("CHECK (status IN ({}))", names.join(", "))),
            "sql/write/V7 lists other statuses than {names:?}"
        );
        // No later migration redefines the constraint (the test would read the wrong one).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/write");
        let newest = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| {
                std::fs::read_to_string(dir.join(name))
                    .unwrap()
                    .contains("orders_status_check")
            })
            .max_by_key(|name| {
                name.trim_start_matches('V')
                    .split("__")
                    .next()
                    .and_then(|v| v.parse::<u32>().ok())
            });
        assert_eq!(newest.as_deref(), Some("V7__saga_statuses.sql"));
    }

    #[test]
    fn an_order_is_open_until_it_ends_and_a_sale_unless_undone() {
        use OrderStatus::*;
        let open: Vec<OrderStatus> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_open())
            .collect();
        assert_eq!(open, [Placed, Confirmed, Paid, Shipped]);
        let no_sale: Vec<OrderStatus> = OrderStatus::ALL
            .into_iter()
            .filter(|s| !s.is_sale())
            .collect();
        assert_eq!(no_sale, [Rejected, Cancelled, Refunded]);
    }
}
