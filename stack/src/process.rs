//! Process plumbing: detached spawn with a log file, liveness, signals, waiting.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::{io_err, Result};

/// Spawns `command` in its own process group with stdout and stderr appended
/// to `log`; returns its pid. A thread reaps it when it exits, so a killed
/// child never lingers as a zombie that still looks alive.
pub fn spawn_detached(mut command: Command, log: &Path) -> Result<i32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("cloning log handle"))?;
    let mut child = command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io_err(format!("starting {:?}", command.get_program())))?;
    let pid = child.id() as i32;
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

pub fn is_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// SIGKILL to the whole process group: the closest thing to pulling the plug.
pub fn kill_group(pid: i32) {
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        !is_alive(pid)
    });
}

/// Asks a process to stop with `signal`, waits up to `grace`, then kills its group.
pub fn stop(pid: i32, signal: Signal, grace: Duration) {
    let _ = kill(Pid::from_raw(pid), signal);
    if !wait_until(grace, Duration::from_millis(100), || !is_alive(pid)) {
        kill_group(pid);
    }
}

/// Signals every process of `pids` at once, waits up to `grace` for all,
/// then kills the groups of those still alive.
pub fn stop_all(pids: &[i32], signal: Signal, grace: Duration) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
    wait_until(grace, Duration::from_millis(100), || {
        pids.iter().all(|p| !is_alive(*p))
    });
    for pid in pids.iter().filter(|p| is_alive(**p)) {
        kill_group(*pid);
    }
}

/// Polls `ready` every `interval` until it returns true (then `true`) or
/// `deadline` passes (then `false`).
pub fn wait_until(deadline: Duration, interval: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// Kills the processes of test stacks whose test run (the pid in the
/// directory name) is gone, and removes their directories.
pub fn reap_stale_test_stacks(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.rsplit('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if is_alive(owner) {
            continue;
        }
        if let Ok(pids) = fs::read_dir(entry.path().join("run")) {
            for pid_file in pids.flatten() {
                if let Some(pid) = fs::read_to_string(pid_file.path())
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    kill_group(pid);
                }
            }
        }
        let _ = crate::state::remove_stack_files(&entry.path());
    }
}
