//! `writer`: thin entry point; see the library for the design. Parses the
//! arguments, runs the command ([`writer::app::run`]), prints its output or
//! its failure, and exits 0, 1 (failure) or 2 (refused input).
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use writer::app::{self, EXIT_REFUSED};
use writer::cli::{Cli, TopCommand};

fn main() -> ExitCode {
    // One thread for one command (no cross-thread wake-ups on its round
    // trips); two workers when `writer load` drives many clients.
    // The order reactor is a long-running consumer: two workers as well.
    let many_clients = matches!(
        Cli::try_parse().map(|c| c.command),
        Ok(TopCommand::Load(ref args)) if args.clients > 1
    ) || matches!(
        Cli::try_parse().map(|c| c.command),
        Ok(TopCommand::React { command: None })
    );
    let runtime = if many_clients {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    // Held to the end: dropping it flushes the spans still to be exported.
    let react = matches!(
        Cli::try_parse().map(|c| c.command),
        Ok(TopCommand::React { command: None })
    );
    let _telemetry = if react {
        service::telemetry::init(writer::react::SERVICE, "info,rdkafka=warn")
    } else {
        service::telemetry::init("writer", "warn")
    };
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
    match app::run(&cli).await {
        Ok(output) => {
            // The command has committed: a closed stdout (`| head -1`) must not
            // turn that into a failure exit code.
            let _ = writeln!(std::io::stdout(), "{output}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if let Some(output) = failure.stdout(cli.json) {
                let _ = writeln!(std::io::stdout(), "{output}");
            }
            eprintln!("{}", failure.stderr());
            ExitCode::from(failure.exit_code())
        }
    }
}
