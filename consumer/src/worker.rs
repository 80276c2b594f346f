//! The consumer's loop: poll a batch, apply it, store its offsets, repeat.
//! One loop for every service; each brings its [`Handler`].
//!
//! Offsets follow the at-least-once recipe: `enable.auto.offset.store=false`,
//! so librdkafka commits (periodically, in the background) only offsets that
//! this loop stored, and it stores them only after the batch's database
//! transaction committed. On shutdown the current batch finishes, its offsets
//! are stored and committed synchronously, then the loop returns.

use std::future::Future;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::time::Instant;

use crate::batch::{apply_batch, BatchError, Outcome};
use crate::handler::Handler;
use crate::position::{self, Checkpoint};
use crate::record::{Decoder, Record};
use crate::settings::{GroupProtocol, Settings};

/// Why a consumer stopped other than by the shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// What failed is the source: print the chain ([`service::chain`], `{:#}`).
    #[error("kafka")]
    Kafka(#[from] KafkaError),
    /// The brokers refused the service's Kafka user: retrying cannot help,
    /// its login or its ACLs must change.
    #[error(
        "the brokers refused Kafka user {user:?} in group {group:?} ({code:?}): its login (kafka.sasl) \
         must be right and its ACLs (debezium/kafka-acls.txt) must allow the group and the topics"
    )]
    Refused {
        user: String,
        group: String,
        code: rdkafka::types::RDKafkaErrorCode,
    },
    /// librdkafka's consumer cannot go on: another instance runs with this
    /// one's `kafka.group_instance_id` (fenced again after [`FENCE_REJOINS`]
    /// new consumers in a row, see there), or another fatal error.
    #[error("the Kafka consumer failed for good; restart the process (a second instance with the same kafka.group_instance_id fences the first)")]
    Fatal(#[source] KafkaError),
}

/// Errors no retry can cure: the brokers refused who the service is.
fn refusal(error: &KafkaError) -> Option<rdkafka::types::RDKafkaErrorCode> {
    use rdkafka::types::RDKafkaErrorCode::*;
    error.rdkafka_error_code().filter(|code| {
        matches!(
            code,
            GroupAuthorizationFailed
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | SaslAuthenticationFailed
                | Authentication
        )
    })
}

/// Seeks assigned partitions to the positions stored in the service's
/// database, logs rebalances and publishes the consumer lag from librdkafka's
/// statistics (`<service>_partition_lag`, `<service>_consumer_lag`).
#[derive(Debug)]
pub struct WorkerContext {
    /// Where the positions live; `None`: Kafka's committed offsets only.
    positions: Option<(tokio_postgres::Config, String)>,
    partition_lag: String,
    consumer_lag: String,
}

impl WorkerContext {
    /// Assigned partitions start at the positions stored for `group_id`;
    /// metrics are named after `service`.
    pub fn with_positions(
        service: &str,
        database: tokio_postgres::Config,
        group_id: String,
    ) -> Self {
        Self {
            positions: Some((database, group_id)),
            partition_lag: format!("{service}_partition_lag"),
            consumer_lag: format!("{service}_consumer_lag"),
        }
    }

    /// Sets each assigned partition's start to its stored position. If the
    /// read database cannot be asked, Kafka's committed offsets are used: they
    /// never run ahead of the stored positions (committed after them), so the
    /// worst case is a redelivery the inbox absorbs, never a skip.
    fn seek_to_stored(&self, tpl: &mut TopicPartitionList) {
        let Some((config, group)) = &self.positions else {
            return;
        };
        let load = || position::load_blocking(config.clone(), group.clone());
        // The callback runs inside librdkafka's poll, i.e. in `recv` on a
        // runtime worker: a multi-threaded runtime is told this thread blocks
        // (bounded by the database timeouts), so the metrics endpoint and the
        // shutdown signal are served by another worker meanwhile.
        let stored = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(load)
            }
            _ => load(),
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "stored positions unreadable; starting from Kafka's committed offsets");
                return;
            }
        };
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in assigned {
            if let Some(next) = stored.get(&(topic.clone(), partition)) {
                if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(*next)) {
                    tracing::warn!(%topic, partition, error = %e, "cannot start at the stored position");
                }
            }
        }
        tracing::info!(positions = ?describe_offsets(tpl), "starting at the stored positions");
    }
}

