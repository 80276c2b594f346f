//! What `projector dead-letters …` prints: the [`crate::operator`] commands'
//! results as text for a person or, with `--json`, as JSON for a script.
//!
//! The rendering functions are pure (a result in, the text out) so tests pin
//! the output down without a database; the `async` functions run one operator
//! command and render its result. Every text ends with a newline after each
//! line: the binary prints it as it is (`print!`).
//!
//! A record is shown exactly as it arrived: key, header values and value as
//! quoted strings (escapes visible), a value that is not UTF-8 marked so with
//! its length and shown lossily, a missing one as `(null)`.

use std::fmt::Write as _;

use crate::operator::{self, Backlog, DeadLetter, DeadLetterRecord, Discarded, Page, Replayed};
use crate::record::Decoder;

/// `dead-letters list`: one page of dead letters (`all`: resolved ones too).
pub async fn list(
    client: &impl tokio_postgres::GenericClient,
    all: bool,
    page: Page,
    json: bool,
) -> anyhow::Result<String> {
    let letters = operator::list(client, all, page).await?;
    if json {
        return Ok(list_json(&letters)?);
    }
    let backlog = operator::backlog(client).await.map_err(service::DbError)?;
    Ok(list_text(&backlog, &letters, page.limit))
}

/// `dead-letters show`: one dead letter with its record.
pub async fn show(
    client: &impl tokio_postgres::GenericClient,
    id: i64,
    json: bool,
) -> anyhow::Result<String> {
    let letter = operator::show(client, id).await?;
    if json {
        return Ok(show_json(&letter)?);
    }
    Ok(show_text(&letter))
}

/// `dead-letters replay`: dead letter `id`, or every open one (`None`),
/// oldest first; `emit` gets each result's line as soon as it is known.
/// Fails if any still fails, after trying them all.
pub async fn replay<H: crate::Handler>(
    client: &mut crate::worker::Db,
    handler: &H,
    decoder: &Decoder,
    id: Option<i64>,
    json: bool,
    mut emit: impl FnMut(&str),
) -> anyhow::Result<()> {
    let ids = match id {
        Some(id) => vec![id],
        None => operator::open_ids(&**client).await?,
    };
    let mut failing = 0;
    for id in ids {
        let result = operator::replay(client, handler, decoder, id).await?;
        if matches!(result, Replayed::StillFailing { .. }) {
            failing += 1;
        }
        emit(&replayed_line(id, &result, json));
    }
    if failing > 0 {
        anyhow::bail!("{failing} dead letters still fail; fix the cause (e.g. deploy an upcaster) and replay again, or discard them");
    }
    Ok(())
}

/// `dead-letters discard`: gives up on dead letter `id`, recording `reason`.
pub async fn discard<H: crate::Handler>(
    client: &mut crate::worker::Db,
    handler: &H,
    decoder: &Decoder,
    id: i64,
    reason: &str,
    skip_version: bool,
    json: bool,
) -> anyhow::Result<String> {
    let result = operator::discard(client, handler, decoder, id, reason, skip_version).await?;
    Ok(discarded_text(id, &result, skip_version, json)?)
}

/// The backlog line, then each dead letter on two lines (where it came from,
/// what it is, how many events wait behind it; then why it failed), then a
/// pointer to the next page if this one is full (`limit` letters).
pub fn list_text(backlog: &Backlog, letters: &[DeadLetter], limit: i64) -> String {
    let mut out = format!(
        "{} open dead letters, {} parked events in {} aggregates\n",
        backlog.dead_letters_open, backlog.parked_events, backlog.parked_aggregates
    );
    for d in letters {
        let _ = writeln!(
            out,
            "#{:<5} {:<9} {}/{}@{}  {} {} v{}  {}  parked behind: {}\n       reason: {}",
            d.id,
            d.status,
            d.topic,
            d.partition,
            d.offset,
            d.aggregate_type.as_deref().unwrap_or("?"),
            d.aggregate_id.as_deref().unwrap_or("?"),
            d.aggregate_version.map_or("?".into(), |v| v.to_string()),
            d.event_type.as_deref().unwrap_or("?"),
            d.parked_behind,
            d.reason
        );
    }
    if letters.len() as i64 == limit {
        if let Some(last) = letters.last() {
            let _ = writeln!(out, "(more may follow: --after {})", last.id);
        }
    }
    out
}

