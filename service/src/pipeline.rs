//! Statements sent pipelined, in order, on one connection.
//!
//! tokio-postgres sends a statement when its future is first polled and
//! executes requests in the order they were sent. Polling every future once,
//! in order, before awaiting any puts all of them on the wire back to back:
//! N independent statements cost one round trip instead of N, and run in
//! exactly the given order (so an insert may depend on the one before it).

use futures::future::{maybe_done, MaybeDone};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Statement, Transaction};

/// A statement parameter that can be planned now and sent later.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// Borrows planned parameters in the form `execute` takes.
pub fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Executes `statements` pipelined and in order; one result (rows changed or
/// the error) per statement. After the first error the transaction is
/// aborted, so later statements fail too: the first error is the cause.
pub async fn execute_in_order(
    tx: &Transaction<'_>,
    statements: &[(&Statement, &[&(dyn ToSql + Sync)])],
) -> Vec<Result<u64, Error>> {
    let mut pending: Vec<MaybeDone<_>> = statements
        .iter()
        .map(|(statement, params)| maybe_done(Box::pin(tx.execute(*statement, params))))
        .collect();
    for future in pending.iter_mut() {
        let _ = futures::poll!(std::pin::Pin::new(future));
    }
    let mut results = Vec::with_capacity(pending.len());
    for future in pending.iter_mut() {
        std::pin::Pin::new(&mut *future).await;
        if let Some(result) = std::pin::Pin::new(future).take_output() {
            results.push(result);
        }
    }
    results
}

/// [`execute_in_order`], then `COMMIT` in the same pipeline: the whole end of a
/// transaction in one round trip. If a statement failed on the server, the
/// server answers the COMMIT by rolling back; the statement's error is in its
/// result.
///
/// A statement can also fail *before it is sent* (a parameter that does not
/// encode, a wrong parameter count or type): the server never sees it, so a
/// COMMIT would commit every other statement, state rows without their outbox
/// row. Such a failure is known once every statement has been polled, so in
/// that case `ROLLBACK` takes the COMMIT's place in the pipeline.
///
/// Afterwards the transaction is over either way: the caller must not use it
/// again (and should forget its guard, which would send a needless ROLLBACK).
pub async fn execute_in_order_and_commit(
    tx: &Transaction<'_>,
    statements: &[(&Statement, &[&(dyn ToSql + Sync)])],
) -> Result<Vec<u64>, Error> {
    let mut pending: Vec<MaybeDone<_>> = statements
        .iter()
        .map(|(statement, params)| maybe_done(Box::pin(tx.execute(*statement, params))))
        .collect();
    for future in pending.iter_mut() {
        let _ = futures::poll!(std::pin::Pin::new(future));
    }
    // A future already done with an error after its first poll failed on
    // this side: the server has not seen it and would commit the rest.
    let failed_unsent = pending
        .iter()
        .any(|future| matches!(future, MaybeDone::Done(Err(_))));
    let end = if failed_unsent { "ROLLBACK" } else { "COMMIT" };
    let mut end = maybe_done(Box::pin(tx.batch_execute(end)));
    let _ = futures::poll!(std::pin::Pin::new(&mut end));
    let mut results = Vec::with_capacity(pending.len());
    for future in pending.iter_mut() {
        std::pin::Pin::new(&mut *future).await;
        if let Some(result) = std::pin::Pin::new(future).take_output() {
            results.push(result);
        }
    }
    std::pin::Pin::new(&mut end).await;
    let rows = first_error(results)?;
    match std::pin::Pin::new(&mut end).take_output() {
        Some(Err(e)) => Err(e),
        _ => Ok(rows),
    }
}

/// The first error of [`execute_in_order`]'s results, else the row counts.
pub fn first_error(results: Vec<Result<u64, Error>>) -> Result<Vec<u64>, Error> {
    results.into_iter().collect()
}