fn describe_offsets(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect()
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for topic in statistics.topics.values() {
            for p in topic.partitions.values() {
                if p.partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let lag = partition_lag(p);
                total += lag;
                metrics::gauge!(
                    self.partition_lag.clone(),
                    "topic" => topic.topic.clone(),
                    "partition" => p.partition.to_string()
                )
                .set(lag as f64);
            }
        }
        metrics::gauge!(self.consumer_lag.clone()).set(total as f64);
    }
}

/// Records of a partition still to be applied, from librdkafka's statistics.
///
/// librdkafka's own `consumer_lag` (last stable offset − committed offset)
/// never reaches 0 on a transactional topic: the relay commits each batch with
/// a control record, which takes an offset but is never passed to the
/// application, so the offset stored after the last applied record stays one
/// short of the end. Caught up is therefore: nothing left to fetch (the fetch
/// position is at the last stable offset), nothing fetched and not passed on
/// (empty fetch queue, the application's position at the end), and what was
/// stored within one offset of that position — the control record, or a last
/// record being applied this very moment (a lag of 1 for milliseconds, which
/// this gauge, sampled each second, may miss).
fn partition_lag(p: &rdkafka::statistics::Partition) -> i64 {
    if p.consumer_lag < 0 {
        return 0; // not consumed here (revoked, or not known yet): no lag of ours
    }
    let done = p.stored_offset.max(p.committed_offset);
    let caught_up = p.next_offset >= p.ls_offset
        && p.fetchq_cnt == 0
        && p.app_offset >= p.ls_offset
        && done + 1 >= p.app_offset;
    if caught_up {
        0
    } else {
        (p.ls_offset - done).max(0)
    }
}

impl ConsumerContext for WorkerContext {
    /// librdkafka's default rebalance with one change: an assignment starts
    /// at the stored positions. Rebalances are eager under the classic
    /// protocol (the round-robin assignor, see [`build_consumer`]: every
    /// partition revoked, then the whole assignment) and incremental under
    /// KIP-848 (only the partitions that move).
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::*;
        let result = match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = ?partitions(tpl), "assigned");
                self.seek_to_stored(tpl);
                match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                }
            }
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?partitions(tpl), "revoked");
                match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance failed");
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            // Not loss: the offsets are committed again on the next interval.
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

/// Builds the group consumer with the at-least-once settings.
pub fn build_consumer(
    service: &str,
    settings: &Settings,
) -> Result<StreamConsumer<WorkerContext>, KafkaError> {
    let kafka = &settings.kafka;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("group.protocol", kafka.group_protocol.as_str())
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Only records of committed transactions (librdkafka's default, said
        // out loud): the relay publishes in Kafka transactions (exactly-once
        // source), and an aborted batch must never reach the read model.
        .set("isolation.level", "read_committed")
        .set(
            "max.poll.interval.ms",
            kafka.max_poll_interval_ms.to_string(),
        );
    if let Some(sasl) = &kafka.sasl {
        config
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanisms", &sasl.mechanism)
            .set("sasl.username", &sasl.username)
            .set(
                "sasl.password",
                secrecy::ExposeSecret::expose_secret(&sasl.password),
            );
    }
    if kafka.group_protocol == GroupProtocol::Classic {
        if let Some(instance) = &kafka.group_instance_id {
            config.set("group.instance.id", instance);
        }
        // With KIP-848 the session and heartbeat are the broker's
        // (group.consumer.*); librdkafka refuses them from the client.
        config
            // Eager rebalances, one round each: every assignment the group
            // keeps for a static member covers every partition. With
            // cooperative-sticky, partitions that move wait for a second
            // round; a static member restarted meanwhile (or a new consumer
            // after a fence) gets the cached first-round assignment without
            // a rebalance, and nobody asks for the second: the chaos suite
            // saw the order and customer partitions owned by nobody for
            // minutes. Static membership makes rebalances rare, so their
            // stop-the-world cost is small.
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
            // A third of the session: a restarted instance's group settles quickly.
            .set(
                "heartbeat.interval.ms",
                (kafka.session_timeout_ms / 3).max(100).to_string(),
            );
    }
    let consumer: StreamConsumer<WorkerContext> = config
        .set("statistics.interval.ms", "1000")
        // Latency over throughput: do not let a fetch sit on the broker for long.
        .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
        .create_with_context(WorkerContext::with_positions(
            service,
            settings.database.pg_config(&format!("{service} positions")),
            kafka.group_id.clone(),
        ))?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Connects to the service's database; the connection task logs when it ends.
///
/// The client keeps a statement cache for its connection (deadpool's
/// wrapper, without a pool): a batch's statements are parsed and planned
/// once per connection instead of once per batch, and a cached statement
/// costs no round trip to prepare. A new connection starts a new cache.
pub async fn connect(service: &str, settings: &Settings) -> Result<Db, tokio_postgres::Error> {
    let (client, connection) = settings
        .database
        .pg_config(service)
        .connect(tokio_postgres::NoTls)
        .await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %service::show_db_error(&e), "database connection closed");
        }
    });
    Ok(Db::new(client, task))
}

