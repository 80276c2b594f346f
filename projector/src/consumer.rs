//! The projector's loop: poll a batch, apply it, store its offsets, repeat.
//!
//! Offsets follow the at-least-once recipe: `enable.auto.offset.store=false`,
//! so librdkafka commits (periodically, in the background) only offsets that
//! this loop stored, and it stores them only after the batch's read-database
//! transaction committed. On shutdown the current batch finishes, its offsets
//! are stored and committed synchronously, then the loop returns.

use std::future::Future;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::time::Instant;

use crate::batch::{apply_batch, BatchError, Outcome};
use crate::position::{self, Checkpoint};
use crate::record::{Decoder, Record};
use crate::settings::Settings;

/// Why the projector stopped other than by the shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Seeks assigned partitions to the positions stored in the read database,
/// logs rebalances and publishes the consumer lag from librdkafka's statistics.
#[derive(Debug, Default)]
pub struct ProjectorContext {
    /// Where the positions live; `None`: Kafka's committed offsets only.
    positions: Option<(tokio_postgres::Config, String)>,
}

impl ProjectorContext {
    /// Assigned partitions start at the positions stored for `group_id`.
    pub fn with_positions(database: tokio_postgres::Config, group_id: String) -> Self {
        Self {
            positions: Some((database, group_id)),
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
        let stored = match position::load_blocking(config.clone(), group.clone()) {
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

impl ClientContext for ProjectorContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for topic in statistics.topics.values() {
            for p in topic.partitions.values() {
                if p.partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                // -1: not consumed here (revoked, or not known yet): no lag of ours.
                let lag = p.consumer_lag.max(0);
                total += lag;
                metrics::gauge!(
                    "projector_partition_lag",
                    "topic" => topic.topic.clone(),
                    "partition" => p.partition.to_string()
                )
                .set(lag as f64);
            }
        }
        metrics::gauge!("projector_consumer_lag").set(total as f64);
    }
}

impl ConsumerContext for ProjectorContext {
    /// Eager rebalancing as librdkafka's default, with one change: an
    /// assignment starts at the stored positions.
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
                consumer.assign(tpl)
            }
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?partitions(tpl), "revoked");
                consumer.unassign()
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
pub fn build_consumer(settings: &Settings) -> Result<StreamConsumer<ProjectorContext>, KafkaError> {
    let kafka = &settings.kafka;
    let consumer: StreamConsumer<ProjectorContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        // A third of the session: a restarted instance's group settles quickly.
        .set(
            "heartbeat.interval.ms",
            (kafka.session_timeout_ms / 3).max(100).to_string(),
        )
        .set("max.poll.interval.ms", "300000")
        .set("statistics.interval.ms", "1000")
        // Latency over throughput: do not let a fetch sit on the broker for long.
        .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
        .create_with_context(ProjectorContext::with_positions(
            settings.database.pg_config("projector positions"),
            kafka.group_id.clone(),
        ))?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Connects to the read database; the connection task logs when it ends.
pub async fn connect(settings: &Settings) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = settings
        .database
        .pg_config("projector")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %service::show_db_error(&e), "read database connection closed");
        }
    });
    Ok(client)
}

/// Most time between two attempts at the same batch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs until `shutdown` resolves (returns `Ok`) or a fatal error.
///
/// Read-database outages are retried with capped exponential backoff for as
/// long as they last; nothing is acknowledged meanwhile.
pub async fn run(
    settings: Settings,
    decoder: Decoder,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let checkpoint = Checkpoint::new(settings.kafka.group_id.clone());
    run_with(settings, decoder, checkpoint, shutdown).await
}

