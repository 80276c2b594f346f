//! The scripted scenario of `./dev/demo`: orders through the writer CLI,
//! awaited in the read model, shown with psql.

use outbox_events::OrderStatus;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{wait_until, Result, Stack, StackError, READ_DB};

/// What the scenario did and what the read model must show for it.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// Suffix of this run's customer ids, so the demo can run again on the same stack.
    pub run: String,
    /// This run's customer ids.
    pub customers: Vec<String>,
    /// order id -> (expected status, expected last aggregate version)
    pub expected: BTreeMap<String, (String, i64)>,
    pub commands: usize,
    pub refused: Vec<String>,
}

/// Registers a customer with a placeholder address through the writer binary.
pub fn register_customer(stack: &Stack, id: &str) -> Result<()> {
    stack.writer(&[
        "customer",
        "register",
        id,
        "--name",
        "Test Customer",
        "--email",
        "test@example.com",
        "--street",
        "1 High Street",
        "--city",
        "Berlin",
        "--postal-code",
        "12345",
        "--country",
        "DE",
    ])?;
    Ok(())
}

/// Places an order in EUR through the writer binary; returns the new order id.
pub fn place_order(stack: &Stack, customer: &str, lines: &[&str]) -> Result<String> {
    let mut args = vec![
        "--json",
        "order",
        "place",
        "--customer",
        customer,
        "--currency",
        "EUR",
    ];
    for line in lines {
        args.extend(["--line", line]);
    }
    let json = stack.writer(&args)?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| StackError::Command {
            command: "writer --json order place".into(),
            detail: format!("unexpected output {json:?}: {e}"),
        })?;
    Ok(value["order_id"].as_str().unwrap_or_default().to_owned())
}

/// The demo's customers: id, name, e-mail, city, country.
const CUSTOMERS: [(&str, &str, &str, &str, &str); 5] = [
    ("c-ada", "Ada Lovelace", "ada@example.com", "London", "GB"),
    (
        "c-linus",
        "Linus Torvalds",
        "linus@example.com",
        "Portland",
        "US",
    ),
    (
        "c-grace",
        "Grace Hopper",
        "grace@example.com",
        "Arlington",
        "US",
    ),
    (
        "c-alan",
        "Alan Turing",
        "alan@example.com",
        "Manchester",
        "GB",
    ),
    (
        "c-edsger",
        "Edsger Dijkstra",
        "edsger@example.com",
        "Austin",
        "US",
    ),
];

/// Stock the demo sets first (`inventory stock set`): enough for every cart
/// but Edsger's book, of which there is none, so his order is rejected.
const STOCK: [(&str, &str); 7] = [
    ("BOOK-DDIA", "5"),
    ("PEN-BLUE", "20"),
    ("KBD-MECH", "2"),
    ("MUG-LOGO", "10"),
    ("TEA-GREEN", "10"),
    ("CABLE-USB-C", "8"),
    ("BOOK-SICP", "0"),
];

/// Waits (up to 60 s) until the order reactor has answered for `order_id`
/// (the inventory reserved or rejected its stock); returns its status.
pub fn await_stock_reply(stack: &Stack, order_id: &str) -> Result<OrderStatus> {
    let mut status = OrderStatus::Placed;
    wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        status = stack
            .writer(&["--json", "order", "show", order_id])
            .ok()
            .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
            .and_then(|v| v["status"].as_str().and_then(OrderStatus::parse))
            .unwrap_or(OrderStatus::Placed);
        status != OrderStatus::Placed
    });
    if status == OrderStatus::Placed {
        return Err(StackError::NotReady {
            component: crate::Component::Reactor,
            seconds: 60,
            detail: format!(
                "order {order_id} is still placed: no stock reply reached it (see `stack status`, `stack logs inventory`, `stack logs reactor`)"
            ),
        });
    }
    Ok(status)
}

