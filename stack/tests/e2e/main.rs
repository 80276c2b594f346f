//! End to end on a real local stack: writer binary -> PostgreSQL outbox ->
//! Debezium (Kafka Connect, distributed) -> Apache Kafka -> projector binary -> order_view.
//! Needs the workspace binaries (`cargo build --workspace --bins`).

#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

use std::time::{Duration, Instant};

use stack::{demo, Stack, INVENTORY_DB, READ_DB, WRITE_DB};

/// `writer load` in the background: 2 clients, 40 commands/s, every command
/// kind, with plenty of stock for its orders (confirmed, then paid and shipped).
fn writer_load(stack: &Stack, duration: &str) -> std::process::Child {
    stack::saga::seed_stock(stack, 1000).expect("stock for the load's SKUs");
    std::process::Command::new(stack.bin_dir.join("writer"))
        .arg("--config")
        .arg(stack.writer_config())
        .args([
            "load",
            "--clients",
            "2",
            "--rate",
            "40",
            "--duration",
            duration,
        ])
        .args(["--mix", "full"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("writer load starts")
}

/// Places a one-line order through the writer binary; returns its id.
fn place_order(stack: &Stack, customer: &str, line: &str) -> String {
    demo::place_order(stack, customer, &[line]).expect("order placed")
}

/// Polls `done` every 300 ms; fails with `why()` once `limit` has passed.
fn wait_until(limit: Duration, why: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Rows of `order_view` for one order (0 or 1).
fn order_rows(stack: &Stack, order_id: &str) -> i64 {
    count(
        stack,
        READ_DB,
        &format!("SELECT count(*) FROM order_view WHERE order_id = '{order_id}'"),
    )
}

/// Events committed in both outboxes: the order service's and the inventory's.
fn committed_events(stack: &Stack) -> i64 {
    count(stack, WRITE_DB, "SELECT count(*) FROM outbox")
        + count(stack, INVENTORY_DB, "SELECT count(*) FROM outbox")
}

/// The saga answered every order and the read side applied every event of
/// both outboxes.
fn settled(stack: &Stack) -> bool {
    count(
        stack,
        WRITE_DB,
        "SELECT count(*) FROM orders WHERE status = 'placed'",
    ) == 0
        && count(stack, READ_DB, "SELECT count(*) FROM inbox") == committed_events(stack)
}

fn count(stack: &Stack, db: &str, sql: &str) -> i64 {
    stack
        .psql(db, sql)
        .expect("query")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn orders_written_by_the_cli_reach_the_read_model_through_debezium() {
    let stack = Stack::for_tests("e2e").expect("test stack");
    stack.up(&|m| eprintln!("[e2e] {m}")).expect("stack up");

    // The scripted scenario: 5 customers, 5 orders, 20 commands, 2 refused.
    let scenario = demo::run_scenario(&stack, &|m| eprintln!("[e2e] {m}")).expect("scenario");
    assert_eq!(scenario.expected.len(), 5);
    assert_eq!(scenario.refused.len(), 2);
    let waited = demo::await_read_model(&stack, &scenario, Duration::from_secs(120))
        .expect("read model converges");
    eprintln!(
        "[e2e] read model caught up {:.2}s after the last command",
        waited.as_secs_f64()
    );

    // Exactly the expected rows, every event applied once, nothing dead.
    let ids: Vec<String> = scenario
        .expected
        .keys()
        .map(|id| format!("'{id}'"))
        .collect();
    let rows = stack
        .psql(
            READ_DB,
            &format!(
                "SELECT order_id, status, last_version, total_cents, line_count FROM order_view WHERE order_id IN ({}) ORDER BY order_id",
                ids.join(",")
            ),
        )
        .unwrap();
    let seen: Vec<(String, String, i64)> = rows
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split('|').collect();
            (p[0].to_owned(), p[1].to_owned(), p[2].parse().unwrap())
        })
        .collect();
    let expected: Vec<(String, String, i64)> = scenario
        .expected
        .iter()
        .map(|(id, (s, v))| (id.clone(), s.clone(), *v))
        .collect();
    assert_eq!(seen, expected);
    // Every column read, against the write side's rows: totals and line counts too.
    let written = stack
        .psql(
            WRITE_DB,
            &format!(
                "SELECT o.order_id, o.status, o.version, o.total_cents, \
                   (SELECT count(*) FROM order_lines l WHERE l.order_id = o.order_id) \
                 FROM orders o WHERE o.order_id IN ({}) ORDER BY o.order_id",
                ids.join(",")
            ),
        )
        .unwrap();
    assert_eq!(rows, written, "order_view against the write side's orders");
    let outbox = count(&stack, WRITE_DB, "SELECT count(*) FROM outbox");
    // The order reactor's, one per order placed: the saga's answer.
    let replies = count(
        &stack,
        WRITE_DB,
        "SELECT count(*) FROM outbox WHERE event_type IN ('OrderConfirmed', 'OrderRejected')",
    );
    assert_eq!(replies, 5, "one stock reply per order placed");
    assert_eq!(
        outbox - replies,
        scenario.commands as i64,
        "one event per committed command"
    );
    assert_eq!(outbox - replies, 20);
    // The inventory's: 7 stock counts, 5 replies, 2 releases, 2 shipments.
    let inventory = count(&stack, INVENTORY_DB, "SELECT count(*) FROM outbox");
    assert_eq!(inventory, 16);
    assert_eq!(
        count(&stack, READ_DB, "SELECT count(*) FROM inbox"),
        outbox + inventory
    );
    assert_eq!(
        count(&stack, READ_DB, "SELECT count(*) FROM dead_letters"),
        0
    );
    // Headers made it through the Event Router: versions were checked on apply,
    // and the inbox recorded the type and version of each event.
    assert_eq!(
        count(
            &stack,
            READ_DB,
            "SELECT count(*) FROM inbox WHERE event_type = 'OrderPlaced' AND aggregate_version = 1"
        ),
        5
    );

    // Commit-to-read-model latency of one order.
    let started = Instant::now();
    let id = place_order(&stack, &format!("c-alan-{}", scenario.run), "A:1:1.00");
    let visible = stack::wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
        stack
            .psql(
                READ_DB,
                &format!("SELECT count(*) FROM order_view WHERE order_id = '{id}'"),
            )
            .map(|o| o.trim() == "1")
            .unwrap_or(false)
    });
    assert!(visible, "order {id} never reached the read model");
    eprintln!(
        "[e2e] commit-to-read-model latency for one order: {} ms",
        started.elapsed().as_millis()
    );

    // The other two read models saw the same events.
    assert_eq!(
        stack
            .psql(READ_DB, "SELECT orders_placed, open_orders, lifetime_value::text FROM customer_summary WHERE customer_id LIKE 'c-grace-%'")
            .unwrap()
            .trim(),
        "1|0|{\"EUR\": 0}",
        "grace paid and was refunded"
    );
    assert_eq!(
        stack
            .psql(
                READ_DB,
                "SELECT sum(units) FROM product_sales_daily WHERE sku = 'KBD-MECH'"
            )
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        stack.psql(READ_DB, "SELECT sum(units) FROM product_sales_daily WHERE sku IN ('MUG-LOGO', 'CABLE-USB-C')").unwrap().trim(),
        "0",
        "cancelled orders are taken back out of sales"
    );

    // Every event carries its command's trace through Debezium: the outbox's
    // traceparent column became a header, value for value.
    // Both outboxes: the inventory's replies carry their order's trace; its
    // stock counts (`inventory stock set`, no command trace) carry none.
    let mut stored: Vec<String> = stack
        .psql(WRITE_DB, "SELECT traceparent FROM outbox")
        .unwrap()
        .lines()
        .chain(
            stack
                .psql(
                    INVENTORY_DB,
                    "SELECT traceparent FROM outbox WHERE aggregate_type = 'reservation'",
                )
                .unwrap()
                .lines(),
        )
        .map(str::to_owned)
        .collect();
    let mut published = stack.broker_header_values("traceparent").unwrap();
    published.retain(|t| !t.is_empty());
    stored.sort();
    published.sort();
    published.dedup();
    assert!(
        stored.iter().all(|t| t.len() == 55 && t.starts_with("00-")),
        "{stored:?}"
    );
    stored.dedup();
    assert_eq!(published, stored);

    // Status reports every component healthy.
    for s in stack::status::report(&stack) {
        assert!(s.healthy, "{} unhealthy: {}", s.component, s.detail);
    }
    // `down` stops the projector first, with SIGTERM: it finishes its batch, commits its offsets
    // and exits cleanly. The same stop here; then, for every partition, the group's committed
    // offset is the position stored with the read models, and both are at the partition's end
    // (Connect's transactions end with a commit marker, one offset no consumer reads).
    stack.stop(stack::Component::Projector).unwrap();
    {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let group: BaseConsumer = stack::kafka::client_config(&stack)
            .set("group.id", "projector")
            .create()
            .unwrap();
        for topic in stack::kafka::outbox_topics(&stack).unwrap() {
            for partition in 0..stack::kafka::PARTITIONS as i32 {
                let (_, end) = group
                    .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                    .unwrap();
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition(&topic, partition);
                let committed = group
                    .committed_offsets(tpl, Duration::from_secs(10))
                    .unwrap()
                    .elements()[0]
                    .offset()
                    .to_raw()
                    .unwrap_or(-1);
                let stored = stack
                    .psql(
                        READ_DB,
                        &format!(
                            "SELECT coalesce((SELECT next_offset FROM consumer_positions WHERE group_id = 'projector' \
                             AND topic = '{topic}' AND kafka_partition = {partition}), 0)"
                        ),
                    )
                    .unwrap()
                    .trim()
                    .parse::<i64>()
                    .unwrap();
                let place = format!("{topic}/{partition}");
                if end == 0 {
                    assert_eq!(stored, 0, "{place} is empty");
                    continue;
                }
                assert_eq!(
                    committed, stored,
                    "{place}: committed offset against stored position"
                );
                assert!(
                    stored == end || stored == end - 1,
                    "{place}: stored position {stored}, end offset {end}"
                );
            }
        }
    }
    stack.down(&|_| {}).unwrap();
    let log = stack.tail_log(stack::Component::Projector, 20);
    assert!(
        log.contains("shutdown signal received"),
        "projector log:\n{log}"
    );
    assert!(
        log.contains("consumer stopped service=\"projector\""),
        "projector did not stop cleanly:\n{log}"
    );
}

