//! The documents cannot promise what the code does not have: every command,
//! subcommand and flag of `writer`, `projector` and `stack` that README.md and
//! docs/*.md name exists (read from each binary's clap help, not from a list
//! kept by hand), every metric they name is registered by the code, every test
//! they name exists, and every file path they name is in the tree.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`).

#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One command of a CLI as its `--help` describes it.
#[derive(Debug, Default)]
struct Node {
    subcommands: BTreeMap<String, Node>,
    /// Long flags, with whether each takes a value.
    flags: BTreeMap<String, bool>,
}

/// Reads `binary [path...] --help` and, recursively, every subcommand's.
fn describe(binary: &Path, path: &[String]) -> Node {
    let out = Command::new(binary)
        .args(path)
        .arg("--help")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {} --help: {e}", binary.display()));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {} --help failed: {}",
        binary.display(),
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut node = Node::default();
    let mut section = "";
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        let trimmed = line.trim_start();
        match section {
            "Commands:" if line.starts_with("  ") && !line.starts_with("   ") => {
                let name = trimmed.split_whitespace().next().unwrap_or("");
                if !name.is_empty() && name != "help" {
                    node.subcommands.insert(name.to_owned(), Node::default());
                }
            }
            "Options:" | "Arguments:" => {
                for word in trimmed.split_whitespace() {
                    let word = word.trim_end_matches(',');
                    if let Some(flag) = word.strip_prefix("--") {
                        let (name, inline_value) = match flag.split_once('=') {
                            Some((n, _)) => (n, true),
                            None => (flag, false),
                        };
                        let takes_value = inline_value
                            || trimmed
                                .split_once(word)
                                .is_some_and(|(_, rest)| rest.trim_start().starts_with('<'));
                        node.flags.insert(name.to_owned(), takes_value);
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    let names: Vec<String> = node.subcommands.keys().cloned().collect();
    for name in names {
        let mut sub_path = path.to_vec();
        sub_path.push(name.clone());
        node.subcommands.insert(name, describe(binary, &sub_path));
    }
    node
}

fn repo() -> PathBuf {
    stack::repo_root()
}

fn documents() -> Vec<(String, String)> {
    let mut files = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            files.push(entry.path());
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f.strip_prefix(repo()).unwrap().display().to_string();
            (name, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

/// Inline code spans of `text`, and the lines of shell blocks (```sh) and
/// of `$ ` prompts in any block: the places a document shows a command.
fn code_fragments(text: &str) -> Vec<String> {
    let mut fragments = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(fence.trim().to_owned()),
            };
            continue;
        }
        match &block {
            Some(lang) => {
                if let Some(command) = line.trim_start().strip_prefix("$ ") {
                    fragments.push(command.to_owned());
                } else if lang == "sh" || lang == "bash" {
                    fragments.push(line.to_owned());
                }
            }
            None => {
                let mut parts = line.split('`');
                parts.next();
                while let (Some(code), rest) = (parts.next(), parts.next()) {
                    fragments.push(code.to_owned());
                    if rest.is_none() {
                        break;
                    }
                }
            }
        }
    }
    fragments
}

/// Words of a shell command line, up to the first operator or comment;
/// quoted strings count as one word.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    started = true;
                }
                ' ' | '\t' => {
                    if started || !current.is_empty() {
                        words.push(std::mem::take(&mut current));
                        started = false;
                    }
                }
                '|' | ';' | '&' | '>' | '<' | '#' | '(' | ')' => break,
                _ => current.push(c),
            },
        }
    }
    if started || !current.is_empty() {
        words.push(current);
    }
    words
}

/// The binary a command line runs and its arguments, if it runs one of ours.
fn our_command(line: &str) -> Option<(String, Vec<String>)> {
    let mut w = words(line);
    loop {
        match w.first().map(String::as_str) {
            Some("cargo") if w.get(1).map(String::as_str) == Some("run") => {
                if w.iter().any(|x| x == "--example") {
                    return None; // an example program, not one of the binaries
                }
                let package = w.iter().position(|x| x == "-p")?;
                let binary = w.get(package + 1)?.clone();
                let args = match w.iter().position(|x| x == "--") {
                    Some(i) => w[i + 1..].to_vec(),
                    None => Vec::new(),
                };
                return Some((binary, args));
            }
            Some("docker") => {
                // docker compose run [--rm] [--no-deps] [-e X=Y] SERVICE [binary] args
                let run = w.iter().position(|x| x == "run")?;
                let mut i = run + 1;
                while i < w.len() && w[i].starts_with('-') {
                    i += if w[i] == "-e" { 2 } else { 1 };
                }
                let service = w.get(i)?.clone();
                let rest = w[i + 1..].to_vec();
                return match service.as_str() {
                    "writer" => Some(("writer".into(), rest)),
                    "operator" => Some(("projector".into(), rest)),
                    "projector" => match rest.split_first() {
                        Some((b, args)) if b == "projector" => {
                            Some(("projector".into(), args.to_vec()))
                        }
                        _ => None,
                    },
                    _ => None,
                };
            }
            Some(first) if first.contains('=') && !first.starts_with('-') => {
                w.remove(0); // VAR=value before the command
            }
            Some(first) => {
                let name = first.rsplit('/').next().unwrap_or(first);
                let ours = ["writer", "projector", "stack"].contains(&name)
                    && (first == name || first.starts_with("target/"));
                return ours.then(|| (name.to_owned(), w[1..].to_vec()));
            }
            None => return None,
        }
    }
}