/// A connection to the service's database with its statement cache.
pub type Db = deadpool_postgres::ClientWrapper;

/// Most time between two attempts at the same batch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A static member fenced by its instance id is given a new consumer, unless
/// this is the fence after `FENCE_REJOINS` in a row, each within
/// [`FENCE_WINDOW`] of the one before: that one stops the process.
///
/// Why not stop at the first: a group coordinator that fails over (a broker
/// killed) can fence a static member by its own instance id — librdkafka
/// rejoins under a new member id and its next offset commit, sent under the
/// old one, is refused (seen in the chaos suite, and a known Kafka problem).
/// That member is alone and a new consumer goes on. Why a streak and not a
/// budget per time: failovers come as often as brokers die (the chaos suite
/// fenced one process three times in four minutes), while two processes
/// under one name fence each other within seconds of every join, so only
/// they build a streak; the one fenced first is out of rejoins first and
/// stops with [`WorkerError::Fatal`].
pub const FENCE_REJOINS: usize = 3;
/// See [`FENCE_REJOINS`].
pub const FENCE_WINDOW: Duration = Duration::from_secs(30);

/// The streak of fences, each within [`FENCE_WINDOW`] of the one before.
#[derive(Default)]
struct Rejoins {
    streak: usize,
    last: Option<Instant>,
}

impl Rejoins {
    /// Whether a fence at `now` may be answered with a new consumer.
    fn allow(&mut self, now: Instant) -> bool {
        let close = self
            .last
            .is_some_and(|at| now.duration_since(at) < FENCE_WINDOW);
        self.streak = if close { self.streak + 1 } else { 1 };
        self.last = Some(now);
        self.streak <= FENCE_REJOINS
    }
}

fn fenced(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::FencedInstanceId)
}

/// Runs until `shutdown` resolves (returns `Ok`) or a fatal error.
///
/// Database outages are retried with capped exponential backoff for as
/// long as they last; nothing is acknowledged meanwhile.
pub async fn run<H: Handler>(
    settings: Settings,
    handler: H,
    decoder: Decoder,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let checkpoint = Checkpoint::new(settings.kafka.group_id.clone());
    run_with(settings, handler, decoder, checkpoint, shutdown).await
}