/// Secrets stay secret: no password in any process's arguments or in a log,
/// every file holding one is 0600 in a 0700 state directory, no folder above
/// it was opened up for PostgreSQL, and `stack env` prints no password.
#[test]
fn secrets_stay_out_of_arguments_logs_and_world_readable_files() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::for_tests("secrets").expect("test stack");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let ancestors: Vec<(std::path::PathBuf, u32)> = stack
        .state_dir
        .ancestors()
        .skip(1)
        .map(|a| (a.to_path_buf(), mode(a)))
        .collect();
    stack.up(&|m| eprintln!("[secrets] {m}")).expect("stack up");
    demo::place_order(&stack, "c-secret", &["BOOK-1:1:9.99"]).ok();

    let kafka = &stack.state.kafka;
    let secrets: Vec<String> = stack::Role::ALL
        .iter()
        .map(|role| stack.login(*role, READ_DB).password)
        .chain(
            [
                &kafka.controller_password,
                &kafka.broker_password,
                &kafka.admin_password,
                &kafka.connect_password,
                &kafka.projector_password,
                &kafka.connect_rest_password,
            ]
            .map(String::clone),
        )
        .collect();
    // Every process on the machine, the stack's five kinds included.
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        seen += 1;
        for secret in &secrets {
            assert!(
                !cmdline.contains(secret.as_str()),
                "a password is in the arguments of pid {:?}: {cmdline}",
                entry.file_name()
            );
        }
    }
    assert!(seen > 5, "read the arguments of {seen} processes only");
    for log in std::fs::read_dir(stack.state_dir.join("logs"))
        .unwrap()
        .flatten()
    {
        let text = String::from_utf8_lossy(&std::fs::read(log.path()).unwrap()).into_owned();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a password is in {}",
                log.path().display()
            );
        }
    }

    assert_eq!(mode(&stack.state_dir), 0o700, "the state directory");
    let mut private = vec![
        stack.state_dir.join("stack.json"),
        stack.state_dir.join("pgpass"),
        stack.pg_service_file(),
    ];
    for file in std::fs::read_dir(stack.state_dir.join("config"))
        .unwrap()
        .flatten()
    {
        private.push(file.path());
    }
    // Kafka's and Connect's settings hold their logins.
    private.push(stack.state_dir.join("kafka/node-1/server.properties"));
    private.push(stack.state_dir.join("kafka/admin-client.properties"));
    for file in [
        "worker.properties",
        "rest-users.properties",
        "rest-jaas.conf",
    ] {
        private.push(stack.state_dir.join("connect/worker-1").join(file));
    }
    for file in &private {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    for (ancestor, before) in &ancestors {
        assert_eq!(
            mode(ancestor),
            *before,
            "the mode of {} was changed",
            ancestor.display()
        );
    }
    let data = stack::postgres::data_dir(&stack);
    if nix::unistd::Uid::effective().is_root() {
        assert!(
            !data.starts_with(&stack.state_dir),
            "as root PostgreSQL's data lives outside the state directory: {}",
            data.display()
        );
    }

    let env = std::process::Command::new(stack.bin_dir.join("stack"))
        .arg("--state-dir")
        .arg(&stack.state_dir)
        .arg("env")
        .output()
        .unwrap();
    assert!(env.status.success());
    let printed = String::from_utf8_lossy(&env.stdout);
    assert!(printed.contains("PGSERVICEFILE="), "{printed}");
    for secret in &secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "stack env printed a password"
        );
    }
    // The service file works: psql logs in as the reader without a password given.
    let out = std::process::Command::new("psql")
        .env("PGSERVICEFILE", stack.pg_service_file())
        .env_remove("PGPASSWORD")
        .args(["service=orders_read", "-tAc", "SELECT current_user"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "orders_reader",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.down(&|_| {}).unwrap();
    stack::state::remove_stack_files(&stack.state_dir).unwrap();
    assert!(
        !data.exists(),
        "down --purge's removal leaves no data behind"
    );
}

#[test]
fn compose_uses_the_same_connector_sql_and_topics_as_the_local_stack() {
    let repo = stack::repo_root();
    let compose = std::fs::read_to_string(repo.join("docker-compose.yml")).unwrap();
    for needle in [
        "./debezium/outbox-connector.json",
        "./debezium/topics.txt",
        "./sql/bootstrap.sql",
        "./sql/compose-init.sh",
        "wal_level=logical",
        "WRITER__DATABASE__HOST",
        "PROJECTOR__KAFKA__BOOTSTRAP_SERVERS",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml does not reference {needle}"
        );
    }
    // The connector file is valid JSON with the settings both stacks rely on.
    let connector: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("debezium/outbox-connector.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(connector["name"], stack::CONNECTOR_NAME);
    let config = &connector["config"];
    assert_eq!(config["plugin.name"], "pgoutput");
    assert_eq!(config["publication.autocreate.mode"], "disabled");
    assert_eq!(
        config["transforms.outbox.type"],
        "io.debezium.transforms.outbox.EventRouter"
    );
    assert!(config["heartbeat.interval.ms"].as_str().is_some());
    // The writer's and projector's embedded migrations are the files in sql/.
    assert!(repo.join("sql/write/V1__orders_and_outbox.sql").exists());
    assert!(repo.join("sql/read/V1__order_view_and_inbox.sql").exists());
    // Topics: one list for both stacks; compose's projector consumes the same ones.
    // Both are the contract's (outbox_events): one topic per aggregate type,
    // named as the Event Router routes them.
    let topics = stack::read_topics(&repo).unwrap();
    assert!(
        topics.iter().any(|t| t == "__debezium-heartbeat.outbox"),
        "debezium/topics.txt lacks the heartbeat topic"
    );
    let consumed: Vec<&str> = topics
        .iter()
        .map(String::as_str)
        .filter(|t| !t.starts_with("__"))
        .collect();
    assert_eq!(consumed, outbox_events::all_topics(), "debezium/topics.txt");
    assert!(
        topics.iter().any(|t| t == "__debezium-heartbeat.inventory"),
        "debezium/topics.txt lacks the inventory connector's heartbeat topic"
    );
    assert_eq!(
        config["transforms.outbox.route.topic.replacement"],
        format!("{}${{routedByValue}}", outbox_events::TOPIC_PREFIX)
    );
    assert!(
        compose.contains(&format!("PROJECTOR__KAFKA__TOPICS: {}", consumed.join(","))),
        "compose's projector must consume {consumed:?}"
    );
    // Retention is explicit for every topic, in the one list both stacks read.
    for (topic, configs) in stack::read_topic_specs(&repo).unwrap() {
        assert!(
            configs.iter().any(|c| c.starts_with("retention.ms=")),
            "{topic} has no explicit retention in debezium/topics.txt"
        );
    }
    assert!(compose.contains("while read -r topic configs") && compose.contains("--config $$c"));
}

/// What a careful read of the images' entrypoints found, kept fixed.
#[test]
fn compose_has_no_start_up_race_and_applies_what_the_files_say() {
    let repo = stack::repo_root();
    let compose = std::fs::read_to_string(repo.join("docker-compose.yml")).unwrap();
    // Readiness over TCP, with the database present (not the init-time socket server).
    // ... as the reader role: the superuser is kept out of health checks and init steps.
    assert!(compose.contains("pg_isready -h 127.0.0.1 -U orders_reader -d orders_read &&"));
    assert_eq!(
        compose
            .lines()
            .filter(|l| l.contains("POSTGRES_PASSWORD"))
            .count(),
        1,
        "the superuser's password serves the image's initialisation only"
    );
    assert!(
        compose.contains("psql -h postgres -U debezium -d orders_write -f /sql/create_slot.sql")
    );
    assert!(compose.contains(
        "psql -h postgres -U debezium -d orders_inventory -v slot=inventory_slot -f /sql/create_slot.sql"
    ));
    // No default passwords: each is required from the environment.
    for line in compose.lines().filter(|l| l.contains("PASSWORD: ")) {
        assert!(
            line.contains("PASSWORD:?") || line.contains("$$"),
            "a password with a default or none required: {line}"
        );
    }
    assert!(compose.contains(r#"["writer", "migrate", "--wait-for-db", "60"]"#));
    assert!(compose.contains(&format!(
        "\"max_slot_wal_keep_size={}\"",
        stack::postgres::MAX_SLOT_WAL_KEEP_SIZE
    )));
    // Connect's worker settings come from debezium/connect-distributed.properties, not from
    // variables of an image's entrypoint (stack/tests/versions.rs checks the worker file).
    assert!(!compose.contains("OFFSET_FLUSH_INTERVAL_MS:"));
    // Kafka's data on the volume.
    assert!(
        compose.contains("KAFKA_LOG_DIRS: /var/lib/kafka/data")
            && compose.contains("kafkadata:/var/lib/kafka/data")
    );
    // The connector is PUT (edits apply), and commands wait until it and its task run.
    assert!(
        compose.contains("-X PUT")
            && compose.contains("/connectors/$$name/config")
            && compose.contains("for name in outbox-connector inventory-connector; do")
    );
    assert!(compose.contains(r#"*'"state":"RUNNING"'*'"state":"RUNNING"'*"#));
    assert!(
        !compose.contains(r#"[ "$$code" = 409 ]"#),
        "a 409 must not count as success"
    );
    // One image for the three migrations, the projector, the inventory, the
    // reactor, the writer's, the inventory's and the operator's CLIs.
    assert_eq!(compose.matches("<<: *app").count(), 9);
    assert!(compose.contains("PROJECTOR__DATABASE__USER: orders_operator"));
    // Least privilege: migrations as the owner, each service its own role.
    assert_eq!(compose.matches("USER: orders_owner").count(), 3);
    assert!(compose.contains("INVENTORY__DATABASE__USER: orders_inventory"));
    assert!(compose.contains("REACTOR__DATABASE__USER: orders_writer"));
    assert!(compose.contains("WRITER__DATABASE__USER: orders_writer"));
    assert!(compose.contains("PROJECTOR__DATABASE__USER: orders_projector"));
    assert!(!compose.contains("orders_app"));
    assert_eq!(
        compose.matches("restart: unless-stopped").count(),
        7,
        "postgres, kafka, connect, the task watchdog, inventory, reactor, projector"
    );
    // connect-init extracts the "config" object with sed: the same keys as the file.
    for (_, path) in stack::connect::CONNECTORS {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"sed -n '/"config": {{/,/^  }}/p' {path} | sed '1s/.*"config": //'"#
            ))
            .current_dir(&repo)
            .output()
            .unwrap();
        let extracted: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("connect-init sends valid JSON");
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo.join(path)).unwrap()).unwrap();
        assert_eq!(extracted, file["config"], "{path}");
    }
    // The slot exists before anything writes, in both stacks (sql/create_slot.sql).
    assert!(compose.contains("./sql/create_slot.sql:/sql/create_slot.sql:ro"));
    assert!(compose.contains("slot-init: { condition: service_completed_successfully }"));
    // CRLF checkouts cannot break the scripts and lists containers read.
    let attributes = std::fs::read_to_string(repo.join(".gitattributes")).unwrap();
    for pattern in ["*.sh", "*.txt", "*.sql", "*.json", "*.properties"] {
        assert!(
            attributes.contains(&format!("{pattern} ")),
            "{pattern} lacks eol=lf"
        );
    }
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("--mount=type=cache,target=/usr/local/cargo/registry"));
}

/// The reliability suite as CI runs it, on a real cluster: three Kafka
/// nodes (replication factor 3, min.insync.replicas 2) and two Connect
/// workers. 22 SIGKILLs over writers, all of Connect, one Connect worker, the
/// whole Kafka cluster, single brokers (the busiest partition's leader among
/// them), two projector instances and PostgreSQL under load, then the oracle
/// and the duplicate records on the topics (0 with the exactly-once relay).
/// A new seed every run (printed; `stack chaos --seed N` replays it).
/// Prints the chaos run's seed when the test fails (on any assertion), so
/// the run can be replayed from the failure's last lines.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chaos seed {0}: replay with CHAOS_SEED={0} cargo test --workspace -- --exact \
                 the_chaos_suite_passes_twenty_kills_over_every_component",
                self.0
            );
        }
    }
}

