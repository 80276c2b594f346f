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

/// When process `pid` started (clock ticks since boot, `/proc/PID/stat`
/// field 22): with the pid, it names one process for the life of the system.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Writes a pid file naming `pid` and its start time.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let started = start_time(pid).unwrap_or(0);
    fs::write(path, format!("{pid} {started}\n")).map_err(io_err("writing pid file"))
}

/// The pid a pid file names, if that process still runs and is the one that
/// was started (same start time): a pid the system has since given to
/// another process is never signalled. A file without a start time (or
/// unreadable) names nothing.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok()?;
    let started: u64 = fields.next()?.parse().ok()?;
    (is_alive(pid) && start_time(pid) == Some(started)).then_some(pid)
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
                if let Some(pid) = read_pid_file(&pid_file.path()) {
                    kill_group(pid);
                }
            }
        }
        let _ = crate::state::remove_stack_files(&entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_names_only_the_process_that_was_started() {
        let dir = std::env::temp_dir().join(format!("pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let file = dir.join("unit.pid");
        write_pid_file(&file, pid).unwrap();
        assert_eq!(read_pid_file(&file), Some(pid));
        // The same pid with another start time: a pid reused by another process.
        let started = start_time(pid).unwrap();
        fs::write(&file, format!("{pid} {}\n", started + 1)).unwrap();
        assert_eq!(read_pid_file(&file), None);
        // A bare pid (no start time) cannot be checked: it names nothing.
        fs::write(&file, format!("{pid}\n")).unwrap();
        assert_eq!(read_pid_file(&file), None);
        assert!(is_alive(pid), "nothing was signalled");
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