/// Runs the scenario through the writer and inventory binaries: stock for
/// the goods, five customers, five orders that end delivered, shipped,
/// refunded, cancelled (its stock released) and rejected for lack of stock,
/// a contact change that the orders must reflect, and two commands the
/// writer refuses.
pub fn run_scenario(stack: &Stack, progress: &dyn Fn(&str)) -> Result<Scenario> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..4].to_owned();
    let mut scenario = Scenario {
        run: run.clone(),
        ..Scenario::default()
    };
    for (sku, quantity) in STOCK {
        crate::bins::inventory(stack, &["stock", "set", sku, "--quantity", quantity])?;
    }
    progress(&format!(
        "stock set for {} SKUs (inventory stock set; BOOK-SICP: none)",
        STOCK.len()
    ));
    for (base, name, email, city, country) in CUSTOMERS {
        let id = format!("{base}-{run}");
        let id = id.as_str();
        scenario.customers.push(id.to_owned());
        stack.writer(&[
            "customer",
            "register",
            id,
            "--name",
            name,
            "--email",
            email,
            "--street",
            "1 High Street",
            "--city",
            city,
            "--postal-code",
            "12345",
            "--country",
            country,
        ])?;
        scenario.commands += 1;
    }
    progress(&format!("registered {} customers", CUSTOMERS.len()));
    let carts: [(&str, &[&str], &[&str]); 5] = [
        (
            "c-ada",
            &["BOOK-DDIA:1:42.50", "PEN-BLUE:3:1.20"],
            &["pay", "ship", "deliver"],
        ),
        ("c-linus", &["KBD-MECH:1:129.00"], &["pay", "ship"]),
        (
            "c-grace",
            &["MUG-LOGO:2:9.99", "TEA-GREEN:1:6.50"],
            &["pay", "cancel", "refund"],
        ),
        ("c-alan", &["CABLE-USB-C:4:7.25"], &["cancel"]),
        ("c-edsger", &["BOOK-SICP:1:55.00"], &[]),
    ];
    for (customer, lines, steps) in carts {
        let customer = format!("{customer}-{run}");
        let customer = customer.as_str();
        let id = place_order(stack, customer, lines)?;
        scenario.commands += 1;
        let total: i64 = lines
            .iter()
            .map(|l| {
                let parts: Vec<&str> = l.split(':').collect();
                let qty: i64 = parts[1].parse().unwrap_or(0);
                let cents = (parts[2].parse::<f64>().unwrap_or(0.0) * 100.0).round() as i64;
                qty * cents
            })
            .sum();
        let amount = format!("{}.{:02}", total / 100, total % 100);
        // The saga: the inventory reserves or rejects, the reactor confirms
        // or rejects; only then may the order be paid.
        let mut status = await_stock_reply(stack, &id)?;
        let mut version = 2;
        progress(&format!(
            "order {id} of {customer}: {status} by the inventory's reply"
        ));
        for step in steps.iter() {
            let reference = format!("pay-{customer}");
            let tracking = format!("TRK-{customer}");
            let args: Vec<&str> = match *step {
                "pay" => vec![
                    "order",
                    "pay",
                    &id,
                    "--reference",
                    &reference,
                    "--amount",
                    &amount,
                ],
                "ship" => vec![
                    "order",
                    "ship",
                    &id,
                    "--carrier",
                    "DHL",
                    "--tracking",
                    &tracking,
                ],
                "deliver" => vec!["order", "deliver", &id],
                "cancel" => vec![
                    "order",
                    "cancel",
                    &id,
                    "--reason",
                    "customer changed their mind; sorry!",
                ],
                _ => vec![
                    "order",
                    "refund",
                    &id,
                    "--amount",
                    &amount,
                    "--reason",
                    "cancelled after payment",
                ],
            };
            stack.writer(&args)?;
            scenario.commands += 1;
            version += 1;
            status = match *step {
                "pay" => OrderStatus::Paid,
                "ship" => OrderStatus::Shipped,
                "deliver" => OrderStatus::Delivered,
                "cancel" => OrderStatus::Cancelled,
                _ => OrderStatus::Refunded,
            };
        }
        if !steps.is_empty() {
            progress(&format!("order {id} of {customer}: {}", steps.join(", ")));
        }
        scenario
            .expected
            .insert(id.clone(), (status.as_str().into(), version));
        if steps.is_empty() {
            // Two commands the writer must refuse, changing nothing.
            for args in [
                vec![
                    "order",
                    "ship",
                    id.as_str(),
                    "--carrier",
                    "DHL",
                    "--tracking",
                    "T-1",
                ],
                vec![
                    "order",
                    "pay",
                    id.as_str(),
                    "--reference",
                    "p-x",
                    "--amount",
                    "1.00",
                ],
            ] {
                match stack.writer(&args) {
                    Err(StackError::Command { detail, .. }) => {
                        progress(&format!("refused as expected: {detail}"));
                        scenario.refused.push(detail);
                    }
                    other => {
                        return Err(StackError::Command {
                            command: format!("writer {}", args.join(" ")),
                            detail: format!("should have been refused, got {other:?}"),
                        })
                    }
                }
            }
        }
    }
    // A customer event after the orders that show the customer.
    let ada = format!("c-ada-{run}");
    stack.writer(&[
        "customer",
        "change-contact",
        &ada,
        "--name",
        "Ada King",
        "--email",
        "ada.king@example.com",
    ])?;
    scenario.commands += 1;
    progress(&format!("{ada} changed her name to Ada King"));
    Ok(scenario)
}