/// [`run`] with a given checkpoint (a rebuild's, which does not yield to its swap).
pub async fn run_with<H: Handler>(
    settings: Settings,
    handler: H,
    decoder: Decoder,
    checkpoint: Checkpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let service = handler.name();
    let metrics = Metrics::new(service);
    let mut consumer = build_consumer(service, &settings)?;
    let mut rejoins = Rejoins::default();
    tokio::pin!(shutdown);
    let Some(mut client) = connect_with_retry(service, &settings, &mut shutdown).await else {
        return Ok(());
    };
    let mut gauges = BacklogGauges::default();
    tracing::info!(service, topics = ?settings.kafka.topics, group = %settings.kafka.group_id, run = %checkpoint.run_id, "consumer started");

    loop {
        gauges.refresh(&metrics, &client).await;
        let batch = match next_batch(&consumer, &settings, &mut shutdown).await {
            Poll::Batch(mut batch) => {
                // A rebalance served while the batch was collected (inside
                // `recv`) may have taken partitions away: their records are
                // left to the new owner, which starts at the stored position.
                let held: std::collections::HashSet<(String, i32)> = consumer
                    .assignment()?
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                let before = batch.len();
                batch.retain(|r| held.contains(&(r.topic.clone(), r.partition)));
                if batch.len() < before {
                    tracing::info!(
                        dropped = before - batch.len(),
                        "records of revoked partitions left to their new owner"
                    );
                }
                if batch.is_empty() {
                    continue;
                }
                batch
            }
            Poll::Idle => continue,
            Poll::Shutdown => break,
            Poll::Refused(e) => {
                let code = refusal(&e).expect("a refusal");
                let error = WorkerError::Refused {
                    user: settings
                        .kafka
                        .sasl
                        .as_ref()
                        .map_or_else(|| "(none)".to_owned(), |s| s.username.clone()),
                    group: settings.kafka.group_id.clone(),
                    code,
                };
                tracing::error!(service, %error, "consumer stopping");
                return Err(error);
            }
            Poll::Fatal(e) if fenced(&e) && rejoins.allow(Instant::now()) => {
                // Offsets stored in the old consumer are not committed: the
                // new one resumes at the group's committed offsets and the
                // positions stored with the data turn away what was applied.
                tracing::warn!(
                    service,
                    error = %e,
                    streak = rejoins.streak,
                    "fenced by the group under this instance's name; joining again with a new consumer \
                     (a coordinator failover can do this; a second instance under this name would be fenced again)"
                );
                drop(consumer);
                consumer = build_consumer(service, &settings)?;
                continue;
            }
            Poll::Fatal(e) => {
                let error = WorkerError::Fatal(e);
                tracing::error!(service, error = %service::chain(&error), "consumer stopping");
                return Err(error);
            }
        };
        // Ended after the commit: each covers its record's transaction.
        let spans = crate::trace::event_spans(service, &batch);
        let run = Run {
            settings: &settings,
            metrics: &metrics,
            handler: &handler,
            decoder: &decoder,
            checkpoint: &checkpoint,
        };
        let Some(outcome) = apply_with_retry(&run, &mut client, &batch, &mut shutdown).await else {
            break; // shutdown while the read database was away: nothing stored
        };
        for record in &batch {
            if let Err(e) = consumer.store_offset(&record.topic, record.partition, record.offset) {
                // The partition was revoked while the batch ran: its new owner
                // gets these records again and the inbox skips them.
                tracing::warn!(topic = %record.topic, partition = record.partition, error = %e, "offset not stored");
            }
        }
        drop(spans);
        metrics.record(&outcome);
    }
    // Final synchronous commit so a restart resumes exactly after the last applied batch.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "final offset commit failed; the next start re-applies (idempotently)")
        }
    }
    tracing::info!(service, "consumer stopped");
    Ok(())
}

/// Waits for the first record, then collects more until the batch is full or
/// `max_wait_ms` passed. `None` when shutdown was signalled before any record.
/// What one wait for records produced.
enum Poll {
    Batch(Vec<Record>),
    /// No record for [`IDLE_CHECK`]: a moment to check the assignment.
    Idle,
    Shutdown,
    /// The brokers refused the service's user (see [`refusal`]).
    Refused(KafkaError),
    Fatal(KafkaError),
}

/// How long without records before the loop looks at its assignment.
const IDLE_CHECK: Duration = Duration::from_secs(5);

