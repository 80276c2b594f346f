//! A load generator on the real write path: many commands per process, the
//! same [`crate::store::execute`] the CLI runs (same validation, same
//! transaction, same outbox insert), through a connection pool.
//!
//! # Layout
//! - [`LoadSpec`]: clients, offered rate (or flat out), duration, the mix.
//! - [`Client`]: one simulated client: it registers customers and walks its
//!   orders through their life cycle, choosing the next command with a seeded
//!   RNG, so a run is reproducible.
//! - [`run`]: N clients concurrently until the duration ends; a [`Report`].
//!
//! The offered rate is shared evenly among clients, each keeping its own pace
//! (a missed tick is skipped, not made up in a burst); flat out (`rate: None`)
//! each client sends its next command as soon as the last one committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox_events::{Address, OrderLine};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{Command, CustomerCommand, OrderCommand, OrderStatus, Rejection};
use crate::store::{self, StoreError};

/// How many SKUs the clients order from: `SKU-0` … `SKU-199` (the stack
/// stocks them for its runs: `stack::saga::seed_stock`).
pub const CATALOGUE: u32 = 200;

/// Which commands a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// Every command kind: register, place (2-4 lines), pay, ship, deliver,
    /// cancel, refund, contact and address changes.
    Full,
    /// Only `order place` with two lines for customers registered up front:
    /// exactly the statements of `bench/place_order.sql` (pgbench).
    Place,
    /// `full` plus about 5% commands the rules must refuse (wrong amount,
    /// forbidden transition, unknown customer or order): the reliability
    /// suite checks that none of them leaves a trace.
    Chaos,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub clients: usize,
    /// Commands per second offered in total; `None` is flat out.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub mix: Mix,
    pub seed: u64,
    /// Stop after this many committed commands in total (and at the latest
    /// when `duration` ends).
    pub count: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub clients: usize,
    pub offered_rate: Option<f64>,
    pub seconds: f64,
    /// Commands that committed.
    pub committed: u64,
    /// Commands the rules refused (nothing written).
    pub refused: u64,
    /// Commands on orders the stock-reservation saga had not confirmed yet
    /// (tried again later; another command goes at once, outside the offered
    /// rate) or had rejected (dropped): refused, nothing written, but not the
    /// client's mistake.
    pub unconfirmed: u64,
    /// Commands that failed on the database (nothing written).
    pub failed: u64,
    /// Outbox events the committed commands appended.
    pub events: u64,
    pub commands_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub by_kind: BTreeMap<&'static str, u64>,
}

/// Counters the progress line reads while a run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub committed: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
}

/// An order this client placed, as far as it knows.
#[derive(Debug, Clone)]
struct Order {
    id: Uuid,
    total: i64,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Placed,
    Paid,
    Shipped,
    /// Cancelled after payment or delivered: refundable once.
    Refundable,
}

/// One simulated client and its own customers and orders.
#[derive(Debug)]
pub struct Client {
    prefix: String,
    rng: StdRng,
    customers: Vec<String>,
    orders: Vec<Order>,
    mix: Mix,
}

impl Client {
    pub fn new(run: &str, index: usize, seed: u64, mix: Mix) -> Self {
        Self {
            prefix: format!("ld-{run}-{index}"),
            rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            customers: Vec::new(),
            orders: Vec::new(),
            mix,
        }
    }

    fn address(&mut self) -> Address {
        let cities = ["Berlin", "Oslo", "Lyon", "Porto", "Turku"];
        Address {
            street: format!("{} Main St", self.rng.random_range(1..200)),
            city: cities[self.rng.random_range(0..cities.len())].into(),
            postal_code: format!("{:05}", self.rng.random_range(0..99_999)),
            country: "DE".into(),
        }
    }

    fn register(&mut self) -> Command {
        let customer_id = format!("{}-c{}", self.prefix, self.customers.len());
        Command::Customer(CustomerCommand::Register {
            customer_id,
            name: "Load Customer".into(),
            email: "load@example.com".into(),
            address: self.address(),
        })
    }

    fn place(&mut self, lines: usize) -> Command {
        let customer_id = self.customers[self.rng.random_range(0..self.customers.len())].clone();
        let lines = (0..lines)
            .map(|_| OrderLine {
                sku: format!("SKU-{}", self.rng.random_range(0..CATALOGUE)),
                quantity: self.rng.random_range(1..5),
                unit_price_cents: self.rng.random_range(100..10_000),
            })
            .collect();
        Command::Order(OrderCommand::Place {
            order_id: Uuid::new_v4(),
            customer_id,
            currency: "EUR".into(),
            lines,
        })
    }