#[test]
fn the_chaos_suite_passes_twenty_kills_over_every_component() {
    let shape = stack::Shape {
        brokers: 3,
        connect_workers: 2,
        ..stack::Shape::default()
    };
    let stack = Stack::for_tests_with("chaos", shape).expect("test stack");
    stack.up(&|m| eprintln!("[chaos] {m}")).expect("stack up");
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("[chaos] seed {seed}");
    // For the summary: ./dev/test prints it as its CI log's last line.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-seed"),
        seed.to_string(),
    );
    // Whatever assertion fails below, the failure ends with the seed.
    let _seed_on_failure = SeedOnFailure(seed);
    let spec = stack::chaos::ChaosSpec {
        duration: Duration::from_secs(150),
        kills: 22,
        seed,
        projectors: 2,
        rate: 40.0,
        writers: 2,
        shape,
    };
    let report = stack::chaos::run(&stack, &spec, &|m| eprintln!("[chaos] {m}"));
    stack.down(&|_| {}).unwrap();
    let report = report.unwrap_or_else(|e| {
        panic!("seed {seed}: the chaos run did not finish (replay: CHAOS_SEED={seed}): {e}")
    });
    eprintln!("{}", report.render());
    assert!(report.passed, "seed {seed}: {}", report.render());
    assert_eq!(report.faults.len(), 22);
    for target in [
        "writer",
        "connect",
        "connect_worker",
        "broker",
        "broker_node",
        "projector-1",
        "projector-2",
        "postgres",
        "inventory",
        "reactor",
    ] {
        assert!(
            report.kills.get(target).copied().unwrap_or(0) >= 1,
            "{target} never killed"
        );
    }
    assert!(report.commands_committed > 0 && report.commands_refused > 0);
    assert!(
        report.transactions_killed > 0,
        "no writer was killed inside a transaction"
    );
    assert!(
        report.saga_batches_killed > 0,
        "seed {seed}: neither the inventory nor the reactor was killed inside a batch's transaction"
    );
    // The saga took every path: orders confirmed and held or shipped, refused
    // for lack of stock (the SKUs run out between restocks), released by a
    // cancellation.
    assert!(report.restocks > 0, "seed {seed}: no restock");
    for status in ["reserved", "rejected", "released"] {
        assert!(
            report.reservations.get(status).copied().unwrap_or(0) > 0,
            "seed {seed}: no reservation ended {status}: {:?}",
            report.reservations
        );
    }
    assert_eq!(report.events_applied, report.events_committed);
    assert_eq!(
        report.oracle.broker_duplicates, 0,
        "seed {seed}: the exactly-once relay published records twice"
    );
    // A run that proves something: thousands of events (40 commands/s for
    // 150 s), every read model populated, every command the writers report
    // committed among the events, and the topics read back in full.
    assert!(
        report.events_committed >= 1000,
        "seed {seed}: only {} events",
        report.events_committed
    );
    for (model, least) in [
        ("order_view", 100),
        ("customer_summary", 50),
        ("product_sales_daily", 10),
    ] {
        let rows = report.oracle.rows.get(model).copied().unwrap_or(0);
        assert!(rows >= least, "seed {seed}: {model} has {rows} rows");
    }
    assert!(
        report.oracle.stock_rows >= 5,
        "seed {seed}: stock_view has {} rows",
        report.oracle.stock_rows
    );
    assert!(report.events_committed as u64 >= report.commands_committed);
    assert!(report.oracle.broker_records >= report.events_committed);
}

