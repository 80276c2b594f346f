//! `projector rebuild`: rebuild the read models without downtime.
//!
//! Use it for a new read model, a fixed projection bug or a changed
//! denormalization: the new code builds a complete shadow copy from the
//! beginning of the topics while the live projection keeps serving readers
//! and applying new events; then the copy is swapped in atomically.
//!
//! # Layout
//! 1. **Shadow schema.** Schema `rebuild` (any leftover of an earlier attempt
//!    is dropped) gets every read migration, so it holds every projection
//!    table: read models, inbox, versions, parked events, dead letters,
//!    positions.
//! 2. **Catch-up.** The projector's own loop ([`consumer::worker::run_with`])
//!    runs in this process with `search_path=rebuild`, a consumer group of its
//!    own (`<group>-rebuild-<time>`) starting at the beginning of the topics,
//!    and its positions stored in the shadow schema. The topics keep every
//!    event (`retention.ms=-1`, debezium/topics.txt): they are the history a
//!    rebuild reads; the outbox table may have been pruned long ago.
//! 3. **Swap**, once the copy is within [`SWAP_WITHIN`] records of the live
//!    projection: one transaction takes [`SWAP_LOCK`] exclusively (every live
//!    batch holds it shared, so the live projectors pause between batches),
//!    waits until the copy's positions reach the live ones on every partition
//!    (the copy keeps consuming; it does not take the lock), stops the copy's
//!    consumer, moves each live table to a `retired_*` schema and each shadow
//!    table to `public`, and gives the live group the copy's positions. Readers
//!    see the old tables until the commit and the new ones after it, never a
//!    half-built model. The live projectors resume on the new tables: records
//!    the copy already applied are turned away (inbox, versions); none is
//!    skipped, since the copy was at or past their position.
//! 4. **Retire.** The old tables are dropped (or kept with `--keep-old`).
//!
//! Dead letters are evaluated again by the new code: a record that still fails
//! is dead-lettered again (open); the resolutions recorded on the old ones stay
//! in the retired schema with `--keep-old`.
//!
//! Runs as the owner role (it changes the schema).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::position::{Checkpoint, Positions, SWAP_LOCK};
use crate::record::Decoder;
use crate::settings::Settings;
use consumer::worker as consumer_loop;

/// The shadow schema's name.
pub const SHADOW: &str = "rebuild";
/// Attempt the swap once the copy is this close (records, all partitions).
pub const SWAP_WITHIN: i64 = 2_000;

/// Why a rebuild stopped; the live tables are unchanged unless the swap
/// committed. A variant with a cause says only its own part: what failed is
/// its source (print the chain: [`service::chain`], `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("read database")]
    Database(#[from] service::DbError),
    #[error("migrating the shadow schema")]
    Migration(#[from] refinery::Error),
    #[error("the copy's consumer stopped: {0}")]
    Consumer(String),
    #[error(
        "the copy did not reach the live positions within {0:?} while the live projection was paused; \
         retried until the deadline ({1:?}) passed; is the live projector far behind or the load too high?"
    )]
    NoSwap(Duration, Duration),
    #[error(
        "{} depend(s) on the read models' tables and would be dropped with the retired copy; \
         drop them before the rebuild and create them again after it (or rebuild with --keep-old)",
        .0.join(", ")
    )]
    ForeignDependents(Vec<String>),
}

impl From<tokio_postgres::Error> for RebuildError {
    fn from(e: tokio_postgres::Error) -> Self {
        RebuildError::Database(service::DbError(e))
    }
}

/// How long the swap may pause the live projection waiting for the copy.
#[derive(Debug, Clone)]
pub struct RebuildSpec {
    pub max_pause: Duration,
    /// Give up (keeping the live tables) if no swap happened by then.
    pub deadline: Duration,
    pub keep_old: bool,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub group: String,
    pub events_applied: i64,
    pub duplicates_skipped: i64,
    pub catch_up_seconds: f64,
    /// How long the live projection was paused for the swap.
    pub pause_ms: u64,
    pub total_seconds: f64,
    pub tables_swapped: Vec<String>,
    /// The schema with the old tables, if kept.
    pub retired_schema: Option<String>,
}

async fn positions(
    client: &impl GenericClient,
    schema: &str,
    group: &str,
) -> Result<Positions, RebuildError> {
    Ok(crate::position::load_from(client, &format!("{schema}.consumer_positions"), group).await?)
}

