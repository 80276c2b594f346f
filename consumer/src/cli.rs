//! The dead-letter commands every consuming service offers (`projector
//! dead-letters …`, `inventory dead-letters …`, `writer react dead-letters
//! …`): one clap definition and one dispatcher, each binary supplying its
//! handler, so a replay applies through the same code as its running loop.

use clap::Subcommand;

use crate::dead_letter_report as report;
use crate::handler::Handler;
use crate::operator::Page;
use crate::record::Decoder;
use crate::worker::Db;

/// What an operator does with a service's dead letters.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterCommand {
    /// Open dead letters, with the events parked behind each.
    List {
        /// Include replayed and discarded ones.
        #[arg(long)]
        all: bool,
        /// Show at most this many (in id order).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Start after this dead letter id (the last one of the previous page).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// One dead letter with its record exactly as it arrived.
    Show { id: i64 },
    /// Apply again with this build's decoder, then the parked events behind it.
    Replay {
        /// The dead letter to replay.
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Replay every open dead letter, oldest first.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Give up on a dead letter, recording why.
    Discard {
        id: i64,
        #[arg(long)]
        reason: String,
        /// Also move the aggregate past this version and apply what is parked
        /// behind it (the discarded event's effect is lost on purpose).
        #[arg(long)]
        skip_version: bool,
    },
}

/// Runs `command` against the service's database, printing as it goes.
pub async fn dead_letters<H: Handler>(
    client: &mut Db,
    handler: &H,
    decoder: &Decoder,
    command: DeadLetterCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List { all, limit, after } => {
            print!(
                "{}",
                report::list(&**client, all, Page { after, limit }, json).await?
            );
        }
        DeadLetterCommand::Show { id } => print!("{}", report::show(&**client, id, json).await?),
        // `--all` (no id): every open one.
        DeadLetterCommand::Replay { id, all: _ } => {
            report::replay(client, handler, decoder, id, json, |line| print!("{line}")).await?;
        }
        DeadLetterCommand::Discard {
            id,
            reason,
            skip_version,
        } => print!(
            "{}",
            report::discard(client, handler, decoder, id, &reason, skip_version, json).await?
        ),
    }
    Ok(())
}