/// The scale benchmark's smoke run: one cell (12 partitions) with one and two
/// projector instances, and the growth of a small history. It proves every
/// part runs and reports its figures; it asserts no speed.
#[test]
fn the_scale_benchmark_runs_every_part_and_writes_its_report() {
    let spec = stack::scale::ScaleSpec::quick();
    let open = |shape: stack::Shape, name: &str| Stack::for_tests_with(name, shape);
    let results =
        stack::scale::run(&spec, &open, &|m| eprintln!("[scale] {m}")).expect("scale run");
    let cells: Vec<(u8, u32, u32)> = results
        .cells
        .iter()
        .map(|c| (c.brokers, c.partitions, c.projectors))
        .collect();
    assert_eq!(cells, [(1, 12, 1), (1, 12, 2)]);
    for c in &results.cells {
        assert!(
            c.catch_up_events as f64 >= spec.backlog as f64 && c.catch_up_events_per_second > 0.0,
            "{c:?}"
        );
        assert!(c.achieved_rate > 0.0 && c.p50_ms <= c.p99_ms, "{c:?}");
    }
    let sizes: Vec<u64> = results.writer_growth.iter().map(|w| w.orders).collect();
    assert_eq!(sizes.len(), 2);
    // Measured once the write database held each size.
    assert!(sizes[0] >= 3_000 && sizes[1] >= 6_000, "{sizes:?}");
    assert!(results
        .writer_growth
        .iter()
        .all(|w| w.writer_commands_per_second > 0.0 && w.pgbench_tps > 0.0));
    let history: Vec<u64> = results.history.iter().map(|h| h.events).collect();
    assert_eq!(history, [3_000, 6_000]);
    assert!(results
        .history
        .iter()
        .all(|h| h.window_events > 0 && h.events_per_second > 0.0));
    let out = std::env::temp_dir().join(format!("scale-report-{}", std::process::id()));
    let md = stack::scale::write_report(&results, &out, "stack bench --scale --quick").unwrap();
    let text = std::fs::read_to_string(md).unwrap();
    for heading in [
        "Scale-out",
        "the writer with a larger write database",
        "catch-up as the read database grows",
    ] {
        assert!(text.contains(heading), "{heading} missing from the report");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// The benchmark's smoke run: every phase on a real stack, tiny sizes. It
/// proves the command works and reports every figure; it asserts no speed.
#[test]
fn the_benchmark_runs_every_phase_and_writes_its_report() {
    let stack = Stack::for_tests("bench").expect("test stack");
    stack.up(&|m| eprintln!("[bench] {m}")).expect("stack up");
    let results = stack::bench::run(&stack, &stack::bench::BenchSpec::quick(), &|m| {
        eprintln!("[bench] {m}")
    });
    stack.down(&|_| {}).unwrap();
    let results = results.expect("benchmark");
    assert_eq!(
        results.writer.len(),
        2,
        "writer vs pgbench at each client count"
    );
    assert!(results
        .writer
        .iter()
        .all(|w| w.writer_commands_per_second > 0.0 && w.pgbench_tps > 0.0));
    assert!(results.relay_events > 0 && results.relay_events_per_second > 0.0);
    let batches: Vec<usize> = results.catch_up.iter().map(|c| c.batch_size).collect();
    assert_eq!(batches, [1, 100, 1000]);
    assert!(results.catch_up.iter().all(|c| c.events > 0));
    assert_eq!(results.latency.len(), 2);
    // Every event of a run is measured: the inbox holds one row per event.
    assert!(results
        .latency
        .iter()
        .all(|l| l.events > 0 && l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms));
    assert!(results.recovery_seconds.is_some());
    assert!(results.recovery_later_late_events.is_some());
    let processes: Vec<&str> = results
        .resources
        .iter()
        .map(|r| r.component.as_str())
        .collect();
    // Every long-running process of the pipeline, the saga's consumers too.
    assert_eq!(
        processes,
        [
            "broker",
            "connect",
            "inventory",
            "reactor",
            "projector",
            "writer (load)"
        ]
    );

    let out = stack.state_dir.join("report");
    let md = stack::bench::write_report(&results, &out, "stack bench --quick").unwrap();
    let text = std::fs::read_to_string(md).unwrap();
    for heading in [
        "Writer vs PostgreSQL",
        "Relay",
        "Projector catch-up",
        "End to end",
        "Recovery",
        "Resources",
    ] {
        assert!(text.contains(heading), "{heading} missing from the report");
    }
    let svg = std::fs::read_to_string(out.join("benchmarks.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("projector catch-up"));
}

/// Commands committed while Connect has never run are still published: the
/// slot exists from the migrations on (sql/create_slot.sql).
#[test]
fn commands_written_before_connect_ever_started_are_published() {
    let stack = Stack::for_tests("early").expect("test stack");
    let log = |m: &str| eprintln!("[early] {m}");
    stack.start(stack::Component::Postgres, &log).unwrap();
    stack.migrate(&log).unwrap();
    let slots = count(
        &stack,
        WRITE_DB,
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_slot'",
    );
    assert_eq!(slots, 1, "the slot exists before the first write");
    demo::register_customer(&stack, "c-early").unwrap();
    let orders: Vec<String> = (0..3)
        .map(|i| place_order(&stack, "c-early", &format!("EARLY-{i}:1:1.00")))
        .collect();
    // The four events committed before any relay ran.
    let early: Vec<String> = stack
        .psql(WRITE_DB, "SELECT id FROM outbox")
        .unwrap()
        .lines()
        .map(|id| format!("'{id}'"))
        .collect();
    assert_eq!(early.len(), 4);
    // Only now: broker, Connect (its first start, no stored offsets), projector.
    stack.up(&log).unwrap();
    let arrived_sql = format!(
        "SELECT count(*) FROM inbox WHERE event_id IN ({})",
        early.join(",")
    );
    let inbox = || count(&stack, READ_DB, &arrived_sql);
    wait_until(
        Duration::from_secs(120),
        || format!("only {} of 4 early events arrived", inbox()),
        || inbox() >= 4,
    );
    for id in &orders {
        assert_eq!(order_rows(&stack, id), 1);
    }
    // Each applied exactly once (the inbox's key holds one row per event;
    // the connector's first snapshot may have published a copy, turned away).
    assert_eq!(inbox(), 4, "each exactly once");
    stack.down(&|_| {}).unwrap();
}

/// An idle outbox does not pin WAL: Debezium's heartbeat moves the slot's
/// confirmed position while only other tables change.
#[test]
fn the_slot_keeps_advancing_while_only_other_tables_change() {
    let stack = Stack::for_tests("heartbeat").expect("test stack");
    stack
        .up(&|m| eprintln!("[heartbeat] {m}"))
        .expect("stack up");
    let confirmed = || {
        stack
            .psql(
                WRITE_DB,
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'outbox_slot'",
            )
            .unwrap()
            .trim()
            .to_owned()
    };
    let lsn_of = |s: &str| {
        stack
            .psql(WRITE_DB, &format!("SELECT '{s}'::pg_lsn - '0/0'::pg_lsn"))
            .unwrap()
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    // Unrelated writes only (not the outbox): the WAL moves on.
    stack
        .psql(WRITE_DB, "CREATE TABLE IF NOT EXISTS unrelated (n int); INSERT INTO unrelated SELECT generate_series(1, 1000)")
        .unwrap();
    let wal_after_writes = lsn_of(
        stack
            .psql(WRITE_DB, "SELECT pg_current_wal_lsn()::text")
            .unwrap()
            .trim(),
    );
    // The heartbeat (every 10 s) must carry the slot past those writes.
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "the slot's confirmed LSN stayed at {} (WAL at {wal_after_writes})",
                confirmed()
            )
        },
        || lsn_of(&confirmed()) >= wal_after_writes,
    );
    stack.down(&|_| {}).unwrap();
}

/// The read database unreachable for 30 s while commands keep coming: the
/// projector retries (an outage, not the records' fault), skips nothing,
/// dead-letters nothing, and catches up.
#[test]
fn thirty_seconds_without_the_read_database_lose_and_dead_letter_nothing() {
    let stack = Stack::for_tests("readdown").expect("test stack");
    stack
        .up(&|m| eprintln!("[readdown] {m}"))
        .expect("stack up");
    let load = writer_load(&stack, "45s");
    std::thread::sleep(Duration::from_secs(5));
    stack
        .admin_sql(
            "postgres",
            "ALTER DATABASE orders_read ALLOW_CONNECTIONS false; \
             SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'orders_read'",
        )
        .unwrap();
    // Down for 30 s, and until the projector has run into it (on a loaded
    // machine the first batch after the cut can take a while to arrive).
    let cut = Instant::now();
    // Either message proves it: a batch that failed on its open connection,
    // or the consumer core's reconnect loop after the cut closed it (the
    // projector notices an idle connection's termination first).
    let retried = || {
        let log = stack.tail_log(stack::Component::Projector, 400);
        log.contains("batch failed, retrying")
            || log.contains("database unreachable service=\"projector\"")
    };
    wait_until(
        Duration::from_secs(120),
        || "the projector never tried the read database during the outage".into(),
        || cut.elapsed() >= Duration::from_secs(30) && retried(),
    );
    stack
        .admin_sql(
            "postgres",
            "ALTER DATABASE orders_read ALLOW_CONNECTIONS true",
        )
        .unwrap();
    assert!(load.wait_with_output().unwrap().status.success());
    let committed = count(&stack, WRITE_DB, "SELECT count(*) FROM outbox");
    assert!(committed > 1000, "load ran throughout: {committed} events");
    let inbox = || count(&stack, READ_DB, "SELECT count(*) FROM inbox");
    wait_until(
        Duration::from_secs(120),
        || {
            format!(
                "the projector applied {} of {} events after the outage",
                inbox(),
                committed_events(&stack)
            )
        },
        || settled(&stack),
    );
    assert_eq!(
        count(&stack, READ_DB, "SELECT count(*) FROM dead_letters"),
        0
    );
    assert_eq!(
        count(&stack, READ_DB, "SELECT count(*) FROM parked_events"),
        0
    );
    // Not only as many events: the read models are what the write side implies.
    let oracle = stack::oracle::check(&stack).unwrap();
    assert!(oracle.passed(), "{:#?}", oracle.failures());
    stack.down(&|_| {}).unwrap();
}

/// A fresh consumer group re-reading every topic into an empty read database
/// builds the same read models as the live projector.
#[test]
fn replaying_every_topic_into_an_empty_database_builds_identical_read_models() {
    let stack = Stack::for_tests("replay").expect("test stack");
    let log = |m: &str| eprintln!("[replay] {m}");
    stack.up(&log).expect("stack up");
    let scenario = demo::run_scenario(&stack, &log).expect("scenario");
    demo::await_read_model(&stack, &scenario, Duration::from_secs(120)).expect("live read model");
    wait_until(
        Duration::from_secs(60),
        || "the saga did not settle".into(),
        || settled(&stack),
    );
    let committed = committed_events(&stack);
    stack
        .admin_sql(
            "postgres",
            &format!("CREATE DATABASE orders_replay OWNER {}", stack::OWNER_USER),
        )
        .unwrap();
    stack.migrate_read_db("orders_replay").unwrap();
    let mut replay = std::process::Command::new(stack.bin_dir.join("projector"))
        .arg("--config")
        .arg(stack.projector_config())
        .env("PROJECTOR__DATABASE__DBNAME", "orders_replay")
        .env(
            "PROJECTOR__KAFKA__GROUP_ID",
            "projector-replay-from-the-beginning",
        )
        .env("PROJECTOR__METRICS_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(120),
        || format!("the replay did not reach {committed} events"),
        || {
            stack
                .psql("orders_replay", "SELECT count(*) FROM inbox")
                .map(|n| n.trim().parse::<i64>().unwrap_or(0))
                .unwrap_or(0)
                >= committed
        },
    );
    let _ = replay.kill();
    let _ = replay.wait();
    let dump = stack::oracle::read_model_dump_sql();
    let live = stack.psql(READ_DB, &dump).unwrap();
    let replayed = stack.psql("orders_replay", &dump).unwrap();
    assert!(live.lines().count() > 10, "a real history: {live}");
    assert_eq!(replayed, live);
    stack.down(&|_| {}).unwrap();
}

/// A replication slot dropped while Connect is down: Debezium notices that its
/// position is gone and (snapshot.mode=when_needed) publishes the outbox again,
/// so the events committed in between arrive; `reconcile --republish` is safe.
#[test]
fn a_lost_slot_is_detected_and_everything_committed_meanwhile_is_published_again() {
    let stack = Stack::for_tests("slotlost").expect("test stack");
    let log = |m: &str| eprintln!("[slotlost] {m}");
    stack.up(&log).expect("stack up");
    demo::register_customer(&stack, "c-slot").unwrap();
    let before = place_order(&stack, "c-slot", "BEFORE:1:1.00");
    wait_until(
        Duration::from_secs(60),
        || "the first events were not applied".into(),
        || settled(&stack),
    );
    assert!(stack::reconcile::run(&stack, 0).unwrap().is_clean());

    stack.stop(stack::Component::Connect).unwrap();
    stack
        .admin_sql(WRITE_DB, "SELECT pg_drop_replication_slot('outbox_slot')")
        .unwrap();
    let lost: Vec<String> = (0..3)
        .map(|i| place_order(&stack, "c-slot", &format!("LOST-{i}:1:1.00")))
        .collect();
    // The stored WAL position is gone with the slot: Debezium says so and,
    // with snapshot.mode=when_needed, publishes the outbox table again.
    stack.start(stack::Component::Connect, &log).unwrap();
    let after = place_order(&stack, "c-slot", "AFTER:1:1.00");
    wait_until(
        Duration::from_secs(90),
        || {
            format!(
                "still differs: {:?}",
                stack::reconcile::run(&stack, 0).map(|r| r.missing)
            )
        },
        || stack::reconcile::run(&stack, 0).is_ok_and(|r| r.is_clean()),
    );
    let connect_log = std::fs::read_to_string(stack.log_file(stack::Component::Connect)).unwrap();
    assert!(
        connect_log.contains("no longer available on the server"),
        "Debezium reports the lost position"
    );
    for id in lost.iter().chain([&before, &after]) {
        assert_eq!(order_rows(&stack, id), 1);
    }
    // Everything before the loss came again and changed nothing.
    let oracle = stack::oracle::check(&stack).unwrap();
    assert!(oracle.passed(), "{:#?}", oracle.failures());
    assert!(
        oracle.broker_duplicates >= 2,
        "the snapshot published the events from before the loss (registration, BEFORE) again"
    );

    // `reconcile --republish` sends chosen events again (same ids): the inbox
    // turns them away and nothing changes.
    let again = count(&stack, READ_DB, "SELECT count(*) FROM inbox");
    let outbox = stack
        .psql(
            WRITE_DB,
            &format!("SELECT id, aggregate_type, aggregate_id, aggregate_version FROM outbox WHERE aggregate_id = '{before}'"),
        )
        .unwrap();
    let chosen: Vec<(String, String, String, i64)> = outbox
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].parse().unwrap())
        })
        .collect();
    let duplicates_before = oracle.broker_duplicates;
    // What the projector counted as turned away (its runs' tallies, stored with the read
    // models): the inbox count cannot grow by construction, this count must.
    let turned_away = || {
        count(
            &stack,
            READ_DB,
            "SELECT coalesce(sum(duplicates_skipped + stale_skipped), 0) FROM consumer_runs WHERE group_id = 'projector'",
        )
    };
    // Every duplicate record the snapshot left on the topics is counted once consumed.
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "{duplicates_before} duplicate records on the topics, {} counted as turned away",
                turned_away()
            )
        },
        || turned_away() >= duplicates_before as i64,
    );
    let turned_away_before = turned_away();
    assert_eq!(
        stack::reconcile::republish(&stack, &chosen).unwrap(),
        chosen.len()
    );
    wait_until(
        Duration::from_secs(60),
        || "the re-published event never reached the topics".into(),
        || {
            stack::oracle::check(&stack)
                .is_ok_and(|o| o.broker_duplicates > duplicates_before && o.passed())
        },
    );
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "the projector counted {} of {} re-published events as duplicates",
                turned_away() - turned_away_before,
                chosen.len()
            )
        },
        || turned_away() >= turned_away_before + chosen.len() as i64,
    );
    assert_eq!(count(&stack, READ_DB, "SELECT count(*) FROM inbox"), again);
    // Reconciled again after the republish: still clean, and the read models are what the
    // write side implies (the oracle computes them independently of the projector).
    let report = stack::reconcile::run(&stack, 0).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let oracle = stack::oracle::check(&stack).unwrap();
    assert!(oracle.passed(), "{:#?}", oracle.failures());
    stack.down(&|_| {}).unwrap();
}