/// The page of dead letters as a pretty JSON array.
pub fn list_json(letters: &[DeadLetter]) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(letters)? + "\n")
}

/// Raw bytes as the operator should see them; see the module docs.
fn quoted(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(null)".to_owned(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!(
                "(not UTF-8, {} bytes) {}",
                b.len(),
                String::from_utf8_lossy(b)
            ),
        },
    }
}

/// The dead letter's state, then its record: key, each header, value.
pub fn show_text(letter: &DeadLetterRecord) -> String {
    let (s, r) = (&letter.summary, &letter.record);
    let mut out = format!(
        "dead letter #{} ({}, {} attempts, failed {})\n",
        s.id, s.status, s.attempts, s.failed_at
    );
    let _ = writeln!(out, "reason:   {}", s.reason);
    let _ = writeln!(out, "record:   {}/{}@{}", s.topic, s.partition, s.offset);
    let _ = writeln!(out, "key:      {}", quoted(r.key.as_deref()));
    for h in &r.headers {
        let _ = writeln!(
            out,
            "header:   {} = {}",
            quoted(Some(&h.name)),
            quoted(h.value.as_deref())
        );
    }
    let _ = writeln!(out, "value:    {}", quoted(r.payload.as_deref()));
    let _ = writeln!(out, "parked behind it: {}", s.parked_behind);
    if let Some(resolution) = &s.resolution {
        let _ = writeln!(out, "resolution: {resolution}");
    }
    out
}

/// The dead letter and its record (bytes as lossy UTF-8) as pretty JSON.
pub fn show_json(letter: &DeadLetterRecord) -> serde_json::Result<String> {
    let r = &letter.record;
    let headers: Vec<_> = r
        .headers
        .iter()
        .map(|h| serde_json::json!({"name": String::from_utf8_lossy(&h.name), "value": h.value.as_deref().map(String::from_utf8_lossy)}))
        .collect();
    let value = serde_json::json!({
        "dead_letter": letter.summary,
        "key": r.key.as_deref().map(String::from_utf8_lossy),
        "headers": headers,
        "value": r.payload.as_deref().map(String::from_utf8_lossy),
    });
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

/// One line for what replaying dead letter `id` did.
pub fn replayed_line(id: i64, result: &Replayed, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::json!({"id": id, "replay": result}));
    }
    match result {
        Replayed::Applied { released } => {
            format!("#{id}: applied; {released} parked events released\n")
        }
        Replayed::AlreadyApplied => format!("#{id}: already applied; marked replayed\n"),
        Replayed::Parked => format!("#{id}: parked behind a missing earlier version\n"),
        Replayed::StillFailing { reason } => format!("#{id}: still failing: {reason}\n"),
    }
}

