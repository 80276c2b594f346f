//! Where `dev/install` puts the stack's tools: `$OUTBOX_CACHE`, by default
//! `~/.cache/outbox-cdc`, outside the repository so clean clones reuse them.
//! The JVM parts come from Maven Central through the poms in `stack/jvm/`:
//! `jvm/kafka/` (the broker and Connect's runtime, one classpath) and
//! `jvm/plugins/debezium-postgres/` (the connector, on Connect's plugin.path).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_quiet, Result, StackError};

pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OUTBOX_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/outbox-cdc")
}

fn installed(path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.join(".installed").exists() {
        Ok(path)
    } else {
        Err(StackError::NotInstalled(format!(
            "{what} ({})",
            path.display()
        )))
    }
}

/// Classpath of Apache Kafka and Kafka Connect (`libs/*` as Java expands it).
pub fn kafka_classpath() -> Result<String> {
    let dir = installed(
        cache_dir().join("jvm/kafka"),
        "Apache Kafka + Kafka Connect",
    )?;
    Ok(format!("{}/*", dir.display()))
}

/// Connect's `plugin.path`: a folder with one folder per plugin.
pub fn connect_plugin_path() -> Result<PathBuf> {
    installed(
        cache_dir().join("jvm/plugins/debezium-postgres"),
        "the Debezium PostgreSQL connector",
    )?;
    Ok(cache_dir().join("jvm/plugins"))
}

/// `java` with the stack's log4j2 settings and a heap limit.
pub fn java_command(repo: &Path, heap: &str) -> Result<Command> {
    let mut command = Command::new("java");
    command
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            repo.join("debezium/log4j2.properties").display()
        ))
        .arg(heap)
        // Up to five JVMs share two cores with PostgreSQL and the services,
        // and the chaos suite restarts them dozens of times: the serial
        // collector (no GC threads beside the application's; the heaps are
        // small) and the client compiler only (C1: a fraction of C2's
        // start-up CPU, for slower steady-state code) keep a restart short
        // (a three-node cluster back in 19 s instead of 27 s, Connect in 17 s
        // instead of 20 s, measured on an idle machine).
        .arg("-XX:+UseSerialGC");
    if std::env::var_os("OUTBOX_JVM_FULL_JIT").is_none() {
        command.arg("-XX:TieredStopAtLevel=1");
    }
    Ok(command)
}

/// Runs a short-lived Java tool (e.g. Kafka's StorageTool) to completion.
pub fn run_java(classpath: String, main: &str, args: &[&str]) -> Result<String> {
    run_quiet(
        Command::new("java")
            .arg("-Xmx256m")
            .arg("-cp")
            .arg(classpath)
            .arg(main)
            .args(args),
    )
}

/// [`run_java`] for arguments that hold secrets: they go in `args_file`
/// (0600, removed afterwards), which the `java` launcher expands (`@file`),
/// so no secret appears on a command line.
pub fn run_java_private(
    classpath: String,
    main: &str,
    args: &[String],
    args_file: &Path,
) -> Result<String> {
    // The launcher's argument files: one argument per line, in double
    // quotes, with backslashes and quotes escaped.
    let quote = |a: &str| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""));
    let text: Vec<String> = ["-Xmx256m", "-cp", &classpath, main]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect();
    crate::state::write_private(args_file, &text.join("\n"))?;
    let result = run_quiet(Command::new("java").arg(format!("@{}", args_file.display())));
    let _ = std::fs::remove_file(args_file);
    result
}

/// A version pinned in one of the poms of `stack/jvm/` (`kafka/pom.xml`,
/// `kafka.version`): the one source of the JVM versions, for reports.
pub fn pinned_version(repo: &Path, pom: &str, property: &str) -> Option<String> {
    let text = std::fs::read_to_string(repo.join("stack/jvm").join(pom)).ok()?;
    let open = format!("<{property}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find('<')?;
    Some(text[start..end].trim().to_owned())
}
