//! `writer`: thin entry point; see the library for the design.
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use writer::cli::{self, Cli, OrderCommand, TopCommand};
use writer::settings::Settings;
use writer::store::{self, StoreError};

/// Exit code for input the writer refuses (bad values or a forbidden transition).
const EXIT_REFUSED: u8 = 2;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    service::init_tracing("warn");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One clear line; `--help` has the rest.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{} (see --help)", first.trim());
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match run(&cli).await {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(message)) => {
            if cli.json {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("error: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(Failure::Infrastructure(error)) => {
            eprintln!("error: {error:#}");
            eprintln!("hint: is the write database up and migrated? (`cargo run -p stack -- status`, `writer migrate`)");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Refused(String),
    Infrastructure(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Infrastructure(e)
    }
}

async fn run(cli: &Cli) -> Result<String, Failure> {
    // Validate before touching the database: bad input never opens a connection.
    let command = match &cli.command {
        TopCommand::Order(order) => {
            cli::to_command(order).map_err(|e| Failure::Refused(e.to_string()))?
        }
        TopCommand::Migrate => None,
    };
    let settings = Settings::load(cli.config.as_deref()).context("loading writer settings")?;
    let db = &settings.database;
    let (mut client, connection) = db
        .pg_config()
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to the write database at {}", db.describe()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "write database connection closed");
        }
    });

    match (&cli.command, command) {
        (TopCommand::Migrate, _) => {
            let applied = writer::migrate(&mut client)
                .await
                .context("migrating the write database")?;
            Ok(format!(
                "write database migrated ({applied} new migrations)"
            ))
        }
        (TopCommand::Order(OrderCommand::Show { order_id }), _) => {
            let order = store::find_order(&client, *order_id)
                .await
                .context("reading the order")?
                .ok_or_else(|| Failure::Refused(format!("order {order_id} does not exist")))?;
            Ok(cli::render_order(&order, cli.json))
        }
        (TopCommand::Order(_), Some(command)) => {
            let traceparent = std::env::var("TRACEPARENT").ok();
            match store::execute(&mut client, &command, traceparent.as_deref()).await {
                Ok(committed) => Ok(cli::render_committed(&committed, cli.json)),
                Err(StoreError::Rejected(r)) => Err(Failure::Refused(r.to_string())),
                Err(e) => Err(Failure::Infrastructure(
                    anyhow::Error::new(e).context("running the command"),
                )),
            }
        }
        (TopCommand::Order(_), None) => Err(Failure::Refused("nothing to do".into())),
    }
}