async fn next_batch(
    consumer: &StreamConsumer<WorkerContext>,
    settings: &Settings,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Poll {
    let mut backoff = Backoff::default();
    let idle = tokio::time::sleep(IDLE_CHECK);
    tokio::pin!(idle);
    let first = loop {
        tokio::select! {
            message = consumer.recv() => match message {
                Ok(message) => break message,
                Err(e) if refusal(&e).is_some() => return Poll::Refused(e),
                // librdkafka raised a fatal error (e.g. FencedInstanceId): this
                // consumer instance is unusable for good.
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => return Poll::Fatal(e),
                // librdkafka recovers from broker outages by itself; keep polling.
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "kafka poll failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut *shutdown => return Poll::Shutdown,
                    }
                }
            },
            () = &mut *shutdown => return Poll::Shutdown,
            () = &mut idle => return Poll::Idle,
        }
    };
    let mut batch = vec![Record::from_message(&first)];
    let deadline = Instant::now() + Duration::from_millis(settings.batch.max_wait_ms);
    while batch.len() < settings.batch.max_records {
        tokio::select! {
            message = consumer.recv() => match message {
                Ok(message) => batch.push(Record::from_message(&message)),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka poll failed; applying the batch so far");
                    break;
                }
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Poll::Batch(batch)
}

/// What every batch of one run is applied with.
struct Run<'a, H> {
    settings: &'a Settings,
    metrics: &'a Metrics,
    handler: &'a H,
    decoder: &'a Decoder,
    checkpoint: &'a Checkpoint,
}

impl<H> Clone for Run<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for Run<'_, H> {}

/// Applies `batch` until it commits. Records never fail a batch (they are
/// dead-lettered); what is left are infrastructure failures and bugs such as a
/// schema the code does not expect. Both are retried with capped backoff for as
/// long as they last, nothing acknowledged meanwhile; the latter logs at ERROR
/// because it needs a person. `None`: shutdown was signalled first.
async fn apply_with_retry<H: Handler>(
    run: &Run<'_, H>,
    client: &mut Db,
    batch: &[Record],
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Outcome> {
    let Run {
        settings,
        metrics,
        handler,
        decoder,
        checkpoint,
    } = *run;
    let mut backoff = Backoff::default();
    loop {
        if client.is_closed() {
            *client = connect_with_retry(handler.name(), settings, shutdown).await?;
        }
        let error: BatchError = match apply_batch(client, handler, decoder, batch, checkpoint).await
        {
            Ok(outcome) => return Some(outcome),
            Err(e) => e,
        };
        let delay = backoff.next();
        let infrastructure = error.class() == service::ErrorClass::Infrastructure;
        metrics::counter!(metrics.batch_failures.clone(), "class" => failure_class(infrastructure))
            .increment(1);
        if infrastructure {
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, records = batch.len(), "batch failed, retrying");
        } else {
            tracing::error!(error = %error, retry_in_ms = delay.as_millis() as u64, records = batch.len(),
                "batch failed for a reason outside the records (schema or code); retrying until fixed");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut *shutdown => return None,
        }
    }
}

fn failure_class(infrastructure: bool) -> &'static str {
    if infrastructure {
        "infrastructure"
    } else {
        "schema_or_code"
    }
}

/// Capped exponential backoff: 100 ms, 200 ms, ... up to [`MAX_BACKOFF`].
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(100))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        delay
    }
}

/// Connects, retrying with backoff; `None` if shutdown came first.
async fn connect_with_retry(
    service: &str,
    settings: &Settings,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Db> {
    let mut backoff = Backoff::default();
    loop {
        match connect(service, settings).await {
            Ok(client) => return Some(client),
            Err(e) => {
                let delay = backoff.next();
                tracing::warn!(service, error = %service::show_db_error(&e), database = %settings.database.describe(), retry_in_ms = delay.as_millis() as u64, "database unreachable");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut *shutdown => return None,
                }
            }
        }
    }
}

/// The size of what waits for an operator, as gauges, refreshed every few seconds.
#[derive(Debug, Default)]
struct BacklogGauges {
    last: Option<Instant>,
}