/// With Connect down, WAL is held only up to `max_slot_wal_keep_size`: past
/// it PostgreSQL invalidates the slot instead of filling the disk. What then
/// happens to events committed but not yet published: the relay stops loudly
/// (status, metric, Connect's log), nothing is lost, and the runbook (drop the
/// slot, start Connect: its snapshot publishes the outbox again) ends with
/// the read side equal to the write side.
#[test]
fn an_invalidated_slot_stops_the_relay_loudly_and_the_runbook_loses_nothing() {
    let stack = Stack::for_tests("slotwal").expect("test stack");
    let log = |m: &str| eprintln!("[slotwal] {m}");
    stack.up(&log).expect("stack up");
    demo::register_customer(&stack, "c-wal").unwrap();
    let before = place_order(&stack, "c-wal", "BEFORE:1:1.00");
    wait_until(
        Duration::from_secs(60),
        || "the first events were not applied".into(),
        || order_rows(&stack, &before) == 1,
    );
    let slot = stack::postgres::slot(&stack).unwrap().expect("a slot");
    assert!(
        slot.safe_wal_bytes.is_some_and(|b| b > 0),
        "a limit is set and its headroom shown: {slot:?}"
    );

    stack.stop(stack::Component::Connect).unwrap();
    let unpublished: Vec<String> = (0..3)
        .map(|i| place_order(&stack, "c-wal", &format!("UNPUBLISHED-{i}:1:1.00")))
        .collect();
    // A small limit for the test, then more WAL than it allows.
    stack
        .admin_sql(WRITE_DB, "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
        .unwrap();
    stack
        .admin_sql(WRITE_DB, "SELECT pg_reload_conf()")
        .unwrap();
    stack
        .admin_sql(WRITE_DB, "CREATE TABLE wal_filler (g int, pad text)")
        .unwrap();
    wait_until(
        Duration::from_secs(120),
        || {
            format!(
                "the slot was never invalidated: {:?}",
                stack::postgres::slot(&stack)
            )
        },
        || {
            stack
                .admin_sql(
                    WRITE_DB,
                    "INSERT INTO wal_filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 100000) g",
                )
                .unwrap();
            stack.admin_sql(WRITE_DB, "SELECT pg_switch_wal()").unwrap();
            stack.admin_sql(WRITE_DB, "CHECKPOINT").unwrap();
            stack::postgres::slot(&stack)
                .unwrap()
                .is_some_and(|s| s.lost())
        },
    );
    stack
        .admin_sql(WRITE_DB, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        .unwrap();
    stack
        .admin_sql(WRITE_DB, "SELECT pg_reload_conf()")
        .unwrap();
    stack.admin_sql(WRITE_DB, "DROP TABLE wal_filler").unwrap();

    // Loudly: the status names it and points at the runbook, the metric says so...
    let postgres = stack::status::health(&stack, stack::Component::Postgres)
        .expect_err("a lost slot is unhealthy");
    assert!(
        postgres.contains("LOST") && postgres.contains("A lost slot"),
        "{postgres}"
    );
    let report = stack::reconcile::run(&stack, 0).unwrap();
    assert!(stack::reconcile::metrics_text(&report, 0).contains("\noutbox_slot_lost 1\n"));
    // ... and the relay cannot go on from it: Debezium finds no valid slot
    // and says so (it retries, every 2 s up to 900 times, before its task fails).
    stack::connect::start(&stack).unwrap();
    wait_until(
        Duration::from_secs(120),
        || "Connect never reported the invalidated slot".into(),
        || {
            std::fs::read_to_string(stack.log_file(stack::Component::Connect))
                .is_ok_and(|l| l.contains("Cannot obtain valid replication slot 'outbox_slot'"))
        },
    );
    for id in &unpublished {
        assert_eq!(
            order_rows(&stack, id),
            0,
            "not published, and not lost either"
        );
    }

    // The inventory's slot, idle as long as Connect was stopped, lost its WAL too.
    let inventory = stack::status::health(&stack, stack::Component::Postgres).unwrap_err();
    assert!(
        inventory.contains("slot inventory_slot LOST"),
        "{inventory}"
    );
    // The runbook: drop the lost slots, start Connect again (each connector
    // creates its slot and its snapshot publishes its outbox).
    stack.stop(stack::Component::Connect).unwrap();
    // (A logical slot is dropped from its own database.)
    for db in [WRITE_DB, INVENTORY_DB] {
        stack
            .admin_sql(
                db,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE wal_status = 'lost' AND database = current_database()",
            )
            .unwrap();
    }
    stack.start(stack::Component::Connect, &log).unwrap();
    wait_until(
        Duration::from_secs(120),
        || {
            format!(
                "still differs: {:?}",
                stack::reconcile::run(&stack, 0).map(|r| r.missing)
            )
        },
        || stack::reconcile::run(&stack, 0).is_ok_and(|r| r.is_clean()),
    );
    for id in unpublished.iter().chain([&before]) {
        assert_eq!(order_rows(&stack, id), 1);
    }
    let oracle = stack::oracle::check(&stack).unwrap();
    assert!(oracle.passed(), "{:#?}", oracle.failures());
    stack.down(&|_| {}).unwrap();
}

/// Least privilege: each role can do its job and is refused the others'. The
/// matrix is printed (the closing note and docs/operations.md quote it).
/// `stack reconcile` on a real difference: an event removed from the read
/// side (its aggregate left a version behind) and one forged there. It exits
/// 1, names each in its list, and its gauges count them.
#[test]
fn reconcile_names_a_removed_and_a_forged_event_and_exits_1() {
    let stack = Stack::for_tests("reconcile").expect("test stack");
    stack
        .up(&|m| eprintln!("[reconcile] {m}"))
        .expect("stack up");
    demo::register_customer(&stack, "c-rec").unwrap();
    let order = place_order(&stack, "c-rec", "REC:1:1.00");
    let outbox = || count(&stack, WRITE_DB, "SELECT count(*) FROM outbox");
    // The saga settles first: the inventory rejects the order (no stock), the
    // reactor rejects it (version 2); four events in all, applied.
    wait_until(
        Duration::from_secs(60),
        || "the events were not applied".into(),
        || {
            outbox() == 3
                && count(&stack, INVENTORY_DB, "SELECT count(*) FROM outbox") == 1
                && count(&stack, READ_DB, "SELECT count(*) FROM inbox") == 4
        },
    );
    let reconcile = |textfile: &std::path::Path| {
        std::process::Command::new(stack.bin_dir.join("stack"))
            .arg("--state-dir")
            .arg(&stack.state_dir)
            .args(["reconcile", "--settle", "0", "--json", "--textfile"])
            .arg(textfile)
            .output()
            .unwrap()
    };
    let clean = reconcile(&stack.state_dir.join("clean.prom"));
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    // Removed: the order's event leaves the inbox and its version goes back to 0.
    let removed = stack
        .psql(
            WRITE_DB,
            &format!(
                "SELECT id FROM outbox WHERE aggregate_id = '{order}' AND event_type = 'OrderPlaced'"
            ),
        )
        .unwrap()
        .trim()
        .to_owned();
    let forged = "00000000-0000-4000-8000-00000000f09e";
    stack
        .admin_sql(
            READ_DB,
            &format!(
                "DELETE FROM inbox WHERE event_id = '{removed}'; \
                 DELETE FROM aggregate_versions WHERE aggregate_type = 'order' AND aggregate_id = '{order}'; \
                 INSERT INTO inbox (event_id, event_type, aggregate_type, aggregate_id, aggregate_version, topic, \
                   kafka_partition, kafka_offset, occurred_at) \
                 VALUES ('{forged}', 'OrderPaid', 'order', '{order}', 2, '{topic}', 0, 999999, now())",
                topic = outbox_events::topic_for(outbox_events::ORDER_AGGREGATE)
            ),
        )
        .unwrap();
    let textfile = stack.state_dir.join("reconcile.prom");
    let out = reconcile(&textfile);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["missing"],
        serde_json::json!([[removed, "order", order, 1]]),
        "{report}"
    );
    assert_eq!(report["unknown"], serde_json::json!([forged]), "{report}");
    assert_eq!(
        report["behind"],
        serde_json::json!([["order", order, 2, 0]]),
        "{report}"
    );
    let gauges = std::fs::read_to_string(&textfile).unwrap();
    for line in [
        "\noutbox_reconcile_missing_events 1\n",
        "\noutbox_reconcile_unknown_events 1\n",
        "\noutbox_reconcile_aggregates_behind 1\n",
        "\noutbox_slot_active 1\n",
        "\noutbox_relay_running 1\n",
    ] {
        assert!(gauges.contains(line), "{line:?} not in:\n{gauges}");
    }
    stack.down(&|_| {}).unwrap();
}

/// The broker and Connect's REST API let in only who logs in, and each Kafka
/// user does its own job only: the projector's login cannot forge an outbox
/// event (it could otherwise publish a "next version" that the real one is
/// then skipped behind), read another group or Connect's topics; nobody
/// without a login reaches the broker or replaces the connector.
#[test]
fn each_kafka_user_can_do_its_job_and_nothing_else() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::types::RDKafkaErrorCode;
    use stack::state::KafkaUser::{self, *};

    let stack = Stack::for_tests("kafka-users").expect("test stack");
    stack
        .up(&|m| eprintln!("[kafka-users] {m}"))
        .expect("stack up");
    let outbox_topic = &outbox_events::topic_for(outbox_events::ORDER_AGGREGATE);
    let client = |user: Option<KafkaUser>| {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", stack.bootstrap_servers())
            .set("socket.timeout.ms", "5000")
            .set("message.timeout.ms", "10000")
            .set("log_level", "0");
        if let Some(user) = user {
            stack::kafka::login(&mut config, &stack, user);
        }
        config
    };
    let produce = |user: KafkaUser, topic: &str| -> Result<(), KafkaError> {
        let producer: FutureProducer = client(Some(user)).create().unwrap();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key("forged").payload("{}"))
            .map_err(|(e, _)| e)?;
        futures::executor::block_on(delivery)
            .expect("a delivery report")
            .map(|_| ())
            .map_err(|(e, _)| e)
    };
    let code = |e: &KafkaError| e.rdkafka_error_code();

    // Writing: only Connect may write what Connect writes.
    let forged =
        produce(Projector, outbox_topic).expect_err("the projector's login wrote an outbox topic");
    assert_eq!(
        code(&forged),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "{forged}"
    );
    produce(Connect, "__debezium-heartbeat.outbox").expect("Connect's login writes its topics");

    // Reading: the projector reads the outbox topics in its own groups only.
    let topic_error = |user: KafkaUser, topic: &str| {
        let consumer: BaseConsumer = client(Some(user)).create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        metadata.topics()[0].error()
    };
    assert_eq!(
        topic_error(Projector, outbox_topic),
        None,
        "the projector sees the outbox topics"
    );
    assert!(
        topic_error(Projector, "connect_offsets").is_some(),
        "the projector sees Connect's source offsets"
    );
    // The saga's consumers: each reads the one topic it consumes, nothing else,
    // and writes nothing (their replies go through their outboxes and Connect).
    for (user, theirs, other) in [
        (Inventory, "outbox.event.order", "outbox.event.reservation"),
        (Reactor, "outbox.event.reservation", "outbox.event.order"),
    ] {
        assert_eq!(topic_error(user, theirs), None, "{user:?} sees {theirs}");
        assert!(topic_error(user, other).is_some(), "{user:?} sees {other}");
        let forged = produce(user, theirs).expect_err("a consumer's login wrote a topic");
        assert_eq!(
            code(&forged),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "{user:?}: {forged}"
        );
    }
    let committed = |group: &str| {
        let consumer: BaseConsumer = client(Some(Projector))
            .set("group.id", group)
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        partitions.add_partition(outbox_topic, 0);
        consumer.committed_offsets(partitions, Duration::from_secs(10))
    };
    committed("projector-auth-test").expect("the projector's own group");
    // Another group: the coordinator lookup itself is refused, which the
    // consumer reports through its poll.
    let consumer: BaseConsumer = client(Some(Projector))
        .set("group.id", "someone-else")
        .create()
        .unwrap();
    consumer.subscribe(&[outbox_topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refusal = None;
    while refusal.is_none() && Instant::now() < deadline {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(500)) {
            refusal = Some(e);
        }
    }
    assert_eq!(
        refusal.as_ref().and_then(code),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "the projector's login joined another group: {refusal:?}"
    );

    // The projector itself, run in a group its ACLs do not allow, stops at once and says why
    // (retrying cannot cure it) instead of polling forever.
    let started = Instant::now();
    let refused = std::process::Command::new(stack.bin_dir.join("projector"))
        .arg("--config")
        .arg(stack.projector_config())
        .env("PROJECTOR__KAFKA__GROUP_ID", "someone-else")
        .env("PROJECTOR__METRICS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("GroupAuthorizationFailed") && stderr.contains("debezium/kafka-acls.txt"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped after {:?}",
        started.elapsed()
    );

    // Logging in: no login, or a wrong password, reaches nothing.
    let refused = |config: ClientConfig| {
        let consumer: BaseConsumer = config.create().unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_err()
    };
    assert!(
        refused(client(None)),
        "a client without a login read the cluster's metadata"
    );
    let mut wrong = client(None);
    wrong
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", stack::kafka::SASL_MECHANISM)
        .set("sasl.username", Projector.name())
        .set("sasl.password", "not-the-password");
    assert!(
        refused(wrong),
        "a wrong password read the cluster's metadata"
    );

    // Connect's REST API: nothing without the login, a connector replaced least of all.
    let url = format!(
        "{}/connectors/{}/config",
        stack.connect_url(),
        stack::connect::CONNECTOR_NAME
    );
    let status = |result: Result<ureq::http::Response<ureq::Body>, ureq::Error>| match result {
        Ok(response) => response.status().as_u16(),
        Err(ureq::Error::StatusCode(code)) => code,
        Err(e) => panic!("{url}: {e}"),
    };
    assert_eq!(status(ureq::get(&url).call()), 401, "GET without a login");
    assert_eq!(
        status(ureq::put(&url).send_json(serde_json::json!({"connector.class": "forged"}))),
        401,
        "PUT without a login"
    );
    let config: serde_json::Value = ureq::get(&url)
        .header("Authorization", stack::connect::authorization(&stack))
        .call()
        .expect("GET with the login")
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(
        config["connector.class"], "io.debezium.connector.postgresql.PostgresConnector",
        "the connector is the stack's"
    );
    stack.down(&|_| {}).unwrap();
}

