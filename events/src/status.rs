//! The order's statuses: the one mapping between the status an order is in,
//! its name in SQL (`orders.status` on the write side, whose CHECK constraint
//! lists these names, and `order_view.status` on the read side) and the
//! event that puts an order in it. Writer, projector and the oracle all use
//! this, so a status cannot be spelled two ways.

use std::fmt;

use crate::EventType;

/// Where an order is in its life cycle: `placed -> paid -> shipped ->
/// delivered`; `placed | paid -> cancelled`; a paid-then-cancelled or a
/// delivered (returned) order can be `refunded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Placed,
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
    /// an order event).
    pub fn after(kind: EventType) -> Option<Self> {
        match kind {
            EventType::OrderPlaced => Some(OrderStatus::Placed),
            EventType::OrderPaid => Some(OrderStatus::Paid),
            EventType::OrderShipped => Some(OrderStatus::Shipped),
            EventType::OrderDelivered => Some(OrderStatus::Delivered),
            EventType::OrderCancelled => Some(OrderStatus::Cancelled),
            EventType::OrderRefunded => Some(OrderStatus::Refunded),
            EventType::CustomerRegistered
            | EventType::CustomerContactChanged
            | EventType::CustomerAddressChanged => None,
        }
    }

    /// Still in progress: neither delivered nor ended (`customer_summary.open_orders`).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            OrderStatus::Placed | OrderStatus::Paid | OrderStatus::Shipped
        )
    }

    /// Counts as a sale (`product_sales_daily`): not cancelled, not refunded.
    pub fn is_sale(self) -> bool {
        !matches!(self, OrderStatus::Cancelled | OrderStatus::Refunded)
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

    /// The names are the ones the write side's CHECK constraint admits, all of them.
    #[test]
    fn the_statuses_are_the_ones_the_orders_table_admits() {
        let migration = include_str!("../../sql/write/V2__customers.sql");
        let names: Vec<String> = OrderStatus::ALL.iter().map(|s| format!("'{s}'")).collect();
        assert!(
            migration.contains(&format!("CHECK (status IN ({}))", names.join(", "))),
            "sql/write/V2 lists other statuses than {names:?}"
        );
    }
}