/// One line for what discarding dead letter `id` did; events still parked
/// behind it get a pointer to `--skip-version` unless it was given.
pub fn discarded_text(
    id: i64,
    result: &Discarded,
    skip_version: bool,
    json: bool,
) -> serde_json::Result<String> {
    if json {
        return Ok(serde_json::to_string(result)? + "\n");
    }
    Ok(format!(
        "#{id}: discarded; {} parked events released, {} still parked{}\n",
        result.released,
        result.still_parked,
        if result.still_parked > 0 && !skip_version {
            " (they wait for the discarded version; `--skip-version` applies them without it)"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RawHeader, Record};

    fn letter(id: i64, status: &str) -> DeadLetter {
        DeadLetter {
            id,
            status: status.into(),
            reason: "unknown schema version 9 of `OrderPaid`".into(),
            topic: "outbox.event.order".into(),
            partition: 2,
            offset: 17,
            aggregate_type: Some("order".into()),
            aggregate_id: Some("0b6c".into()),
            aggregate_version: Some(2),
            event_type: Some("OrderPaid".into()),
            parked_behind: 1,
            attempts: 1,
            failed_at: "2024-05-01T12:00:00Z".parse().expect("a time"),
            resolution: None,
        }
    }

    const BACKLOG: Backlog = Backlog {
        dead_letters_open: 1,
        parked_events: 1,
        parked_aggregates: 1,
    };

    #[test]
    fn a_list_shows_the_backlog_then_two_lines_per_letter() {
        let text = list_text(&BACKLOG, &[letter(1, "open")], 100);
        assert_eq!(
            text,
            "1 open dead letters, 1 parked events in 1 aggregates\n\
             #1     open      outbox.event.order/2@17  order 0b6c v2  OrderPaid  parked behind: 1\n       \
             reason: unknown schema version 9 of `OrderPaid`\n"
        );
    }

    #[test]
    fn a_full_page_points_to_the_next_and_unknowns_show_as_question_marks() {
        let mut unreadable = letter(7, "discarded");
        unreadable.aggregate_type = None;
        unreadable.aggregate_id = None;
        unreadable.aggregate_version = None;
        unreadable.event_type = None;
        unreadable.parked_behind = 0;
        let text = list_text(&BACKLOG, &[letter(3, "replayed"), unreadable], 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            lines[3],
            "#7     discarded outbox.event.order/2@17  ? ? v?  ?  parked behind: 0"
        );
        assert_eq!(lines[5], "(more may follow: --after 7)");
        assert!(
            !list_text(&BACKLOG, &[letter(3, "open")], 2).contains("more may follow"),
            "a page that is not full is the last"
        );
    }

    #[test]
    fn an_empty_list_is_the_backlog_line() {
        let none = Backlog::default();
        assert_eq!(
            list_text(&none, &[], 100),
            "0 open dead letters, 0 parked events in 0 aggregates\n"
        );
        assert_eq!(list_json(&[]).expect("json"), "[]\n");
    }

    #[test]
    fn show_prints_the_record_exactly_as_it_arrived() {
        let mut summary = letter(1, "discarded");
        summary.resolution = Some("discarded: test record".into());
        let record = DeadLetterRecord {
            summary,
            record: Record {
                topic: "outbox.event.order".into(),
                partition: 2,
                offset: 17,
                key: Some(b"0b6c".to_vec()),
                headers: vec![
                    RawHeader {
                        name: b"eventType".to_vec(),
                        value: Some(b"OrderPaid".to_vec()),
                    },
                    RawHeader {
                        name: b"traceparent".to_vec(),
                        value: None,
                    },
                ],
                payload: Some(vec![b'{', 0xff]),
            },
        };
        assert_eq!(
            show_text(&record),
            "dead letter #1 (discarded, 1 attempts, failed 2024-05-01 12:00:00 UTC)\n\
             reason:   unknown schema version 9 of `OrderPaid`\n\
             record:   outbox.event.order/2@17\n\
             key:      \"0b6c\"\n\
             header:   \"eventType\" = \"OrderPaid\"\n\
             header:   \"traceparent\" = (null)\n\
             value:    (not UTF-8, 2 bytes) {\u{fffd}\n\
             parked behind it: 1\n\
             resolution: discarded: test record\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&show_json(&record).expect("json")).expect("valid JSON");
        assert_eq!(json["key"], "0b6c");
        assert_eq!(json["headers"][1]["value"], serde_json::Value::Null);
        assert_eq!(json["dead_letter"]["id"], 1);
    }

    #[test]
    fn replay_and_discard_results_are_one_line_each() {
        assert_eq!(
            replayed_line(4, &Replayed::Applied { released: 2 }, false),
            "#4: applied; 2 parked events released\n"
        );
        assert_eq!(
            replayed_line(
                4,
                &Replayed::StillFailing {
                    reason: "bad".into()
                },
                true
            ),
            "{\"id\":4,\"replay\":{\"result\":\"still_failing\",\"reason\":\"bad\"}}\n"
        );
        let parked = Discarded {
            still_parked: 2,
            released: 0,
        };
        assert_eq!(
            discarded_text(5, &parked, false, false).expect("text"),
            "#5: discarded; 0 parked events released, 2 still parked \
             (they wait for the discarded version; `--skip-version` applies them without it)\n"
        );
        assert_eq!(
            discarded_text(5, &parked, true, false).expect("text"),
            "#5: discarded; 0 parked events released, 2 still parked\n"
        );
        assert_eq!(
            discarded_text(5, &parked, false, true).expect("json"),
            "{\"still_parked\":2,\"released\":0}\n"
        );
    }
}