/// [`run`] with a given checkpoint (a rebuild's, which does not yield to its swap).
pub async fn run_with(
    settings: Settings,
    decoder: Decoder,
    checkpoint: Checkpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let consumer = build_consumer(&settings)?;
    tokio::pin!(shutdown);
    let Some(mut client) = connect_with_retry(&settings, &mut shutdown).await else {
        return Ok(());
    };
    let mut gauges = BacklogGauges::default();
    tracing::info!(topics = ?settings.kafka.topics, group = %settings.kafka.group_id, run = %checkpoint.run_id, "projector started");

    let mut watchdog = AssignmentWatchdog::new(&settings);
    loop {
        gauges.refresh(&client).await;
        watchdog.check(&consumer, &settings)?;
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
        };
        // Ended after the commit: each covers its record's transaction.
        let spans = crate::trace::event_spans(&batch);
        let Some(outcome) = apply_with_retry(
            &settings,
            &decoder,
            &mut client,
            &batch,
            &checkpoint,
            &mut shutdown,
        )
        .await
        else {
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
        record_metrics(&batch, &outcome);
    }
    // Final synchronous commit so a restart resumes exactly after the last applied batch.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "final offset commit failed; the next start re-applies (idempotently)")
        }
    }
    tracing::info!("projector stopped");
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
}

/// How long without records before the loop looks at its assignment.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Rejoins the group when partitions are stranded: this member has held no
/// partition for too long, or a partition of the topics is held by nobody who
/// consumes it (its committed offset sits behind the end and has not moved).
///
/// Why: Tansu 0.6 (the local stack's broker) mishandles members that die:
/// restarted while a dead member led the group, it hands the survivor an empty
/// assignment without asking it to rejoin; and a rebalance right after a
/// member was killed can give that dead member's partitions to the dead member
/// again, where they stay until some member rejoins (seen in chaos runs: a
/// partition stalled for a minute). A fresh join repairs both. On Apache Kafka
/// a stalled partition means a live but stuck member; the rejoin is a harmless
/// rebalance there, once per [`AssignmentWatchdog::limit`].
struct AssignmentWatchdog {
    empty_since: Option<Instant>,
    /// Per partition we do not hold: (committed offset, since when unchanged).
    stalled: std::collections::HashMap<(String, i32), (i64, Instant)>,
    last_check: Instant,
    limit: Duration,
}

/// How often the watchdog looks, busy or idle.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(5);

impl AssignmentWatchdog {
    fn new(settings: &Settings) -> Self {
        Self {
            empty_since: None,
            stalled: Default::default(),
            last_check: Instant::now(),
            limit: Duration::from_millis(u64::from(settings.kafka.session_timeout_ms) * 3),
        }
    }

    fn check(
        &mut self,
        consumer: &StreamConsumer<ProjectorContext>,
        settings: &Settings,
    ) -> Result<(), KafkaError> {
        if self.last_check.elapsed() < WATCHDOG_INTERVAL {
            return Ok(());
        }
        self.last_check = Instant::now();
        let assignment = consumer.assignment()?;
        let reason = if assignment.count() == 0 {
            self.stalled.clear();
            let since = *self.empty_since.get_or_insert_with(Instant::now);
            (since.elapsed() >= self.limit).then(|| {
                format!(
                    "no partitions assigned for {} ms",
                    since.elapsed().as_millis()
                )
            })
        } else {
            self.empty_since = None;
            self.stranded_partition(consumer, settings, &assignment)
        };
        if let Some(reason) = reason {
            tracing::warn!(reason = %reason, "partitions stranded; rejoining the group");
            consumer.unsubscribe();
            let topics: Vec<&str> = settings.kafka.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
            self.empty_since = None;
            self.stalled.clear();
        }
        Ok(())
    }