#[test]
fn each_database_role_can_do_its_job_and_nothing_else() {
    use stack::Role::{self, *};
    let stack = Stack::for_tests("roles").expect("test stack");
    stack
        .start(stack::Component::Postgres, &|_| {})
        .expect("postgres");
    stack.migrate(&|_| {}).expect("migrations as the owner");
    let order = "INSERT INTO customers VALUES ('c', 'n', 'e', 's', 'c', 'p', 'DE', 1, now(), now()); \
                 INSERT INTO orders (order_id, customer_id, status, currency, total_cents, version, created_at, updated_at) \
                 VALUES (gen_random_uuid(), 'c', 'placed', 'EUR', 1, 1, now(), now())";
    let outbox = "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, payload) \
                  VALUES (gen_random_uuid(), 'order', 'x', 'OrderPlaced', 1, 1, now(), '{}')";
    let cases: &[(Role, &str, &str, &str, bool)] = &[
        (Writer, WRITE_DB, "write the write model", order, true),
        (Writer, WRITE_DB, "append to the outbox", outbox, true),
        (
            Writer,
            WRITE_DB,
            "change the schema",
            "CREATE TABLE t (x int)",
            false,
        ),
        (
            Writer,
            READ_DB,
            "connect to the read database",
            "SELECT 1",
            false,
        ),
        (
            Projector,
            READ_DB,
            "update a read model",
            "UPDATE order_view SET status = status",
            true,
        ),
        (
            Projector,
            READ_DB,
            "record an inbox row",
            "DELETE FROM inbox WHERE false",
            true,
        ),
        (
            Projector,
            READ_DB,
            "change the schema",
            "DROP TABLE order_view",
            false,
        ),
        (
            Projector,
            READ_DB,
            "rewrite the migration history",
            "DELETE FROM refinery_schema_history",
            false,
        ),
        (
            Projector,
            WRITE_DB,
            "connect to the write database",
            "SELECT 1",
            false,
        ),
        (
            Reader,
            READ_DB,
            "query the projections",
            "SELECT count(*) FROM order_view",
            true,
        ),
        (
            Reader,
            READ_DB,
            "query the other read models",
            "SELECT (SELECT count(*) FROM customer_summary) + (SELECT count(*) FROM product_sales_daily)",
            true,
        ),
        (
            Reader,
            READ_DB,
            "read dead letters (raw records)",
            "SELECT count(*) FROM dead_letters",
            false,
        ),
        (
            Reader,
            READ_DB,
            "read parked events (raw records)",
            "SELECT count(*) FROM parked_events",
            false,
        ),
        (
            Reader,
            READ_DB,
            "read the inbox",
            "SELECT count(*) FROM inbox",
            false,
        ),
        (
            Reader,
            READ_DB,
            "read the stored positions",
            "SELECT count(*) FROM consumer_positions",
            false,
        ),
        (
            Operator,
            READ_DB,
            "list dead letters",
            "SELECT count(*) FROM dead_letters",
            true,
        ),
        (
            Operator,
            READ_DB,
            "discard a dead letter",
            "UPDATE dead_letters SET status = status",
            true,
        ),
        (
            Operator,
            READ_DB,
            "change the schema",
            "DROP TABLE dead_letters",
            false,
        ),
        (
            Operator,
            WRITE_DB,
            "connect to the write database",
            "SELECT 1",
            false,
        ),
        (
            Reader,
            READ_DB,
            "update a projection",
            "UPDATE order_view SET status = status",
            false,
        ),
        (
            Reader,
            WRITE_DB,
            "connect to the write database",
            "SELECT 1",
            false,
        ),
        (
            Inventory,
            INVENTORY_DB,
            "change stock and reservations",
            "UPDATE stock SET reserved = reserved; UPDATE reservations SET status = status",
            true,
        ),
        (
            Inventory,
            INVENTORY_DB,
            "append to its outbox",
            "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, payload) \
             VALUES (gen_random_uuid(), 'stock', 'x', 'StockSet', 1, 1, now(), '{}')",
            true,
        ),
        (
            Inventory,
            INVENTORY_DB,
            "record an inbox row",
            "DELETE FROM inbox WHERE false",
            true,
        ),
        (
            Inventory,
            INVENTORY_DB,
            "change the schema",
            "DROP TABLE stock",
            false,
        ),
        (
            Inventory,
            WRITE_DB,
            "connect to the write database",
            "SELECT 1",
            false,
        ),
        (
            Writer,
            INVENTORY_DB,
            "connect to the inventory database",
            "SELECT 1",
            false,
        ),
        (
            Writer,
            WRITE_DB,
            "record the order reactor's inbox row",
            "DELETE FROM inbox WHERE false",
            true,
        ),
        (
            Debezium,
            INVENTORY_DB,
            "read the inventory's outbox",
            "SELECT count(*) FROM outbox",
            true,
        ),
        (
            Debezium,
            INVENTORY_DB,
            "change stock",
            "UPDATE stock SET reserved = reserved",
            false,
        ),
        (
            Debezium,
            WRITE_DB,
            "read the outbox",
            "SELECT count(*) FROM outbox",
            true,
        ),
        (Debezium, WRITE_DB, "write the outbox", outbox, false),
        (
            Debezium,
            "dbname=orders_write replication=database",
            "open a logical replication connection to its database",
            "IDENTIFY_SYSTEM",
            true,
        ),
        (
            Debezium,
            "dbname=orders_write replication=true",
            "open a physical replication connection (a base backup of the cluster)",
            "IDENTIFY_SYSTEM",
            false,
        ),
        (
            Debezium,
            WRITE_DB,
            "read the write model",
            "SELECT count(*) FROM orders",
            false,
        ),
        (
            Debezium,
            READ_DB,
            "connect to the read database",
            "SELECT 1",
            false,
        ),
        (
            Owner,
            READ_DB,
            "change the schema",
            "CREATE TABLE owner_probe (x int); DROP TABLE owner_probe",
            true,
        ),
    ];
    let mut matrix =
        String::from("| role | database | action | expected | result |\n|---|---|---|---|---|\n");
    let mut wrong = Vec::new();
    for (role, db, what, sql, allowed) in cases {
        let result = stack::postgres::psql(&stack.login(*role, db), sql, &["-tA"]);
        let verdict = match &result {
            Ok(_) => "allowed".to_owned(),
            Err(e) => format!(
                "refused ({})",
                e.to_string()
                    .rsplit("failed: ")
                    .next()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            ),
        };
        matrix.push_str(&format!(
            "| {} | {db} | {what} | {} | {verdict} |\n",
            role.user(),
            if *allowed { "allowed" } else { "refused" }
        ));
        if result.is_ok() != *allowed {
            wrong.push(format!("{} {what} on {db}: {verdict}", role.user()));
        }
    }
    eprintln!("{matrix}");
    // The dead-letter commands run under the operator's own login.
    let out = std::process::Command::new(stack.bin_dir.join("projector"))
        .arg("--config")
        .arg(stack.operator_config())
        .args(["dead-letters", "list"])
        .output()
        .expect("run projector");
    assert!(
        out.status.success(),
        "dead-letters list as the operator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(stack.operator_config())
            .unwrap()
            .contains("user = \"orders_operator\""),
        "the operator's settings log in as orders_operator"
    );
    stack.down(&|_| {}).unwrap();
    assert!(
        wrong.is_empty(),
        "privileges differ from the design: {wrong:#?}"
    );
}