impl BacklogGauges {
    async fn refresh(&mut self, metrics: &Metrics, client: &tokio_postgres::Client) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.last = Some(Instant::now());
        match crate::operator::backlog(client).await {
            Ok(b) => {
                metrics::gauge!(metrics.dead_letters_open.clone()).set(b.dead_letters_open as f64);
                metrics::gauge!(metrics.parked_events.clone()).set(b.parked_events as f64);
                metrics::gauge!(metrics.parked_aggregates.clone()).set(b.parked_aggregates as f64);
            }
            Err(e) => {
                tracing::debug!(error = %service::show_db_error(&e), "backlog gauges not refreshed")
            }
        }
    }
}

/// What follows `<service>_` in the name of each metric a consumer exports
/// (the projector lists its full names: `projector::METRICS`).
pub const METRIC_SUFFIXES: [&str; 13] = [
    "events_applied_total",
    "events_duplicate_total",
    "records_stale_total",
    "events_parked_total",
    "dead_letters_total",
    "batches_total",
    "batch_failures_total",
    "event_latency_seconds",
    "dead_letters_open",
    "parked_events",
    "parked_aggregates",
    "partition_lag",
    "consumer_lag",
];

/// The loop's metrics, named after the service (`projector_events_applied_total`,
/// `inventory_events_applied_total`, ...): docs/operations.md lists them.
#[derive(Debug)]
struct Metrics {
    /// Transactions that failed and will be retried, by `class`:
    /// `infrastructure` (the database is unwell: WARN) or `schema_or_code`
    /// (it refuses what the code sends: ERROR, needs a person).
    batch_failures: String,
    applied: String,
    duplicates: String,
    stale: String,
    parked: String,
    dead_lettered: String,
    batches: String,
    latency: String,
    dead_letters_open: String,
    parked_events: String,
    parked_aggregates: String,
}

impl Metrics {
    /// The names for `service`, with both series of `batch_failures` at 0 so a
    /// rate over them exists (and the alert on it can be evaluated) before
    /// the first failure.
    fn new(service: &str) -> Self {
        let name = |suffix: &str| format!("{service}_{suffix}");
        let metrics = Self {
            batch_failures: name("batch_failures_total"),
            applied: name("events_applied_total"),
            duplicates: name("events_duplicate_total"),
            stale: name("records_stale_total"),
            parked: name("events_parked_total"),
            dead_lettered: name("dead_letters_total"),
            batches: name("batches_total"),
            latency: name("event_latency_seconds"),
            dead_letters_open: name("dead_letters_open"),
            parked_events: name("parked_events"),
            parked_aggregates: name("parked_aggregates"),
        };
        for infrastructure in [true, false] {
            metrics::counter!(metrics.batch_failures.clone(), "class" => failure_class(infrastructure))
                .absolute(0);
        }
        metrics
    }

    fn record(&self, outcome: &Outcome) {
        metrics::counter!(self.applied.clone()).increment(outcome.applied as u64);
        metrics::counter!(self.duplicates.clone()).increment(outcome.duplicates as u64);
        metrics::counter!(self.stale.clone()).increment(outcome.stale as u64);
        metrics::counter!(self.parked.clone()).increment(outcome.parked as u64);
        metrics::counter!(self.dead_lettered.clone()).increment(outcome.dead_lettered as u64);
        metrics::counter!(self.batches.clone()).increment(1);
        // Commit-to-effect latency of the events applied (a duplicate, a
        // dead letter or an event parked behind a gap has not taken effect;
        // a released parked event counts when it does). An occurred_at in
        // the future (clock skew between producer and consumer) counts as 0;
        // one far in the past is the event's real age and counts as such.
        let now = chrono::Utc::now();
        for at in &outcome.occurred {
            let seconds = (now - *at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(self.latency.clone()).record(seconds);
        }
        tracing::debug!(
            applied = outcome.applied,
            duplicates = outcome.duplicates,
            parked = outcome.parked,
            dead_lettered = outcome.dead_lettered,
            "batch committed"
        );
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing the current batch");
}
