use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use outbox_events::{Envelope, Event, OrderLine, OrderPaid, OrderPlaced};
use projector::record::Record;
use projector::settings::{BatchSettings, Settings};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use stack::{Component, Stack};
use uuid::Uuid;

/// PostgreSQL and the broker, once for this test binary.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let stack = Stack::for_tests("projector").expect("test stack");
        stack
            .start(Component::Postgres, &|_| {})
            .expect("postgres starts");
        stack
            .start(Component::Broker, &|_| {})
            .expect("broker starts");
        stack
    })
}

/// A fresh read database, a fresh topic and a fresh consumer group for one test.
pub struct TestEnv {
    pub settings: Settings,
    /// The order topic.
    pub topic: String,
    pub customer_topic: String,
    pub client: projector::worker::Db,
    /// This test's run of the live projection (positions, tallies).
    pub checkpoint: projector::position::Checkpoint,
    producer: FutureProducer,
}

impl TestEnv {
    pub async fn new() -> Self {
        let stack = stack();
        let suffix = Uuid::new_v4().simple().to_string();
        let dbname = format!("r_{suffix}");
        stack
            .admin_sql(
                "postgres",
                &format!("CREATE DATABASE {dbname} OWNER orders_owner"),
            )
            .expect("create database");
        let topic = format!("t{suffix}.outbox.event.order");
        stack.create_topic(&topic, 3).expect("create topic");
        let customer_topic = format!("t{suffix}.outbox.event.customer");
        stack
            .create_topic(&customer_topic, 3)
            .expect("create topic");
        let db = stack.db(&dbname);
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "database": { "host": db.host, "port": db.port, "user": db.user, "password": db.password, "dbname": db.dbname },
            // The admin's login: these tests' topics and groups have names of their own,
            // outside the projector user's ACLs (debezium/kafka-acls.txt).
            "kafka": {
                "bootstrap_servers": stack.bootstrap_servers(), "group_id": format!("g{suffix}"), "topics": [topic, customer_topic],
                "sasl": { "username": stack::state::KafkaUser::Admin.name(), "password": stack.state.kafka.admin_password },
            },
            "metrics_addr": "127.0.0.1:0",
        }))
        .expect("settings");
        let mut client = projector::worker::connect(projector::SERVICE, &settings)
            .await
            .expect("connect");
        projector::migrate(&mut client).await.expect("migrate");
        let producer: FutureProducer = stack::kafka::client_config(stack)
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer");
        Self {
            // The same records applied twice must reach the inbox and the
            // version policy, which these tests are about.
            checkpoint: projector::position::Checkpoint::new(settings.kafka.group_id.clone())
                .unfenced(),
            settings,
            topic,
            customer_topic,
            client,
            producer,
        }
    }

    /// One step of the projector ([`apply_batch`]) on this test's read database.
    pub async fn apply(
        &mut self,
        records: &[Record],
    ) -> Result<projector::batch::Outcome, projector::batch::BatchError> {
        projector::batch::apply_batch(
            &mut self.client,
            &projector::ReadModels,
            &projector::record::Decoder::default(),
            records,
            &self.checkpoint,
        )
        .await
    }

    pub fn batch_settings(&mut self, max_records: usize) {
        self.settings.batch = BatchSettings {
            max_records,
            max_wait_ms: 200,
        };
    }

    /// Publishes an envelope as the Event Router would: key = aggregate id,
    /// value = payload JSON, metadata in headers.
    pub async fn publish(&self, envelope: &Envelope) {
        let payload = envelope.event.to_payload().to_string();
        let topic = match envelope.aggregate_type.as_str() {
            "customer" => &self.customer_topic,
            _ => &self.topic,
        };
        let headers = envelope.to_headers();
        let headers: Vec<(&str, Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect();
        self.publish_bytes(
            topic,
            Some(envelope.aggregate_id.as_bytes()),
            &headers,
            Some(payload.as_bytes()),
        )
        .await;
    }

    /// Publishes any bytes; returns where the record landed (partition, offset).
    pub async fn publish_bytes(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        value: Option<&[u8]>,
    ) -> (i32, i64) {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: *value,
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        let delivery = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
        (delivery.partition, delivery.offset)
    }

    pub async fn publish_raw(&self, key: &str, headers: &[(&str, String)], payload: &[u8]) {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(key)
                    .payload(payload)
                    .headers(owned),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
    }

    /// Builds a record as the Event Router would publish `envelope` on this topic.
    pub fn record(&self, envelope: &Envelope, offset: i64) -> Record {
        let topic = format!("x.outbox.event.{}", envelope.aggregate_type);
        Record::from_envelope(envelope, topic, 0, offset)
    }

    pub fn consumer(&self) -> StreamConsumer<projector::worker::WorkerContext> {
        projector::worker::build_consumer(projector::SERVICE, &self.settings).expect("consumer")
    }

    pub async fn order_view(&self, order_id: Uuid) -> Option<(String, i64)> {
        self.client
            .query_opt(
                "SELECT status, last_version FROM order_view WHERE order_id = $1",
                &[&order_id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    /// The test group's committed offsets for every partition of its topics,
    /// with the (non-committing) consumer that read them, for watermarks.
    pub fn committed_offsets(
        &self,
    ) -> (rdkafka::consumer::BaseConsumer, rdkafka::TopicPartitionList) {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = stack::kafka::client_config(stack())
            .set("group.id", &self.settings.kafka.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        for topic in &self.settings.kafka.topics {
            for partition in 0..3 {
                partitions.add_partition(topic, partition);
            }
        }
        let committed = consumer
            .committed_offsets(partitions, Duration::from_secs(10))
            .unwrap();
        (consumer, committed)
    }

    /// Every read model's rows as text: every column but the processing
    /// timestamps (`stack::oracle::read_model_dump_sql`, the one dump all tests share).
    pub async fn read_models(&self) -> String {
        self.client
            .query_one(&stack::oracle::read_model_dump_sql(), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The whole read side as text, to compare states: the read models, and
    /// how many events the inbox and the dead letters hold.
    pub async fn snapshot(&self) -> String {
        self.client
            .query_one(
                &format!(
                    "SELECT ({}) || '|' || (SELECT count(*) FROM inbox) || '|' || (SELECT count(*) FROM dead_letters)",
                    stack::oracle::read_model_dump_sql()
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Receives `n` records (or fails after a deadline).
pub async fn receive(
    consumer: &StreamConsumer<projector::worker::WorkerContext>,
    n: usize,
) -> Vec<Record> {
    let mut records = Vec::new();
    while records.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived within 60s", records.len()))
            .expect("kafka message");
        records.push(Record::from_message(&message));
    }
    records
}

pub fn placed(order_id: Uuid) -> Envelope {
    Envelope::new(
        Event::OrderPlaced(OrderPlaced {
            order_id,
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                sku: "A".into(),
                quantity: 2,
                unit_price_cents: 500,
            }],
            total_cents: 1000,
            shipping_address: None,
        }),
        1,
        Utc::now(),
    )
}

pub fn paid(order_id: Uuid) -> Envelope {
    Envelope::new(
        Event::OrderPaid(OrderPaid {
            order_id,
            payment_reference: "p-1".into(),
            amount_cents: 1000,
            currency: "EUR".into(),
        }),
        2,
        Utc::now(),
    )
}

/// The real `projector` binary as a process, configured for `env` by
/// `PROJECTOR__*` variables: what can be SIGKILLed (an in-process service
/// closes its consumer on drop, which commits offsets: no crash at all).
pub struct ProjectorProcess {
    child: std::process::Child,
}

impl ProjectorProcess {
    pub fn spawn(env: &TestEnv) -> Self {
        Self::spawn_logging(env, "warn", std::process::Stdio::inherit())
    }

    /// [`ProjectorProcess::spawn`] with its log (`RUST_LOG=filter`) sent to `stderr`.
    pub fn spawn_logging(
        env: &TestEnv,
        filter: &str,
        stderr: impl Into<std::process::Stdio>,
    ) -> Self {
        Self::spawn_with(env, filter, stderr, &[])
    }

    /// [`ProjectorProcess::spawn_logging`] as a static member of the group
    /// named `instance` (`kafka.group_instance_id`).
    pub fn spawn_named(
        env: &TestEnv,
        instance: &str,
        stderr: impl Into<std::process::Stdio>,
    ) -> Self {
        Self::spawn_with(
            env,
            "info,rdkafka=warn",
            stderr,
            &[("PROJECTOR__KAFKA__GROUP_INSTANCE_ID", instance)],
        )
    }

    fn spawn_with(
        env: &TestEnv,
        filter: &str,
        stderr: impl Into<std::process::Stdio>,
        extra: &[(&str, &str)],
    ) -> Self {
        let s = &env.settings;
        let binary = stack().bin_dir.join("projector");
        let child = std::process::Command::new(&binary)
            .envs(extra.iter().copied())
            .env("PROJECTOR__DATABASE__HOST", &s.database.host)
            .env("PROJECTOR__DATABASE__PORT", s.database.port.to_string())
            .env("PROJECTOR__DATABASE__USER", &s.database.user)
            .env(
                "PROJECTOR__DATABASE__PASSWORD",
                secrecy::ExposeSecret::expose_secret(&s.database.password),
            )
            .env("PROJECTOR__DATABASE__DBNAME", &s.database.dbname)
            .env(
                "PROJECTOR__KAFKA__BOOTSTRAP_SERVERS",
                &s.kafka.bootstrap_servers,
            )
            .env("PROJECTOR__KAFKA__GROUP_ID", &s.kafka.group_id)
            .env("PROJECTOR__KAFKA__TOPICS", s.kafka.topics.join(","))
            .env(
                "PROJECTOR__KAFKA__SASL__USERNAME",
                &s.kafka.sasl.as_ref().expect("a login").username,
            )
            .env(
                "PROJECTOR__KAFKA__SASL__PASSWORD",
                secrecy::ExposeSecret::expose_secret(
                    &s.kafka.sasl.as_ref().expect("a login").password,
                ),
            )
            .env("PROJECTOR__METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", filter)
            .env_remove("LOG_FORMAT")
            .stdin(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self { child }
    }

    /// Still running (it has not exited, for whatever reason).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// How it exited, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll the projector")
    }

    /// SIGKILL: no final commit, no clean leave.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: finish the batch, commit, leave the group; it must exit 0
    /// (a projector that crashes on SIGTERM fails the test).
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the projector");
        let status = self.child.wait().expect("wait for the projector");
        assert!(
            status.success(),
            "the projector did not stop cleanly on SIGTERM: {status}"
        );
    }
}

impl Drop for ProjectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `sql` (one bigint) until it returns `want`, up to `limit`.
pub async fn await_count(client: &tokio_postgres::Client, sql: &str, want: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let got: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