/// `projector rebuild` builds a copy from the topics while the live projector
/// applies concurrent writes, swaps it in without readers ever seeing a partial
/// model, and the result equals the write side. A second rebuild, after the
/// outbox table was pruned, shows the topics alone hold the history.
#[test]
fn a_rebuild_swaps_in_identical_read_models_while_writes_continue() {
    let stack = Stack::for_tests("rebuild").expect("test stack");
    let log = |m: &str| eprintln!("[rebuild] {m}");
    stack.up(&log).expect("stack up");
    let scenario = demo::run_scenario(&stack, &log).expect("scenario");
    demo::await_read_model(&stack, &scenario, Duration::from_secs(120)).expect("live read model");

    // Readers (the read-only role) poll all four read models throughout: never an error,
    // never fewer rows in any of them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stack, stop) = (stack.clone(), stop.clone());
        std::thread::spawn(move || {
            let login = stack.login(stack::Role::Reader, READ_DB);
            let models = [
                "order_view",
                "customer_summary",
                "product_sales_daily",
                "stock_view",
            ];
            let sql = format!(
                "SELECT {}",
                models
                    .map(|m| format!("(SELECT count(*) FROM {m})"))
                    .join(", ")
            );
            let (mut last, mut reads, mut problems) = ([0i64; 4], 0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match stack::postgres::psql(&login, &sql, &["-tA"]) {
                    Ok(row) => {
                        let counts: Vec<i64> = row
                            .trim()
                            .split('|')
                            .map(|n| n.parse().unwrap_or(-1))
                            .collect();
                        for (i, model) in models.iter().enumerate() {
                            let n = counts.get(i).copied().unwrap_or(-1);
                            if n < last[i] {
                                problems.push(format!("{model} went from {} to {n} rows", last[i]));
                            }
                            last[i] = n;
                        }
                        reads += 1;
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            (reads, problems)
        })
    };
    // Someone else's objects: a view on a read model makes the rebuild refuse
    // before any work (the retired tables would take it along); a table of
    // their own is left where it is.
    stack
        .admin_sql(
            READ_DB,
            "SET ROLE orders_owner; CREATE VIEW dashboard_orders AS SELECT order_id FROM order_view; \
             CREATE TABLE dashboard_notes (note text); INSERT INTO dashboard_notes VALUES ('kept')",
        )
        .unwrap();
    let refused = stack.projector_as_owner().arg("rebuild").output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a rebuild with a foreign view ran"
    );
    assert!(
        stderr.contains("public.dashboard_orders (on order_view)") && stderr.contains("drop them"),
        "{stderr}"
    );
    stack
        .admin_sql(READ_DB, "DROP VIEW dashboard_orders")
        .unwrap();

    let load = writer_load(&stack, "20s");
    std::thread::sleep(Duration::from_secs(3));
    let outbox = || count(&stack, WRITE_DB, "SELECT count(*) FROM outbox");
    let at_start = outbox();
    let out = stack
        .projector_as_owner()
        .args(["--json", "rebuild"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let at_end = outbox();
    assert!(
        at_end > at_start,
        "the load committed nothing during the rebuild ({at_start} events before, {at_end} after)"
    );
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("[rebuild] {report}");
    let swapped = report["tables_swapped"].as_array().unwrap();
    for model in ["order_view", "stock_view"] {
        assert!(
            swapped.iter().any(|t| t == model),
            "{model} not swapped: {report}"
        );
    }
    assert!(
        report["retired_schema"].is_null(),
        "the old tables were dropped"
    );
    assert!(
        load.wait_with_output().unwrap().status.success(),
        "the writer's load failed"
    );
    wait_until(
        Duration::from_secs(120),
        || "the read side did not converge after the rebuild".into(),
        || settled(&stack),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, problems) = reader.join().unwrap();
    assert!(
        reads > 10 && problems.is_empty(),
        "{reads} reads: {problems:?}"
    );
    let oracle = stack::oracle::check(&stack).unwrap();
    assert!(oracle.passed(), "{:#?}", oracle.failures());
    assert_eq!(
        count(&stack, READ_DB, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'retired_%' OR nspname = 'rebuild'"),
        0
    );

    // The outbox pruned (every row "30 days old"): a rebuild needs only the topics.
    stack
        .psql(
            WRITE_DB,
            "UPDATE outbox SET occurred_at = occurred_at - interval '30 days'",
        )
        .unwrap();
    let pruned = stack
        .writer(&["--json", "outbox", "prune", "--older-than", "7d"])
        .unwrap();
    assert_eq!(
        count(&stack, WRITE_DB, "SELECT count(*) FROM outbox"),
        0,
        "{pruned}"
    );
    let before = stack
        .psql(READ_DB, &stack::oracle::read_model_dump_sql())
        .unwrap();
    let out = stack
        .projector_as_owner()
        .arg("rebuild")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stack
            .psql(READ_DB, &stack::oracle::read_model_dump_sql())
            .unwrap(),
        before
    );
    assert_eq!(
        stack
            .admin_sql(READ_DB, "SELECT note FROM public.dashboard_notes")
            .unwrap()
            .trim(),
        "kept",
        "a table the migrations do not create stays through two rebuilds"
    );
    stack.down(&|_| {}).unwrap();
}

/// `stack status --json`: its exit code and the report of each component.
fn status(stack: &Stack) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(stack.bin_dir.join("stack"))
        .arg("--state-dir")
        .arg(&stack.state_dir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let report: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let by_component = report
        .into_iter()
        .map(|s| (s["component"].as_str().unwrap().to_owned(), s))
        .collect::<serde_json::Map<_, _>>();
    (out.status.code().unwrap(), by_component.into())
}

/// Waits until `stack status` reports `component` with `healthy` and a
/// detail containing `needle`; the exit code of that same call must say the
/// same as its report (0 only when every component is healthy). Returns that
/// call's detail of `component`.
fn await_status(stack: &Stack, component: &str, healthy: bool, needle: &str) -> String {
    let last = std::cell::RefCell::new((0, serde_json::Value::Null));
    wait_until(
        Duration::from_secs(90),
        || {
            format!(
                "{component} never reported healthy={healthy} with {needle:?}: {:#}",
                last.borrow().1
            )
        },
        || {
            let (code, report) = status(stack);
            let ok = report[component]["healthy"] == healthy
                && report[component]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(needle));
            *last.borrow_mut() = (code, report);
            ok
        },
    );
    let (code, report) = last.into_inner();
    let all_healthy = report
        .as_object()
        .unwrap()
        .values()
        .all(|s| s["healthy"] == true);
    assert_eq!(code, if all_healthy { 0 } else { 1 }, "{report:#}");
    report[component]["detail"].as_str().unwrap().to_owned()
}

/// `stack status` is unhealthy, with exit 1 and the cause in its detail, for
/// each cause the docs name: an open dead letter, parked events, the projector
/// down, a FAILED relay task; and healthy again once each is resolved. The task
/// watchdog restarts the FAILED task by itself (its log says so). Every metric
/// docs/operations.md lists is read from the running projector's `/metrics`.
#[test]
fn status_names_each_unhealthy_cause_and_the_watchdog_restarts_a_failed_task() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let stack = Stack::for_tests("status").expect("test stack");
    stack.up(&|m| eprintln!("[status] {m}")).expect("stack up");
    demo::register_customer(&stack, "c-status").unwrap();
    place_order(&stack, "c-status", "ST:1:1.00");
    let outbox = || count(&stack, WRITE_DB, "SELECT count(*) FROM outbox");
    wait_until(
        Duration::from_secs(60),
        || "the events were not applied".into(),
        || settled(&stack),
    );
    await_status(&stack, "projector", true, "0 open dead letters");
    assert_eq!(status(&stack).0, 0, "{:#}", status(&stack).1);

    // The metrics the docs list, by name, from the running projector.
    let metrics = ureq::get(&stack.metrics_url())
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let exported: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let operations =
        std::fs::read_to_string(stack::repo_root().join("docs/operations.md")).unwrap();
    let documented: Vec<&str> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("| `projector_"))
        .map(|l| l.split(['`', '{']).next().unwrap())
        .collect();
    assert!(documented.len() >= 10, "the metrics table: {documented:?}");
    for name in &documented {
        let name = format!("projector_{name}");
        assert!(
            exported.contains(name.as_str()),
            "docs/operations.md lists {name}, /metrics does not export it:\n{metrics}"
        );
    }

    let producer: FutureProducer = stack::kafka::client_config(&stack)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let publish = |key: &str, headers: &[(&str, String)], value: &[u8]| {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        futures::executor::block_on(
            producer.send(
                FutureRecord::to(&outbox_events::topic_for(outbox_events::ORDER_AGGREGATE))
                    .key(key)
                    .payload(value)
                    .headers(owned),
                Duration::from_secs(10),
            ),
        )
        .map_err(|(e, _)| e)
        .expect("publish");
    };

    // 1. A dead letter: a record with no headers and no JSON.
    publish("not-an-order", &[], b"garbage");
    let detail = await_status(&stack, "projector", false, "1 open dead letters");
    assert!(detail.contains("projector dead-letters list"), "{detail}");
    let discard = std::process::Command::new(stack.bin_dir.join("projector"))
        .arg("--config")
        .arg(stack.operator_config())
        .args(["dead-letters", "discard", "1", "--reason", "test record"])
        .output()
        .unwrap();
    assert!(discard.status.success(), "{discard:?}");
    await_status(&stack, "projector", true, "0 open dead letters");
    // The inventory consumes the order topic too: the same garbage is its
    // dead letter, named and discarded the same way with its own command.
    let detail = await_status(&stack, "inventory", false, "1 open dead letters");
    assert!(detail.contains("inventory dead-letters list"), "{detail}");
    let discard = std::process::Command::new(stack.bin_dir.join("inventory"))
        .arg("--config")
        .arg(stack.inventory_config())
        .args(["dead-letters", "discard", "1", "--reason", "test record"])
        .output()
        .unwrap();
    assert!(discard.status.success(), "{discard:?}");
    await_status(&stack, "inventory", true, "0 open dead letters");

    // 2. Parked: version 2 of an order whose version 1 has not arrived.
    let order = uuid::Uuid::new_v4();
    let envelope =
        |event, version| outbox_events::Envelope::new(event, version, chrono::Utc::now());
    let placed = envelope(
        outbox_events::Event::OrderPlaced(outbox_events::OrderPlaced {
            order_id: order,
            customer_id: "c-status".into(),
            currency: "EUR".into(),
            lines: vec![outbox_events::OrderLine {
                sku: "PK".into(),
                quantity: 1,
                unit_price_cents: 100,
            }],
            total_cents: 100,
            shipping_address: None,
        }),
        1,
    );
    let paid = envelope(
        outbox_events::Event::OrderPaid(outbox_events::OrderPaid {
            order_id: order,
            payment_reference: "p-status".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        }),
        2,
    );
    let send = |e: &outbox_events::Envelope| {
        let headers = e.to_headers();
        publish(
            &e.aggregate_id,
            &headers,
            e.event.to_payload().to_string().as_bytes(),
        );
    };
    send(&paid);
    let detail = await_status(&stack, "projector", false, "1 parked events (1 aggregates)");
    assert!(detail.contains("0 open dead letters"), "{detail}");
    send(&placed);
    await_status(&stack, "projector", true, "0 parked events (0 aggregates)");
    // The inventory answered the hand-made order too (it has no stock: a
    // rejection); the order reactor has no such order, so the reply is a dead
    // letter of its own, named by `stack status` and resolved by its command.
    let detail = await_status(&stack, "reactor", false, "1 open dead letters");
    assert!(
        detail.contains("writer react dead-letters list"),
        "{detail}"
    );
    let reactor = |args: &[&str]| {
        let out = std::process::Command::new(stack.bin_dir.join("writer"))
            .arg("--config")
            .arg(stack.reactor_config())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "writer {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let letters: serde_json::Value =
        serde_json::from_str(&reactor(&["--json", "react", "dead-letters", "list"])).unwrap();
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters:#}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is not in the write database")),
        "{letters:#}"
    );
    let id = letters[0]["id"].to_string();
    reactor(&[
        "react",
        "dead-letters",
        "discard",
        &id,
        "--reason",
        "a hand-made order",
    ]);
    await_status(&stack, "reactor", true, "0 open dead letters");
    assert_eq!(
        stack
            .psql(
                READ_DB,
                &format!("SELECT status || ' ' || last_version FROM order_view WHERE order_id = '{order}'")
            )
            .unwrap()
            .trim(),
        "paid 2"
    );

    // 3. The projector down.
    stack.kill(stack::Component::Projector).unwrap();
    let (code, report) = status(&stack);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["projector"]["detail"], "down", "{report:#}");
    assert_eq!(report["projector"]["healthy"], false);
    stack.start(stack::Component::Projector, &|_| {}).unwrap();
    await_status(&stack, "projector", true, "alive");

    // 4. A FAILED relay task: Connect's login may not write the order topic
    // (a DENY ACL), so the next transaction fails and kills the task; the
    // watchdog restarts it (and it fails again) until the ACL is gone.
    let watchdog_log = stack.unit_log(stack::connect::WATCHDOG);
    let restarts = || {
        std::fs::read_to_string(&watchdog_log)
            .unwrap_or_default()
            .matches("has a FAILED task; restarting it")
            .count()
    };
    let restarts_before = restarts();
    let deny = [
        "--deny-principal",
        "User:connect",
        "--operation",
        "Write",
        "--topic",
        "outbox.event.order",
    ];
    stack::kafka::acl_command(&stack, &[&["--add"][..], &deny].concat()).unwrap();
    let blocked = place_order(&stack, "c-status", "ST:2:1.00");
    // (The watchdog restarts it at once, so it is also seen RESTARTING or RUNNING.)
    let detail = await_status(&stack, "connect", false, "tasks [FAILED]");
    assert!(
        detail.contains("Exception"),
        "the task's trace says why: {detail}"
    );
    wait_until(
        Duration::from_secs(90),
        || {
            format!(
                "the watchdog did not act:\n{}",
                stack.tail_unit_log(stack::connect::WATCHDOG, 20)
            )
        },
        || restarts() > restarts_before,
    );
    assert_eq!(order_rows(&stack, &blocked), 0, "published without the ACL");
    stack::kafka::acl_command(&stack, &[&["--remove", "--force"][..], &deny].concat()).unwrap();
    // Nobody but the watchdog restarts it now.
    await_status(&stack, "connect", true, "tasks [RUNNING]");
    wait_until(
        Duration::from_secs(90),
        || "the order committed while the task was FAILED was not applied".into(),
        || order_rows(&stack, &blocked) == 1,
    );
    let ids = stack.broker_event_ids().unwrap();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "a failed transaction's records are never read"
    );
    let inventory = count(&stack, INVENTORY_DB, "SELECT count(*) FROM outbox");
    assert_eq!(
        ids.len() as i64,
        outbox() + inventory + 2,
        "every event once (both outboxes'), and the two hand-made records"
    );
    await_status(&stack, "postgres", true, "accepting connections");
    assert_eq!(status(&stack).0, 0, "{:#}", status(&stack).1);
    stack.down(&|_| {}).unwrap();
}

