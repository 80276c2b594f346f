//! The one place that runs programs for the stack: the project's own
//! binaries (`writer`, `projector`, `inventory`) with this stack's settings, and any
//! command quietly. A failed command is reported by its program and
//! arguments only: never with its environment, where passwords travel.

use std::process::Command;

use crate::{io_err, Result, Stack, StackError, READ_DB, WRITE_DB};

/// Runs `command`; its stdout on success, its stderr in the error otherwise.
pub fn run_quiet(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .map_err(io_err(format!("running {}", describe(command))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(StackError::Command {
            command: describe(command),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Program and arguments, without the environment.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A binary of the workspace, or an error that says how to build it.
fn binary(stack: &Stack, name: &str) -> Result<std::path::PathBuf> {
    let path = stack.bin_dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(StackError::NotInstalled(format!(
            "{} (build it: cargo build{} --workspace --bins)",
            path.display(),
            if stack.bin_dir.ends_with("release") {
                " --release"
            } else {
                ""
            }
        )))
    }
}

/// `writer` with this stack's settings (the writer role).
pub fn writer_command(stack: &Stack) -> Result<Command> {
    let mut command = writer_binary(stack)?;
    command.arg("--config").arg(stack.writer_config());
    Ok(command)
}

/// `writer` without settings (`writer react` takes the reactor's).
pub fn writer_binary(stack: &Stack) -> Result<Command> {
    Ok(Command::new(binary(stack, "writer")?))
}

/// `inventory` with this stack's settings (the inventory's role).
pub fn inventory_command(stack: &Stack) -> Result<Command> {
    let mut command = Command::new(binary(stack, "inventory")?);
    command.arg("--config").arg(stack.inventory_config());
    Ok(command)
}

/// Runs `inventory` with `args` (e.g. `stock set SKU --quantity N`); its stdout.
pub fn inventory(stack: &Stack, args: &[&str]) -> Result<String> {
    run_quiet(inventory_command(stack)?.args(args))
}

/// Runs the inventory as the owner role (migrations).
pub fn inventory_as_owner(stack: &Stack, args: &[&str]) -> Result<String> {
    let owner = stack.db(crate::INVENTORY_DB);
    run_quiet(
        inventory_command(stack)?
            .args(args)
            .env("INVENTORY__DATABASE__USER", &owner.user)
            .env("INVENTORY__DATABASE__PASSWORD", &owner.password),
    )
}

/// Runs the writer with `args`; its stdout, or its stderr as the error.
pub fn writer(stack: &Stack, args: &[&str]) -> Result<String> {
    let mut command = writer_command(stack)?;
    let out = command
        .args(args)
        .output()
        .map_err(io_err("running the writer"))?;
    if !out.status.success() {
        return Err(StackError::Command {
            command: format!("writer {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the writer as the owner role (migrations).
pub fn writer_as_owner(stack: &Stack, args: &[&str]) -> Result<String> {
    let owner = stack.db(WRITE_DB);
    run_quiet(
        writer_command(stack)?
            .args(args)
            .env("WRITER__DATABASE__USER", &owner.user)
            .env("WRITER__DATABASE__PASSWORD", &owner.password),
    )
}

/// The projector binary as the owner role, with this stack's settings.
pub fn projector_as_owner(stack: &Stack) -> Command {
    let owner = stack.db(READ_DB);
    let mut command = Command::new(stack.bin_dir.join("projector"));
    command
        .arg("--config")
        .arg(stack.projector_config())
        .env("PROJECTOR__DATABASE__USER", &owner.user)
        .env("PROJECTOR__DATABASE__PASSWORD", &owner.password);
    command
}

/// The projector binary with this stack's settings (its own role).
pub fn projector_command(stack: &Stack) -> Result<Command> {
    let mut command = Command::new(binary(stack, "projector")?);
    command.arg("--config").arg(stack.projector_config());
    Ok(command)
}