    /// A command the domain rules refuse whatever the database holds.
    fn refused_command(&mut self) -> Command {
        let unknown_order = Uuid::new_v4();
        match (self.rng.random_range(0..4), self.orders.first().cloned()) {
            (0, Some(order)) => Command::Order(OrderCommand::Pay {
                order_id: order.id,
                payment_reference: "psp-wrong-amount".into(),
                amount_cents: order.total + 1,
            }),
            (1, Some(order)) if order.stage == Stage::Placed => {
                Command::Order(OrderCommand::Deliver { order_id: order.id })
            }
            (2, _) => {
                let mut place = self.place(1);
                if let Command::Order(OrderCommand::Place { customer_id, .. }) = &mut place {
                    *customer_id = format!("{}-nobody", self.prefix);
                }
                place
            }
            _ => Command::Order(OrderCommand::Cancel {
                order_id: unknown_order,
                reason: "no such order".into(),
            }),
        }
    }

    /// The next command, and its kind for the report.
    pub fn next_command(&mut self) -> (&'static str, Command) {
        if self.mix == Mix::Chaos && !self.customers.is_empty() && self.rng.random_bool(0.05) {
            return ("refused", self.refused_command());
        }
        if self.customers.is_empty() || (self.mix != Mix::Place && self.rng.random_bool(0.04)) {
            return ("register", self.register());
        }
        if self.mix == Mix::Place {
            return ("place", self.place(2));
        }
        let roll: f64 = self.rng.random();
        if roll < 0.03 {
            let customer_id =
                self.customers[self.rng.random_range(0..self.customers.len())].clone();
            let name = Some(format!("Renamed {}", self.rng.random_range(0..1000)));
            return (
                "change-contact",
                Command::Customer(CustomerCommand::ChangeContact {
                    customer_id,
                    name,
                    email: None,
                }),
            );
        }
        if roll < 0.05 {
            let customer_id =
                self.customers[self.rng.random_range(0..self.customers.len())].clone();
            let address = self.address();
            return (
                "change-address",
                Command::Customer(CustomerCommand::ChangeAddress {
                    customer_id,
                    address,
                }),
            );
        }
        if self.orders.is_empty() || roll < 0.30 {
            let lines = self.rng.random_range(2..=4);
            return ("place", self.place(lines));
        }
        let i = self.rng.random_range(0..self.orders.len());
        let order = self.orders[i].clone();
        let id = order.id;
        match order.stage {
            Stage::Placed if self.rng.random_bool(0.1) => (
                "cancel",
                Command::Order(OrderCommand::Cancel {
                    order_id: id,
                    reason: "changed mind".into(),
                }),
            ),
            Stage::Placed => (
                "pay",
                Command::Order(OrderCommand::Pay {
                    order_id: id,
                    payment_reference: format!("psp-{}", id.simple()),
                    amount_cents: order.total,
                }),
            ),
            Stage::Paid if self.rng.random_bool(0.05) => (
                "cancel",
                Command::Order(OrderCommand::Cancel {
                    order_id: id,
                    reason: "out of stock".into(),
                }),
            ),
            Stage::Paid => (
                "ship",
                Command::Order(OrderCommand::Ship {
                    order_id: id,
                    carrier: "DHL".into(),
                    tracking_number: format!("T{}", self.rng.random_range(0..1_000_000)),
                }),
            ),
            Stage::Shipped => (
                "deliver",
                Command::Order(OrderCommand::Deliver { order_id: id }),
            ),
            Stage::Refundable => (
                "refund",
                Command::Order(OrderCommand::Refund {
                    order_id: id,
                    amount_cents: order.total,
                    reason: "returned".into(),
                }),
            ),
        }
    }

    /// Learns from a refusal that is the saga's doing, not a mistake: a
    /// payment before the inventory's reply (the order stays, to be paid
    /// later) or any command on a rejected order (dropped). `false`: a
    /// refusal like any other.
    pub fn unconfirmed(&mut self, command: &Command, rejection: &Rejection) -> bool {
        let Rejection::InvalidTransition { status, verb, .. } = rejection else {
            return false;
        };
        let Command::Order(c) = command else {
            return false;
        };
        match (status, *verb) {
            (OrderStatus::Placed, "pay") => true,
            (OrderStatus::Rejected, _) => {
                self.orders.retain(|o| o.id != c.order_id());
                true
            }
            _ => false,
        }
    }

    /// Learns what a committed command changed.
    pub fn committed(&mut self, command: &Command) {
        match command {
            Command::Customer(CustomerCommand::Register { customer_id, .. }) => {
                self.customers.push(customer_id.clone())
            }
            Command::Customer(_) => {}
            Command::Order(c) => {
                let id = c.order_id();
                let position = self.orders.iter().position(|o| o.id == id);
                let next = match (c, position.map(|i| self.orders[i].stage)) {
                    (OrderCommand::Place { lines, .. }, None) => {
                        let total = lines
                            .iter()
                            .map(|l| i64::from(l.quantity) * l.unit_price_cents)
                            .sum();
                        if self.mix != Mix::Place {
                            self.orders.push(Order {
                                id,
                                total,
                                stage: Stage::Placed,
                            });
                        }
                        return;
                    }
                    (OrderCommand::Pay { .. }, _) => Some(Stage::Paid),
                    (OrderCommand::Ship { .. }, _) => Some(Stage::Shipped),
                    (OrderCommand::Deliver { .. }, _) if self.rng.random_bool(0.1) => {
                        Some(Stage::Refundable)
                    }
                    (OrderCommand::Cancel { .. }, Some(Stage::Paid)) => Some(Stage::Refundable),
                    _ => None, // finished: delivered for good, cancelled unpaid, refunded
                };
                if let Some(i) = position {
                    match next {
                        Some(stage) => self.orders[i].stage = stage,
                        None => {
                            self.orders.swap_remove(i);
                        }
                    }
                }
            }
        }
    }
}