/// `writer outbox prune` while the relay streams and commands commit: the
/// deletes reach no topic (no record, no tombstone), the read models of the
/// pruned events do not change, the events committed meanwhile arrive once
/// each, and reconcile passes afterwards.
#[test]
fn pruning_the_outbox_while_the_relay_runs_publishes_nothing_and_changes_no_read_model() {
    let stack = Stack::for_tests("prune").expect("test stack");
    stack.up(&|m| eprintln!("[prune] {m}")).expect("stack up");
    demo::register_customer(&stack, "c-prune").unwrap();
    let old_orders: Vec<String> = (0..10)
        .map(|i| place_order(&stack, "c-prune", &format!("PR{i}:1:1.00")))
        .collect();
    let outbox = || count(&stack, WRITE_DB, "SELECT count(*) FROM outbox");
    let inventory = || count(&stack, INVENTORY_DB, "SELECT count(*) FROM outbox");
    let applied = || count(&stack, READ_DB, "SELECT count(*) FROM inbox");
    // The saga answers each order (no stock for them: rejected): 11 commands'
    // events and 10 rejections in the write outbox, 10 replies in the inventory's.
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "{} events of the write side, {} applied",
                outbox(),
                applied()
            )
        },
        || outbox() == 21 && inventory() == 10 && applied() == 31,
    );
    let published_before = stack.broker_event_ids().unwrap();
    assert_eq!(published_before.len(), 31);
    let list = old_orders
        .iter()
        .map(|o| format!("'{o}'"))
        .collect::<Vec<_>>()
        .join(",");
    let old_rows_sql = format!(
        "SELECT string_agg(v::text, ';' ORDER BY order_id) FROM order_view v WHERE order_id IN ({list})"
    );
    let old_rows = stack.psql(READ_DB, &old_rows_sql).unwrap();

    // Two days old: past the window and the relay's heartbeat margin. (The
    // Event Router drops updates of the outbox; the prune's deletes are not
    // even in the publication.)
    stack
        .admin_sql(
            WRITE_DB,
            "UPDATE outbox SET occurred_at = occurred_at - interval '2 days'",
        )
        .unwrap();
    let mut load = writer_load(&stack, "10s");
    std::thread::sleep(Duration::from_secs(2));
    let pruned = stack
        .writer(&["outbox", "prune", "--older-than", "1d"])
        .unwrap();
    assert!(
        pruned.contains("outbox prune: 21 rows older than"),
        "{pruned}"
    );
    assert!(load.wait().unwrap().success(), "the load failed");
    let new_events = outbox();
    assert!(new_events > 50, "the load committed {new_events} events");
    // The pruned 21, the load's, and everything the inventory published.
    let expected = || 21 + outbox() + inventory();
    wait_until(
        Duration::from_secs(120),
        || format!("{} of {} events applied", applied(), expected()),
        || applied() == expected(),
    );
    let published = stack.broker_event_ids().unwrap();
    let unique: std::collections::BTreeSet<&String> = published.iter().collect();
    assert_eq!(
        published.len() as i64,
        expected(),
        "every event once, nothing for the deletes"
    );
    assert_eq!(unique.len(), published.len());
    assert!(published_before.iter().all(|id| unique.contains(id)));
    assert_eq!(stack.psql(READ_DB, &old_rows_sql).unwrap(), old_rows);
    assert_eq!(
        count(&stack, READ_DB, "SELECT count(*) FROM dead_letters"),
        0
    );
    let reconcile = std::process::Command::new(stack.bin_dir.join("stack"))
        .arg("--state-dir")
        .arg(&stack.state_dir)
        .args(["reconcile", "--settle", "0"])
        .output()
        .unwrap();
    // (Not the oracle: it folds the outbox's events into the read models it
    // expects, so it needs the events retention has just deleted.)
    assert!(reconcile.status.success(), "{reconcile:?}");
    stack.down(&|_| {}).unwrap();
}