/// Why `args` are not a command line of `root`, if they are not.
fn check_args(binary: &str, root: &Node, args: &[String]) -> Option<String> {
    let mut node = root;
    let mut path = vec![binary.to_owned()];
    let mut i = 0;
    let mut globals: BTreeMap<String, bool> = root.flags.clone();
    while i < args.len() {
        let arg = &args[i];
        if arg.contains("...") || arg.contains('…') || arg.starts_with('{') || arg == "\\" {
            return None; // an elided or templated command: nothing more to check
        }
        if let Some(flag) = arg.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or(flag);
            if name.is_empty() {
                break; // `--`: the rest belongs to another program
            }
            let takes = node.flags.get(name).or_else(|| globals.get(name));
            match takes {
                None => return Some(format!("`{}` has no flag --{name}", path.join(" "))),
                Some(true) if !flag.contains('=') => i += 2,
                Some(_) => i += 1,
            }
            continue;
        }
        if arg.starts_with('-') {
            i += 1;
            continue;
        }
        if node.subcommands.is_empty() {
            return None; // a positional argument of a leaf command
        }
        match node.subcommands.get(arg) {
            Some(sub) => {
                node = sub;
                path.push(arg.clone());
                globals.extend(node.flags.iter().map(|(k, v)| (k.clone(), *v)));
            }
            None => {
                return Some(format!(
                    "`{}` has no subcommand {arg:?} (it has: {})",
                    path.join(" "),
                    node.subcommands
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        i += 1;
    }
    None
}

#[test]
fn documents_name_only_commands_and_flags_the_binaries_define() {
    let bins = stack::default_bin_dir();
    let clis: BTreeMap<&str, Node> = ["writer", "projector", "stack"]
        .into_iter()
        .map(|b| (b, describe(&bins.join(b), &[])))
        .collect();
    assert!(
        clis["stack"].subcommands.contains_key("chaos")
            && clis["writer"].subcommands.contains_key("order"),
        "the help was read: {:?}",
        clis["stack"].subcommands.keys().collect::<Vec<_>>()
    );
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (doc, text) in documents() {
        for fragment in code_fragments(&text) {
            let Some((binary, args)) = our_command(&fragment) else {
                continue;
            };
            let Some(cli) = clis.get(binary.as_str()) else {
                continue;
            };
            checked += 1;
            if let Some(why) = check_args(&binary, cli, &args) {
                wrong.push(format!("{doc}: {fragment:?}: {why}"));
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} command lines found in the documents"
    );
    assert!(
        wrong.is_empty(),
        "documents name what the CLIs lack:\n{}",
        wrong.join("\n")
    );
}

/// Every `*.rs` file of the workspace's crates.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    for krate in [
        "events",
        "service",
        "consumer",
        "writer",
        "projector",
        "inventory",
        "stack",
    ] {
        walk(&repo().join(krate), &mut out);
    }
    out
}

/// Identifier-like words of `text` (letters, digits, `_`).
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

#[test]
fn documents_name_only_metrics_the_code_registers() {
    let prefixes = [
        "projector_",
        "reactor_",
        "outbox_reconcile_",
        "outbox_slot_",
        "outbox_relay_",
    ];
    // Names the code spells as string literals (what the exporters register).
    let mut registered = BTreeSet::new();
    for (_, source) in sources() {
        for literal in source.split('"').skip(1).step_by(2) {
            if prefixes.iter().any(|p| literal.starts_with(p))
                && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                registered.insert(literal.to_owned());
            }
        }
    }
    // Tables and columns share the prefix (consumer_runs): not metrics.
    let mut schema = BTreeSet::new();
    for dir in ["sql/read", "sql/write", "sql/inventory", "sql/consumer"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap().flatten() {
            let sql = std::fs::read_to_string(entry.path()).unwrap();
            schema.extend(identifiers(&sql).map(str::to_owned));
        }
    }
    assert!(
        registered.contains("projector_events_applied_total"),
        "{registered:?}"
    );
    let mut wrong = BTreeSet::new();
    for (doc, text) in documents() {
        for word in identifiers(&text) {
            // A family named by its prefix (`outbox_reconcile_*`) is no metric.
            if !prefixes.iter().any(|p| word.starts_with(p))
                || word.ends_with('_')
                || schema.contains(word)
            {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s).filter(|b| registered.contains(*b)))
                .unwrap_or(word);
            if !registered.contains(base) {
                wrong.insert(format!("{doc}: {word}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "documents name metrics the code does not register: {wrong:#?}"
    );
}

#[test]
fn documents_name_only_tests_and_files_that_exist() {
    let sources = sources();
    let functions: BTreeSet<String> = sources
        .iter()
        .flat_map(|(_, s)| {
            s.lines()
                .filter_map(|l| {
                    l.trim_start()
                        .strip_prefix("async fn ")
                        .or_else(|| l.trim_start().strip_prefix("fn "))
                })
                .filter_map(|rest| rest.split(['(', '<']).next())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let roots = [
        "writer/",
        "projector/",
        "stack/",
        "service/",
        "events/",
        "sql/",
        "debezium/",
        "docs/",
        "dev/",
        "bench/",
        ".ci/",
    ];
    let mut wrong = Vec::new();
    for (doc, text) in documents() {
        for fragment in code_fragments(&text) {
            let fragment = fragment.trim();
            // A test: a long snake_case name (four or more words joined).
            if fragment
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && fragment.matches('_').count() >= 5
                && !fragment.starts_with("projector_")
                && !fragment.starts_with("reactor_")
                && !fragment.starts_with("outbox_")
                && !functions.contains(fragment)
            {
                wrong.push(format!("{doc}: no test or function named {fragment}"));
            }
            // A path in the tree: `dir/file.ext`, maybe with `:line` or `::item`.
            for word in fragment.split_whitespace() {
                let word = word
                    .trim_start_matches(['(', '`'])
                    .trim_end_matches([',', '.', ')', '`', ';', ':']);
                if !roots.iter().any(|r| word.starts_with(r)) || word.contains(['*', '{', '<', '$'])
                {
                    continue;
                }
                let path = word.split("::").next().unwrap_or(word);
                let path = path.split(':').next().unwrap_or(path);
                if !repo().join(path).exists() {
                    wrong.push(format!("{doc}: no file {path}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "documents name what the tree lacks:\n{}",
        wrong.join("\n")
    );
}

/// The measured figures of a document: numbers with a unit of measurement
/// (`1,390 events/s`, `2.61×`, `898 ms`, `17.2 s`, `437 MB`, `40 %`) in its
/// plain prose, i.e. outside code spans and fenced blocks (where settings
/// and command output are quoted literally) and outside generated sections
/// (between `<!-- ...begin/start -->` and `<!-- ...end -->` markers).
/// Returns (figures in prose with their line, text of the generated sections
/// and fenced command output, where figures may be quoted from).
fn figures(text: &str) -> (Vec<(usize, String)>, String) {
    let unit = regex::Regex::new(
        r"(?:^|[^\w.,])(\d[\d,]*(?:\.\d+)?)\s?(events/s|ms|s|×|%|MB|GB|GiB|CPU-seconds|tps|min)(?:[^\w]|$)",
    )
    .unwrap();
    let mut prose = Vec::new();
    let mut generated = String::new();
    let mut in_generated = false;
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("<!--") && (line.contains("begin") || line.contains(":start")) {
            in_generated = true;
            continue;
        }
        if trimmed.starts_with("<!--") && line.contains("end -->") {
            in_generated = false;
            continue;
        }
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_generated || in_fence {
            generated.push_str(line);
            generated.push('\n');
            continue;
        }
        // Code spans quote settings and commands, not measurements.
        let plain: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        for m in unit.captures_iter(&plain) {
            prose.push((n + 1, format!("{} {}", &m[1], &m[2])));
        }
    }
    (prose, generated)
}

/// Figures in the benchmark and reliability documents are written by the
/// commands that measure them (between markers, or as quoted command output):
/// the prose around them names none that those do not print. The number is
/// looked up without its thousands separators and unit spacing.
#[test]
fn documents_quote_measured_figures_only_from_what_the_commands_wrote() {
    let normalize = |s: &str| s.replace(',', "");
    let number = regex::Regex::new(r"\d[\d,]*(?:\.\d+)?").unwrap();
    let mut wrong = Vec::new();
    for doc in ["docs/benchmarks.md", "docs/reliability.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        let (prose, generated) = figures(&text);
        // Every number the generated parts print, as written there.
        let printed: BTreeSet<String> = number
            .find_iter(&generated)
            .map(|m| normalize(m.as_str()))
            .collect();
        for (line, figure) in prose {
            let value = normalize(figure.split(' ').next().unwrap());
            if !printed.contains(&value) {
                wrong.push(format!("{doc}:{line}: {figure}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "figures in prose that no generated section or command output prints \
         (quote them from it, or write them with the command that measures them): {wrong:#?}"
    );
}