/// Refusals of the saga's doing answered at once by another command, in a row;
/// the next waits for its slot of the offered rate again.
const UNCONFIRMED_RETRIES: u32 = 10;

/// Runs `spec` against `pool`; `live` counts as it goes (for a progress line).
pub async fn run(pool: deadpool_postgres::Pool, spec: &LoadSpec, live: Arc<Live>) -> Report {
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut tasks = Vec::new();
    for index in 0..spec.clients {
        let pool = pool.clone();
        let live = live.clone();
        let mut client = Client::new(&run_id, index, spec.seed, spec.mix);
        let spec_count = spec.count;
        let period = spec
            .rate
            .map(|r| Duration::from_secs_f64(spec.clients as f64 / r.max(0.001)));
        tasks.push(tokio::spawn(async move {
            if client.mix == Mix::Place {
                // Customers first, outside the measured pace: place needs them.
                for _ in 0..10 {
                    let (_, command) = client.next_command();
                    if let Ok(mut db) = pool.get().await {
                        if store::execute(&mut db, &command, None, None).await.is_ok() {
                            client.committed(&command);
                        }
                    }
                }
            }
            let mut ticker = period.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                t
            });
            let mut tally = Report::default();
            let mut latencies = Vec::new();
            let limit = spec_count;
            // Whether the last command was a refusal of the saga's doing to
            // answer at once, and how many more of those this slot allows.
            let mut at_once = false;
            let mut retries_left = UNCONFIRMED_RETRIES;
            while Instant::now() < deadline
                && limit.is_none_or(|n| live.committed.load(Ordering::Relaxed) < n)
            {
                // A refusal of the saga's doing (a payment before the
                // inventory's reply) does not take a slot of the offered
                // rate: the next command goes at once, so the rate offered is
                // one of commands that can commit. Capped, so that a client
                // whose orders all wait for their replies does not spin.
                if !at_once {
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    retries_left = UNCONFIRMED_RETRIES;
                }
                at_once = false;
                let (kind, command) = client.next_command();
                let begun = Instant::now();
                let result = match pool.get().await {
                    Ok(mut db) => store::execute(&mut db, &command, None, None).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "no connection from the pool");
                        tally.failed += 1;
                        live.failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
                match result {
                    Ok(committed) => {
                        tally.committed += 1;
                        tally.events += committed.events.len() as u64;
                        *tally.by_kind.entry(kind).or_default() += 1;
                        live.committed.fetch_add(1, Ordering::Relaxed);
                        client.committed(&command);
                    }
                    Err(StoreError::Rejected(r))
                        if kind != "refused" && client.unconfirmed(&command, &r) =>
                    {
                        tally.unconfirmed += 1;
                        if retries_left > 0 {
                            retries_left -= 1;
                            at_once = true;
                        }
                    }
                    Err(StoreError::Rejected(_)) => {
                        tally.refused += 1;
                        live.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %service::chain(&e), "command failed");
                        tally.failed += 1;
                        live.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (tally, latencies)
        }));
    }
    let mut report = Report {
        clients: spec.clients,
        offered_rate: spec.rate,
        ..Report::default()
    };
    let mut latencies = Vec::new();
    for task in tasks {
        let Ok((tally, mut l)) = task.await else {
            continue;
        };
        report.committed += tally.committed;
        report.refused += tally.refused;
        report.unconfirmed += tally.unconfirmed;
        report.failed += tally.failed;
        report.events += tally.events;
        for (k, n) in tally.by_kind {
            *report.by_kind.entry(k).or_default() += n;
        }
        latencies.append(&mut l);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.commands_per_second = report.committed as f64 / report.seconds;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    report.latency_ms_p50 = pct(0.50);
    report.latency_ms_p99 = pct(0.99);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_walks_orders_through_every_command_kind() {
        let mut client = Client::new("t", 0, 7, Mix::Full);
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            let (kind, command) = client.next_command();
            kinds.insert(kind);
            client.committed(&command);
        }
        let all = [
            "cancel",
            "change-address",
            "change-contact",
            "deliver",
            "pay",
            "place",
            "refund",
            "register",
            "ship",
        ];
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), all);
    }

    #[test]
    fn the_same_seed_gives_the_same_commands() {
        let run = |seed| {
            let mut client = Client::new("t", 3, seed, Mix::Full);
            (0..50)
                .map(|_| {
                    let (kind, command) = client.next_command();
                    client.committed(&command);
                    kind
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
    }
}
