use std::process::Output;
use std::sync::OnceLock;

use stack::{Component, DbParams, Stack};

/// One PostgreSQL cluster for this test binary.
fn cluster() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let stack = Stack::for_tests("writer").expect("test stack");
        stack
            .start(Component::Postgres, &|_| {})
            .expect("postgres starts");
        stack
    })
}

/// A fresh, migrated write database of its own for one test.
pub struct TestDb {
    pub params: DbParams,
    pub client: tokio_postgres::Client,
}

impl TestDb {
    pub async fn new() -> Self {
        let stack = cluster();
        let name = format!("w_{}", uuid::Uuid::new_v4().simple());
        stack
            .admin_sql(
                "postgres",
                &format!("CREATE DATABASE {name} OWNER orders_owner"),
            )
            .expect("create database");
        let params = stack.db(&name);
        let (mut client, connection) =
            tokio_postgres::connect(&params.conn_string(), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(connection);
        writer::migrate(&mut client).await.expect("migrate");
        let db = Self { params, client };
        db.register("c-1");
        db
    }

    /// Registers a customer through the CLI.
    pub fn register(&self, customer_id: &str) {
        self.writer_ok(&[
            "customer",
            "register",
            customer_id,
            "--name",
            "Test Customer",
            "--email",
            "test@example.com",
            "--street",
            "1 Main St",
            "--city",
            "Berlin",
            "--postal-code",
            "10115",
            "--country",
            "DE",
        ]);
    }

    /// Runs the real writer binary against this database.
    pub fn writer(&self, args: &[&str]) -> Output {
        self.writer_with_env(args, &[])
    }

    /// [`TestDb::writer`] with extra environment variables (settings).
    pub fn writer_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.writer_command(args, env).output().expect("run writer")
    }

    /// The real writer binary, set up for this database, not yet started.
    pub fn writer_command(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_writer"));
        command
            .env("WRITER__DATABASE__HOST", &self.params.host)
            .env("WRITER__DATABASE__PORT", self.params.port.to_string())
            .env("WRITER__DATABASE__USER", &self.params.user)
            .env("WRITER__DATABASE__PASSWORD", &self.params.password)
            .env("WRITER__DATABASE__DBNAME", &self.params.dbname)
            .env_remove("WRITER_CONFIG")
            // Last: a test's own settings win.
            .envs(env.iter().copied())
            .args(args);
        command
    }

    /// Another session on this database (as its owner), e.g. to hold a lock.
    pub async fn session(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.params.conn_string(), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(connection);
        client
    }

    /// Sessions of this database waiting for a lock, per `pg_stat_activity`.
    pub async fn sessions_waiting_for_a_lock(&self) -> i64 {
        self.client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Waits (deadline 30 s) until `n` sessions wait for a lock.
    pub async fn await_lock_waiters(&self, n: i64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let waiting = self.sessions_waiting_for_a_lock().await;
            if waiting >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} of {n} sessions waiting for a lock after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs the writer with `--json` and expects success; returns the parsed output.
    pub fn writer_ok(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.writer(&all);
        assert!(
            out.status.success(),
            "writer {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    pub fn place(&self, lines: &[&str]) -> String {
        let mut args = vec!["order", "place", "--customer", "c-1", "--currency", "EUR"];
        for l in lines {
            args.extend(["--line", l]);
        }
        self.writer_ok(&args)["order_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Places an order and has the order reactor confirm it, as the
    /// inventory's `StockReserved` would ([`TestDb::reply`]).
    pub async fn place_confirmed(&self, lines: &[&str]) -> String {
        let id = self.place(lines);
        self.confirm(&id).await;
        id
    }

    /// Has the order reactor confirm order `id` ([`TestDb::reply`]).
    pub async fn confirm(&self, id: &str) {
        self.confirm_expecting(id, 1).await;
    }

    /// Sends the reactor a `StockReserved` for `id`; `applied` events expected
    /// (1: the reply took effect or was recorded as having none).
    pub async fn confirm_expecting(&self, id: &str, applied: usize) {
        let order_id: uuid::Uuid = id.parse().unwrap();
        let outcome = self
            .reply(outbox_events::Event::StockReserved(
                outbox_events::StockReserved {
                    order_id,
                    // What the reactor reads of the reply is its order id.
                    lines: vec![outbox_events::OrderLineQuantity {
                        sku: "A".into(),
                        quantity: 1,
                    }],
                    levels: vec![outbox_events::StockLevel {
                        sku: "A".into(),
                        on_hand: 1,
                        reserved: 1,
                        version: 1,
                    }],
                },
            ))
            .await;
        assert_eq!(outcome.applied, applied, "the reactor applied the reply");
    }

    /// One inventory reply through the real order reactor: the consumer core
    /// with the reactor's handler, one batch on this write database.
    pub async fn reply(&self, event: outbox_events::Event) -> consumer::batch::Outcome {
        let settings: consumer::settings::Settings = serde_json::from_value(serde_json::json!({
            "database": { "host": self.params.host, "port": self.params.port, "user": self.params.user,
                          "password": self.params.password, "dbname": self.params.dbname },
            "kafka": { "bootstrap_servers": "unused:9092", "topics": [] },
        }))
        .unwrap();
        let mut client = consumer::worker::connect(writer::react::SERVICE, &settings)
            .await
            .unwrap();
        let envelope = outbox_events::Envelope::new(event, 1, chrono::Utc::now());
        static OFFSET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let offset = OFFSET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let record = consumer::record::Record::from_envelope(
            &envelope,
            outbox_events::topic_for(outbox_events::RESERVATION_AGGREGATE),
            0,
            offset,
        );
        consumer::batch::apply_batch(
            &mut client,
            &writer::react::OrderReactor,
            &consumer::record::Decoder::default(),
            &[record],
            &consumer::position::Checkpoint::new("reactor-test").unfenced(),
        )
        .await
        .unwrap()
    }

    /// Every row of the write model and the outbox, as text: equal snapshots
    /// mean the database did not change.
    pub async fn snapshot(&self) -> String {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT coalesce(string_agg(o::text, ';' ORDER BY order_id), '') FROM orders o) || '|' || \
                        (SELECT coalesce(string_agg(l::text, ';' ORDER BY order_id, line_no), '') FROM order_lines l) || '|' || \
                        (SELECT coalesce(string_agg(c::text, ';' ORDER BY customer_id), '') FROM customers c) || '|' || \
                        (SELECT coalesce(string_agg(x::text, ';' ORDER BY id), '') FROM outbox x)",
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// Asserts a refused command: exit code 2 (the README's code for a refusal;
/// 1 is infrastructure) and exactly one line on stderr.
pub fn assert_refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a refusal (exit 2): stdout {} stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains(expected)),
        "stderr should mention {expected:?}: {stderr}"
    );
    assert_eq!(lines.len(), 1, "expected one clear line, got: {stderr}");
}