/// Records the copy still lacks to reach the live positions (0: at or past them).
fn behind(live: &Positions, copy: &Positions) -> i64 {
    live.iter()
        .map(|(k, live)| (live - copy.get(k).copied().unwrap_or(0)).max(0))
        .sum()
}

/// Rebuilds every read model (see the module docs). `settings` are the live
/// projector's, with the owner role's login.
pub async fn rebuild(
    settings: &Settings,
    spec: &RebuildSpec,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let live_group = settings.kafka.group_id.clone();
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let group = format!("{live_group}-rebuild-{stamp}");
    let mut report = RebuildReport {
        group: group.clone(),
        ..RebuildReport::default()
    };

    let mut admin = consumer_loop::connect(crate::SERVICE, settings).await?;
    // Refused before any work, not after the copy: an object of someone
    // else's (a dashboard's view) that the retired tables would take along.
    if !spec.keep_old {
        let live: Vec<String> = table_names(&*admin, "public").await?;
        let foreign = foreign_dependents(&*admin, &live).await?;
        if !foreign.is_empty() {
            return Err(RebuildError::ForeignDependents(foreign));
        }
    }
    progress(&format!(
        "creating the shadow schema `{SHADOW}` (a leftover is dropped)"
    ));
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {SHADOW} CASCADE; CREATE SCHEMA {SHADOW};"
        ))
        .await?;
    let mut shadow_settings = settings.clone();
    shadow_settings.database.schema = Some(SHADOW.to_owned());
    shadow_settings.kafka.group_id = group.clone();
    {
        let mut shadow = consumer_loop::connect(crate::SERVICE, &shadow_settings).await?;
        crate::migrate(&mut shadow).await?;
    }

    progress(&format!(
        "consuming every topic from the beginning as group {group}"
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut copy = tokio::spawn(consumer_loop::run_with(
        shadow_settings,
        crate::ReadModels,
        Decoder::default(),
        Checkpoint::for_rebuild(group.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let mut stop = Some(stop);

    let deadline = started + spec.deadline;
    let mut last_report = Instant::now();
    loop {
        if copy.is_finished() {
            let result = (&mut copy).await;
            return Err(RebuildError::Consumer(format!("{result:?}")));
        }
        let live = positions(&*admin, "public", &live_group).await?;
        let shadow = positions(&*admin, SHADOW, &group).await?;
        let lacking = behind(&live, &shadow);
        if last_report.elapsed() >= Duration::from_secs(2) {
            let applied: i64 = admin
                .query_one(&format!("SELECT count(*) FROM {SHADOW}.inbox"), &[])
                .await?
                .get(0);
            progress(&format!(
                "copy: {applied} events applied, {lacking} records behind the live projection"
            ));
            last_report = Instant::now();
        }
        if lacking <= SWAP_WITHIN {
            if report.catch_up_seconds == 0.0 {
                report.catch_up_seconds = started.elapsed().as_secs_f64();
            }
            progress("copy caught up; pausing the live projection to swap");
            if let Some(pause) = swap(
                &mut admin,
                &live_group,
                &group,
                spec,
                &mut stop,
                &mut copy,
                &mut report,
            )
            .await?
            {
                report.pause_ms = pause.as_millis() as u64;
                break;
            }
            progress(
                "the copy did not reach the live positions in time; live resumed, trying again",
            );
        }
        if Instant::now() >= deadline {
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
            let _ = copy.await;
            return Err(RebuildError::NoSwap(spec.max_pause, spec.deadline));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let run = admin
        .query_one(
            "SELECT coalesce(sum(events_applied), 0)::bigint, coalesce(sum(duplicates_skipped), 0)::bigint \
             FROM public.consumer_runs WHERE group_id = $1",
            &[&group],
        )
        .await?;
    report.events_applied = run.get(0);
    report.duplicates_skipped = run.get(1);
    if let Some(retired) = report.retired_schema.clone() {
        if !spec.keep_old {
            progress(&format!("dropping the retired tables (schema {retired})"));
            // The tables by name, then the schema without CASCADE: anything
            // else in it (a view created meanwhile) makes the drop fail loudly
            // and the retired schema stays, rather than being dropped unseen.
            let names = table_names(&*admin, &retired).await?;
            let mut drop = String::new();
            if !names.is_empty() {
                let list: Vec<String> = names
                    .iter()
                    .map(|t| format!("{}.{}", quote_ident(&retired), quote_ident(t)))
                    .collect();
                drop.push_str(&format!("DROP TABLE {};\n", list.join(", ")));
            }
            drop.push_str(&format!("DROP SCHEMA {};", quote_ident(&retired)));
            admin.batch_execute(&drop).await?;
            report.retired_schema = None;
        }
    }
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))
        .await?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The swap transaction. `Ok(None)`: the copy did not reach the live
/// positions within `max_pause`; rolled back, live resumed.
async fn swap(
    admin: &mut tokio_postgres::Client,
    live_group: &str,
    group: &str,
    spec: &RebuildSpec,
    stop: &mut Option<tokio::sync::oneshot::Sender<()>>,
    copy: &mut tokio::task::JoinHandle<Result<(), consumer_loop::WorkerError>>,
    report: &mut RebuildReport,
) -> Result<Option<Duration>, RebuildError> {
    let paused = Instant::now();
    let tx = admin.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SWAP_LOCK])
        .await?;
    // The live positions are frozen now; the copy keeps consuming.
    let live = positions(&tx, "public", live_group).await?;
    loop {
        let shadow = positions(&tx, SHADOW, group).await?;
        if behind(&live, &shadow) == 0 {
            break;
        }
        if paused.elapsed() >= spec.max_pause {
            tx.rollback().await?;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop the copy: its last batch commits into the shadow tables.
    if let Some(stop) = stop.take() {
        let _ = stop.send(());
    }
    match copy.await {
        Ok(Ok(())) => {}
        other => return Err(RebuildError::Consumer(format!("{other:?}"))),
    }
    let retired = format!("retired_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&retired)))
        .await?;
    // Exactly the tables the read migrations create (the shadow schema holds
    // nothing else); any other table in `public` is not ours and stays.
    let tables = table_names(&tx, SHADOW).await?;
    let live_tables: Vec<String> = table_names(&tx, "public")
        .await?
        .into_iter()
        .filter(|t| tables.contains(t))
        .collect();
    if !spec.keep_old {
        let foreign = foreign_dependents(&tx, &live_tables).await?;
        if !foreign.is_empty() {
            return Err(RebuildError::ForeignDependents(foreign));
        }
    }
    let mut moves = String::new();
    for t in &live_tables {
        moves.push_str(&format!(
            "ALTER TABLE public.{} SET SCHEMA {};\n",
            quote_ident(t),
            quote_ident(&retired)
        ));
    }
    for t in &tables {
        moves.push_str(&format!(
            "ALTER TABLE {SHADOW}.{} SET SCHEMA public;\n",
            quote_ident(t)
        ));
    }
    tx.batch_execute(&moves).await?;
    // The live group continues from the copy's positions after a restart.
    tx.execute(
        "INSERT INTO public.consumer_positions (group_id, topic, kafka_partition, next_offset) \
         SELECT $1, topic, kafka_partition, next_offset FROM public.consumer_positions WHERE group_id = $2 \
         ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET \
           next_offset = greatest(consumer_positions.next_offset, EXCLUDED.next_offset), updated_at = now()",
        &[&live_group, &group],
    )
    .await?;
    tx.commit().await?;
    report.tables_swapped = tables;
    report.retired_schema = Some(retired);
    Ok(Some(paused.elapsed()))
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables of schema `schema`, by name.
async fn table_names(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            &[&schema],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Views (and materialized views) outside `tables` that read one of the
/// `public` tables named: moving those tables away would take them along.
async fn foreign_dependents(
    client: &impl GenericClient,
    tables: &[String],
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT DISTINCT format('%I.%I (on %s)', dn.nspname, dependent.relname, source.relname) \
             FROM pg_depend d \
             JOIN pg_rewrite r ON r.oid = d.objid \
             JOIN pg_class dependent ON dependent.oid = r.ev_class \
             JOIN pg_namespace dn ON dn.oid = dependent.relnamespace \
             JOIN pg_class source ON source.oid = d.refobjid \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND source.relnamespace = 'public'::regnamespace AND source.relname = ANY($1) \
               AND dependent.oid <> source.oid \
               AND NOT (dependent.relnamespace = 'public'::regnamespace AND dependent.relname = ANY($1)) \
             ORDER BY 1",
            &[&tables],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