/// Waits until `order_view` shows every expected order with its status and
/// version; returns how long that took.
pub fn await_read_model(
    stack: &Stack,
    scenario: &Scenario,
    deadline: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let ids: Vec<String> = scenario
        .expected
        .keys()
        .map(|id| format!("'{id}'"))
        .collect();
    let sql = format!(
        "SELECT order_id, status, last_version FROM order_view WHERE order_id IN ({}) ORDER BY order_id",
        ids.join(",")
    );
    let mut last = String::new();
    let done = wait_until(deadline, Duration::from_millis(200), || {
        let Ok(out) = stack.psql(READ_DB, &sql) else {
            return false;
        };
        last = out.clone();
        let seen: BTreeMap<String, (String, i64)> = out
            .lines()
            .filter_map(|l| {
                let parts: Vec<&str> = l.split('|').collect();
                Some((
                    parts.first()?.to_string(),
                    (parts.get(1)?.to_string(), parts.get(2)?.parse().ok()?),
                ))
            })
            .collect();
        let renamed = stack
            .psql(
                READ_DB,
                &format!("SELECT count(*) FROM order_view WHERE customer_id = 'c-ada-{}' AND customer_name = 'Ada King'", scenario.run),
            )
            .map(|o| o.trim() == "1")
            .unwrap_or(false);
        seen == scenario.expected && renamed
    });
    if done {
        Ok(started.elapsed())
    } else {
        Err(StackError::NotReady {
            component: crate::Component::Projector,
            seconds: deadline.as_secs(),
            detail: format!("order_view did not reach the expected state; it shows:\n{last}"),
        })
    }
}

/// The read models' rows for people (psql's aligned tables).
pub fn show_read_model(stack: &Stack, scenario: &Scenario) -> Result<String> {
    let ids: Vec<String> = scenario
        .expected
        .keys()
        .map(|id| format!("'{id}'"))
        .collect();
    let queries = [
        format!(
            "SELECT order_id, customer_name AS customer, status, to_char(total_cents / 100.0, 'FM999990.00') || ' ' || currency AS total, \
             line_count AS lines, shipping_address ->> 'city' AS ships_to, last_version AS version, to_char(placed_at, 'HH24:MI:SS') AS placed, \
             to_char(coalesce(confirmed_at, rejected_at), 'HH24:MI:SS') AS stock_reply, \
             to_char(paid_at, 'HH24:MI:SS') AS paid, to_char(shipped_at, 'HH24:MI:SS') AS shipped, to_char(delivered_at, 'HH24:MI:SS') AS delivered, \
             to_char(cancelled_at, 'HH24:MI:SS') AS cancelled, to_char(refunded_at, 'HH24:MI:SS') AS refunded, \
             reject_reason \
             FROM order_view WHERE order_id IN ({}) ORDER BY placed_at",
            ids.join(",")
        ),
        format!(
            "SELECT customer_id, name, email, city, orders_placed, open_orders, lifetime_value FROM customer_summary \
             WHERE customer_id LIKE '%-{}' ORDER BY customer_id",
            scenario.run
        ),
        "SELECT day, sku, currency, units, to_char(revenue_cents / 100.0, 'FM999990.00') AS revenue FROM product_sales_daily ORDER BY day, sku".to_owned(),
        "SELECT sku, on_hand, reserved, available FROM stock_view ORDER BY sku".to_owned(),
    ];
    let mut out = String::new();
    for (title, sql) in [
        "order_view",
        "customer_summary",
        "product_sales_daily",
        "stock_view",
    ]
    .iter()
    .zip(queries)
    {
        out.push_str(&format!(
            "{title}:\n{}\n",
            crate::postgres::psql(&stack.login(crate::Role::Reader, crate::READ_DB), &sql, &[])?
        ));
    }
    Ok(out)
}
