//! Ports for a stack's listeners: chosen once, claimed machine-wide.
//!
//! Why not `bind("127.0.0.1:0")` and let go: the kernel hands those out
//! from its ephemeral range (`net.ipv4.ip_local_port_range`), the range every
//! outgoing connection's local port comes from too. A stack keeps a port
//! unbound from the moment it is chosen until its component first starts
//! (minutes, when a broker starts only after the migrations), and in that
//! window any client socket of any process may take it: a CI run saw a
//! broker fail with "Address already in use" while a dozen test stacks were
//! busy. So ports come from below the ephemeral range, where only listeners
//! that name their port land, and each is claimed by a file in a registry
//! folder so that two stacks created at the same moment never share one.
//!
//! # Layout
//! - The registry is `$TMPDIR/outbox-stack-ports-<uid>/`: one file per
//!   claimed port, holding the owner stack's directory, and a `lock` file
//!   whose `flock` serialises every claim and release.
//! - A claim whose owner directory no longer exists is stale and is dropped
//!   at the next claim (test stacks in deleted temporary folders).
//! - A port is claimed only if it also binds right now (a listener of
//!   something else, or another user's stack, holds it otherwise).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

use crate::{io_err, Result, StackError};

/// The lowest port handed out: above the registered services most machines
/// run (PostgreSQL's 5432, Kafka's 9092, 8083, …).
const LOWEST: u16 = 20_000;

/// Where the kernel starts its ephemeral range when it does not say.
const DEFAULT_EPHEMERAL_LOW: u16 = 32_768;

/// Claims `n` distinct ports for the stack in `owner`. With `fresh`, the
/// owner's earlier claims are released first (a new stack in that folder).
pub(crate) fn claim(owner: &Path, n: usize, fresh: bool) -> Result<Vec<u16>> {
    let registry = Registry::open()?;
    let _lock = registry.lock()?;
    let claims = registry.claims()?;
    for (port, holder) in &claims {
        if !holder.exists() || (fresh && holder == owner) {
            registry.release(*port)?;
        }
    }
    let taken: std::collections::HashSet<u16> = registry.claims()?.into_keys().collect();
    let (low, high) = (LOWEST, ephemeral_low());
    if high <= low + 1_000 {
        return Err(StackError::Config(format!(
            "the kernel's ephemeral ports start at {high} (net.ipv4.ip_local_port_range): \
             too few ports from {low} on are left for stacks; raise its lower bound"
        )));
    }
    // Held until every port is picked: each binds now and none repeats.
    let mut held: Vec<(u16, TcpListener)> = Vec::with_capacity(n);
    let mut rng = rand::rng();
    let mut tries = 0;
    while held.len() < n {
        tries += 1;
        if tries > 10_000 {
            return Err(StackError::Config(format!(
                "no {n} free ports between {low} and {high} after 10000 tries; \
                 `stack down --purge` stacks no longer needed"
            )));
        }
        let port = rng.random_range(low..high);
        if taken.contains(&port) || held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    for (port, _) in &held {
        registry.write(*port, owner)?;
    }
    Ok(held.into_iter().map(|(port, _)| port).collect())
}

/// Releases every port the stack in `owner` claimed.
pub(crate) fn release_all(owner: &Path) -> Result<()> {
    let registry = Registry::open()?;
    let _lock = registry.lock()?;
    for (port, holder) in registry.claims()? {
        if holder == owner {
            registry.release(port)?;
        }
    }
    Ok(())
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

struct Registry {
    dir: PathBuf,
}

impl Registry {
    fn open() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "outbox-stack-ports-{}",
            nix::unistd::Uid::effective()
        ));
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(Self { dir })
    }

    fn lock(&self) -> Result<Flock<fs::File>> {
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            io_err(format!("locking {}", path.display()))(std::io::Error::from(errno))
        })
    }

    /// Every claim: port → owner directory.
    fn claims(&self) -> Result<std::collections::HashMap<u16, PathBuf>> {
        let what = || format!("reading {}", self.dir.display());
        let mut claims = std::collections::HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(what()))? {
            let entry = entry.map_err(io_err(what()))?;
            let Some(port) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let owner = fs::read_to_string(entry.path()).map_err(io_err(what()))?;
            claims.insert(port, PathBuf::from(owner));
        }
        Ok(claims)
    }

    fn write(&self, port: u16, owner: &Path) -> Result<()> {
        let path = self.dir.join(port.to_string());
        fs::write(&path, owner.as_os_str().as_encoded_bytes())
            .map_err(io_err(format!("writing {}", path.display())))
    }

    fn release(&self, port: u16) -> Result<()> {
        let path = self.dir.join(port.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", path.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_distinct_below_the_ephemeral_range_and_released_with_their_stack() {
        let a = std::env::temp_dir().join(format!("ports-test-a-{}", uuid::Uuid::new_v4()));
        let b = std::env::temp_dir().join(format!("ports-test-b-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let first = claim(&a, 40, true).unwrap();
        let second = claim(&b, 40, true).unwrap();
        let mut all: Vec<u16> = first.iter().chain(&second).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 80, "no port is claimed twice");
        assert!(all.iter().all(|p| (LOWEST..ephemeral_low()).contains(p)));
        let registry = Registry::open().unwrap();
        let owned = |dir: &Path| {
            let claims = registry.claims().unwrap();
            claims.values().filter(|o| o.as_path() == dir).count()
        };
        assert_eq!(owned(&a), 40);
        release_all(&a).unwrap();
        assert_eq!(owned(&a), 0);
        // A claim whose stack folder is gone is dropped by the next claim.
        fs::remove_dir_all(&b).unwrap();
        assert_eq!(owned(&b), 40);
        let c = std::env::temp_dir().join(format!("ports-test-c-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&c).unwrap();
        claim(&c, 1, true).unwrap();
        assert_eq!(owned(&b), 0);
        release_all(&c).unwrap();
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&c).unwrap();
    }
}
