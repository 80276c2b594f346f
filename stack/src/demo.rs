//! The scripted scenario of `./dev/demo`: orders through the writer CLI,
//! awaited in the read model, shown with psql.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{wait_until, Result, Stack, StackError, READ_DB};

/// What the scenario did and what the read model must show for it.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// order id -> (expected status, expected last aggregate version)
    pub expected: BTreeMap<String, (String, i64)>,
    pub commands: usize,
    pub refused: Vec<String>,
}

fn order_id(json: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| StackError::Command {
        command: "writer --json".into(),
        detail: format!("unexpected output {json:?}: {e}"),
    })?;
    Ok(value["order_id"].as_str().unwrap_or_default().to_owned())
}

/// Runs the scenario through the writer binary: five orders that end placed,
/// paid, shipped (twice) and cancelled, plus two commands the writer refuses.
pub fn run_scenario(stack: &Stack, progress: &dyn Fn(&str)) -> Result<Scenario> {
    let mut scenario = Scenario::default();
    let carts: [(&str, &[&str], &str); 5] = [
        ("c-ada", &["BOOK-DDIA:1:42.50", "PEN-BLUE:3:1.20"], "ship"),
        ("c-linus", &["KBD-MECH:1:129.00"], "ship"),
        (
            "c-grace",
            &["MUG-LOGO:2:9.99", "TEA-GREEN:1:6.50"],
            "cancel-paid",
        ),
        ("c-alan", &["CABLE-USB-C:4:7.25"], "cancel"),
        ("c-edsger", &["BOOK-SICP:1:55.00"], "none"),
    ];
    for (customer, lines, fate) in carts {
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
        let id = order_id(&stack.writer(&args)?)?;
        scenario.commands += 1;
        progress(&format!("placed order {id} for {customer}"));
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
        let pay = |reference: &str| {
            stack.writer(&[
                "order",
                "pay",
                &id,
                "--reference",
                reference,
                "--amount",
                &amount,
            ])
        };
        let (status, version) = match fate {
            "ship" => {
                pay(&format!("pay-{customer}"))?;
                stack.writer(&[
                    "order",
                    "ship",
                    &id,
                    "--carrier",
                    "DHL",
                    "--tracking",
                    &format!("TRK-{customer}"),
                ])?;
                scenario.commands += 2;
                ("shipped", 3)
            }
            "cancel-paid" => {
                pay(&format!("pay-{customer}"))?;
                stack.writer(&[
                    "order",
                    "cancel",
                    &id,
                    "--reason",
                    "customer changed their mind",
                ])?;
                scenario.commands += 2;
                ("cancelled", 3)
            }
            "cancel" => {
                stack.writer(&["order", "cancel", &id, "--reason", "out of stock; sorry!"])?;
                scenario.commands += 1;
                ("cancelled", 2)
            }
            _ => ("placed", 1),
        };
        scenario
            .expected
            .insert(id.clone(), (status.into(), version));
        if fate == "none" {
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
        seen == scenario.expected
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

/// The read model's rows for people (psql's aligned table).
pub fn show_read_model(stack: &Stack, scenario: &Scenario) -> Result<String> {
    let ids: Vec<String> = scenario
        .expected
        .keys()
        .map(|id| format!("'{id}'"))
        .collect();
    let sql = format!(
        "SELECT order_id, customer_id AS customer, status, to_char(total_cents / 100.0, 'FM999990.00') || ' ' || currency AS total, \
         line_count AS lines, last_version AS version, to_char(placed_at, 'HH24:MI:SS') AS placed, \
         to_char(paid_at, 'HH24:MI:SS') AS paid, to_char(shipped_at, 'HH24:MI:SS') AS shipped, \
         to_char(cancelled_at, 'HH24:MI:SS') AS cancelled FROM order_view WHERE order_id IN ({}) ORDER BY placed_at",
        ids.join(",")
    );
    crate::postgres::psql(&stack.read_db(), &sql, &[])
}