    /// A partition we do not hold whose group offset stood still behind the
    /// end for [`Self::limit`], if any. Broker errors mean "cannot tell".
    fn stranded_partition(
        &mut self,
        consumer: &StreamConsumer<ProjectorContext>,
        settings: &Settings,
        assignment: &TopicPartitionList,
    ) -> Option<String> {
        let timeout = Duration::from_secs(1);
        let held: std::collections::HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut others = TopicPartitionList::new();
        for topic in &settings.kafka.topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    if !held.contains(&(t.name().to_owned(), p.id())) {
                        others.add_partition(t.name(), p.id());
                    }
                }
            }
        }
        if others.count() == 0 {
            self.stalled.clear();
            return None;
        }
        let committed = consumer.committed_offsets(others, timeout).ok()?;
        let mut seen = std::collections::HashMap::new();
        let mut stranded = None;
        for e in committed.elements() {
            let key = (e.topic().to_owned(), e.partition());
            let offset = e.offset().to_raw().unwrap_or(0).max(0);
            let (_, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .ok()?;
            if offset >= high {
                continue; // caught up: nothing to consume
            }
            let since = match self.stalled.get(&key) {
                Some((before, since)) if *before == offset => *since,
                _ => Instant::now(),
            };
            if since.elapsed() >= self.limit {
                stranded = Some(format!(
                    "{}/{} at offset {offset} of {high}, unmoved for {} ms",
                    key.0,
                    key.1,
                    since.elapsed().as_millis()
                ));
            }
            seen.insert(key, (offset, since));
        }
        self.stalled = seen;
        stranded
    }
}

async fn next_batch(
    consumer: &StreamConsumer<ProjectorContext>,
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

/// Applies `batch` until it commits. Records never fail a batch (they are
/// dead-lettered); what is left are infrastructure failures and bugs such as a
/// schema the code does not expect. Both are retried with capped backoff for as
/// long as they last, nothing acknowledged meanwhile; the latter logs at ERROR
/// because it needs a person. `None`: shutdown was signalled first.
async fn apply_with_retry(
    settings: &Settings,
    decoder: &Decoder,
    client: &mut tokio_postgres::Client,
    batch: &[Record],
    checkpoint: &Checkpoint,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Outcome> {
    let mut backoff = Backoff::default();
    loop {
        if client.is_closed() {
            *client = connect_with_retry(settings, shutdown).await?;
        }
        let error: BatchError = match apply_batch(client, decoder, batch, checkpoint).await {
            Ok(outcome) => return Some(outcome),
            Err(e) => e,
        };
        let delay = backoff.next();
        if error.class() == service::ErrorClass::Infrastructure {
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
    settings: &Settings,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<tokio_postgres::Client> {
    let mut backoff = Backoff::default();
    loop {
        match connect(settings).await {
            Ok(client) => return Some(client),
            Err(e) => {
                let delay = backoff.next();
                tracing::warn!(error = %service::show_db_error(&e), database = %settings.database.describe(), retry_in_ms = delay.as_millis() as u64, "read database unreachable");
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
    async fn refresh(&mut self, client: &tokio_postgres::Client) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.last = Some(Instant::now());
        match crate::operator::backlog(client).await {
            Ok(b) => {
                metrics::gauge!("projector_dead_letters_open").set(b.dead_letters_open as f64);
                metrics::gauge!("projector_parked_events").set(b.parked_events as f64);
                metrics::gauge!("projector_parked_aggregates").set(b.parked_aggregates as f64);
            }
            Err(e) => {
                tracing::debug!(error = %service::show_db_error(&e), "backlog gauges not refreshed")
            }
        }
    }
}

fn record_metrics(batch: &[Record], outcome: &Outcome) {
    metrics::counter!("projector_events_applied_total").increment(outcome.applied as u64);
    metrics::counter!("projector_events_duplicate_total").increment(outcome.duplicates as u64);
    metrics::counter!("projector_records_stale_total").increment(outcome.stale as u64);
    metrics::counter!("projector_events_parked_total").increment(outcome.parked as u64);
    metrics::counter!("projector_dead_letters_total").increment(outcome.dead_lettered as u64);
    metrics::counter!("projector_batches_total").increment(1);
    // Commit-to-read-model latency, from the event's occurred_at header.
    let now = chrono::Utc::now();
    for record in batch {
        if let Some(at) = record
            .header(outbox_events::header::OCCURRED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let seconds = (now - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0;
            metrics::histogram!("projector_event_latency_seconds").record(seconds);
        }
    }
    tracing::debug!(
        applied = outcome.applied,
        duplicates = outcome.duplicates,
        parked = outcome.parked,
        dead_lettered = outcome.dead_lettered,
        "batch committed"
    );
}
