//! `docker-compose.yml` runs the same system as the local stack (`stack/`).
//!
//! The local stack takes its Kafka and Debezium versions from `stack/jvm/kafka/pom.xml` and
//! `stack/jvm/debezium/pom.xml` (resolved by `dev/install`), its Connect worker settings from
//! `debezium/connect-distributed.properties` and its broker settings from
//! `stack::kafka::NodeSettings`. These tests read compose's files (`docker-compose.yml`,
//! `debezium/Dockerfile.connect`, `debezium/connect-entrypoint.sh`) and fail when the two stacks
//! drift apart:
//! - compose's `apache/kafka` image is the pom's Kafka release;
//! - compose's Connect image resolves its jars from the same two poms with `dev/install`'s Maven
//!   arguments (so Debezium's version is the pom's by construction), on the same Java major;
//! - both stacks run the shared worker file (exactly-once source), each appending only its own
//!   deployment's keys, and the connector requires exactly-once;
//! - the broker settings compose sets agree with the local stack's.
//!
//! Static: no Docker, no stack, no network. Every failure names the file to change. The workspace
//! has no YAML crate, so `docker-compose.yml` is read line by line: services at two spaces of
//! indent, their keys at four, maps and lists below at six (the file's layout).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use stack::connect::WorkerSettings;
use stack::kafka::{NodeSettings, PARTITIONS};
use stack::state::{Shape, StackState};
use stack::Stack;

const COMPOSE: &str = "docker-compose.yml";
const CONNECT_DOCKERFILE: &str = "debezium/Dockerfile.connect";
const ENTRYPOINT: &str = "debezium/connect-entrypoint.sh";
const WORKER_FILE: &str = "debezium/connect-distributed.properties";
const CONNECTOR: &str = "debezium/outbox-connector.json";
const KAFKA_POM: &str = "stack/jvm/kafka/pom.xml";
const DEBEZIUM_POM: &str = "stack/jvm/debezium/pom.xml";
const INSTALL: &str = "dev/install";
/// Where the Connect image keeps the shared worker file (`debezium/Dockerfile.connect`).
const WORKER_FILE_IN_IMAGE: &str = "/etc/connect/connect-distributed.properties";

#[test]
fn compose_runs_the_kafka_release_of_the_local_stack() {
    let version = pom_property(KAFKA_POM, "kafka.version");
    let services = compose_services();
    let mut kafka_services = Vec::new();
    for service in &services {
        let Some(image) = service.value("image") else {
            continue;
        };
        if let Some(tag) = image.strip_prefix("apache/kafka:") {
            assert_eq!(
                tag, version,
                "{COMPOSE}: service {} runs apache/kafka:{tag}, the local stack Kafka {version} \
                 ({KAFKA_POM}'s kafka.version): change the image tag",
                service.name
            );
            kafka_services.push(service.name.as_str());
        } else if service.value_of_map("build", "dockerfile").is_none() {
            // Any other Kafka or Debezium comes from an image the poms do not pin.
            let lower = image.to_lowercase();
            assert!(
                !lower.contains("kafka")
                    && !lower.contains("debezium")
                    && !lower.contains("confluent"),
                "{COMPOSE}: service {} runs {image}; Kafka comes from apache/kafka:{version}, \
                 Connect and Debezium from {CONNECT_DOCKERFILE}",
                service.name
            );
        }
    }
    for name in ["kafka", "kafka-init"] {
        assert!(
            kafka_services.contains(&name),
            "{COMPOSE}: service {name} must run apache/kafka:{version} (found {kafka_services:?})"
        );
    }
}

#[test]
fn compose_builds_connect_from_the_local_stacks_poms_and_java() {
    let services = compose_services();
    let connect = service(&services, "connect");
    assert_eq!(
        connect.value_of_map("build", "context").as_deref(),
        Some("."),
        "{COMPOSE}: the connect service builds with the repository root as context (the poms are in stack/jvm/)"
    );
    assert_eq!(
        connect.value_of_map("build", "dockerfile").as_deref(),
        Some(CONNECT_DOCKERFILE),
        "{COMPOSE}: the connect service must be built from {CONNECT_DOCKERFILE}"
    );
    // The tag names the versions, so a pom change makes `up` build a new image, not reuse the old.
    let kafka = pom_property(KAFKA_POM, "kafka.version");
    let debezium = pom_property(DEBEZIUM_POM, "debezium.version");
    let image = connect
        .value("image")
        .unwrap_or_else(|| panic!("{COMPOSE}: the connect service names its image"));
    assert_eq!(
        image.split_once(':').map(|(_, tag)| tag.to_owned()),
        Some(format!("debezium-{debezium}-kafka-{kafka}")),
        "{COMPOSE}: the connect image's tag must name the poms' versions ({DEBEZIUM_POM}, {KAFKA_POM})"
    );

    // The same resolution as dev/install, from the same poms: the versions are the poms'.
    let dockerfile = Dockerfile::read();
    let install = InstallResolution::read();
    let mut output_dirs = BTreeMap::new();
    for pom in [KAFKA_POM, DEBEZIUM_POM] {
        let command = dockerfile.maven_command_for(pom);
        assert!(
            command.iter().any(|t| t == "dependency:copy-dependencies"),
            "{CONNECT_DOCKERFILE}: Maven must copy {pom}'s dependencies (dependency:copy-dependencies), as {INSTALL} does"
        );
        let flags = |tokens: &[String]| -> BTreeSet<String> {
            tokens
                .iter()
                .filter(|t| {
                    t.starts_with('-') && *t != "-f" && !t.starts_with("-DoutputDirectory=")
                })
                .cloned()
                .collect()
        };
        assert_eq!(
            flags(&command),
            install.flags_for(pom),
            "{CONNECT_DOCKERFILE}: Maven's arguments for {pom} must be {INSTALL}'s (change both together)"
        );
        let output = command
            .iter()
            .find_map(|t| t.strip_prefix("-DoutputDirectory="))
            .unwrap_or_else(|| {
                panic!("{CONNECT_DOCKERFILE}: the Maven command for {pom} names -DoutputDirectory")
            })
            .to_owned();
        assert!(
            dockerfile.copied_from_build_stage(&output),
            "{CONNECT_DOCKERFILE}: the runtime stage must COPY --from the resolving stage what {pom} resolved ({output})"
        );
        output_dirs.insert(pom, output);
    }
    // The worker runs exactly those folders: libs/ on the classpath, the plugin under plugin.path.
    let entrypoint = read(ENTRYPOINT);
    assert!(
        entrypoint.contains(&format!("-cp '{}/*'", output_dirs[KAFKA_POM])),
        "{ENTRYPOINT}: the classpath must be {}/* ({KAFKA_POM}'s jars in {CONNECT_DOCKERFILE})",
        output_dirs[KAFKA_POM]
    );
    let plugin_path = appended_worker_lines(&entrypoint)
        .get("plugin.path")
        .cloned()
        .unwrap_or_else(|| panic!("{ENTRYPOINT}: the worker file gets a plugin.path"));
    assert_eq!(
        Path::new(&output_dirs[DEBEZIUM_POM]).parent(),
        Some(Path::new(&plugin_path)),
        "{CONNECT_DOCKERFILE}/{ENTRYPOINT}: {DEBEZIUM_POM}'s jars must be a plugin folder under plugin.path"
    );

    // The same Java major as the local stack (dev/install's openjdk-N-jre-headless).
    let local_java = install.java_major;
    for image in &dockerfile.from_images {
        assert_eq!(
            temurin_major(image),
            Some(local_java),
            "{CONNECT_DOCKERFILE}: FROM {image}; the local stack runs Java {local_java} ({INSTALL}): \
             use an eclipse-temurin {local_java} image"
        );
    }
}

#[test]
fn both_stacks_run_the_shared_worker_file_with_exactly_once_source() {
    let shared = properties(&read(WORKER_FILE));
    assert_eq!(
        shared.get("exactly.once.source.support").map(String::as_str),
        Some("enabled"),
        "{WORKER_FILE}: exactly.once.source.support=enabled (KIP-618), which the connector requires"
    );
    let connector: serde_json::Value =
        serde_json::from_str(&read(CONNECTOR)).unwrap_or_else(|e| panic!("{CONNECTOR}: {e}"));
    assert_eq!(
        connector["config"]["exactly.once.support"], "required",
        "{CONNECTOR}: \"exactly.once.support\": \"required\" (a worker without exactly-once must refuse it)"
    );

    // The image carries the file; compose may mount the checked-out one over it, at the same place.
    let dockerfile = Dockerfile::read();
    assert!(
        dockerfile.copies(WORKER_FILE, WORKER_FILE_IN_IMAGE),
        "{CONNECT_DOCKERFILE}: COPY {WORKER_FILE} to {WORKER_FILE_IN_IMAGE}"
    );
    let services = compose_services();
    let connect = service(&services, "connect");
    for volume in connect.list("volumes") {
        if volume.starts_with(&format!("./{WORKER_FILE}:")) {
            assert!(
                volume.starts_with(&format!("./{WORKER_FILE}:{WORKER_FILE_IN_IMAGE}")),
                "{COMPOSE}: mount {WORKER_FILE} at {WORKER_FILE_IN_IMAGE}, where {ENTRYPOINT} reads it"
            );
        }
    }
    for key in ["entrypoint", "command"] {
        assert!(
            connect.value(key).is_none() && connect.list(key).is_empty(),
            "{COMPOSE}: the connect service must not override the image's {key} ({ENTRYPOINT})"
        );
    }
    assert!(
        dockerfile.copies(ENTRYPOINT, "/usr/local/bin/connect-entrypoint.sh")
            && dockerfile
                .entrypoint
                .contains("/usr/local/bin/connect-entrypoint.sh"),
        "{CONNECT_DOCKERFILE}: the image's ENTRYPOINT runs {ENTRYPOINT}"
    );

    // The entrypoint's worker file is the shared one plus this deployment's lines only.
    let entrypoint = read(ENTRYPOINT);
    assert!(
        entrypoint.contains(&format!("cat {WORKER_FILE_IN_IMAGE} ")),
        "{ENTRYPOINT}: the worker file starts with {WORKER_FILE_IN_IMAGE}"
    );
    assert!(
        entrypoint.contains("org.apache.kafka.connect.cli.ConnectDistributed \"$worker\""),
        "{ENTRYPOINT}: runs ConnectDistributed (distributed mode, as the local stack) with that worker file"
    );
    let appended: BTreeSet<String> = appended_worker_lines(&entrypoint).into_keys().collect();
    let local_keys = local_worker_keys();
    assert_eq!(
        appended, local_keys,
        "{ENTRYPOINT}: append the keys the local stack appends (WorkerSettings, stack/src/connect.rs), no more, no less"
    );
    for key in &appended {
        assert!(
            !shared.contains_key(key),
            "{key} is in {WORKER_FILE} and appended per deployment: remove it from one of them"
        );
    }

    // Exactly-once only helps consumers that skip aborted transactions: the projector keeps
    // librdkafka's default isolation.level=read_committed.
    for (path, text) in rust_sources(&repo().join("projector/src")) {
        assert!(
            !text.contains("read_uncommitted"),
            "{}: the projector must read committed records only",
            path.display()
        );
    }
    assert!(
        !read(COMPOSE).contains("read_uncommitted"),
        "{COMPOSE}: the projector keeps isolation.level=read_committed (librdkafka's default)"
    );
}

#[test]
fn compose_kafka_settings_agree_with_the_local_stacks_broker() {
    let local = local_broker_settings();
    let services = compose_services();
    let kafka = service(&services, "kafka");
    // debezium/kafka-entrypoint.sh turns KAFKA_A_B into a.b as the apache/kafka image does:
    // `___` stands for `-`, `__` for `_`; the users' passwords are not settings.
    let compose: BTreeMap<String, String> = kafka
        .map("environment")
        .into_iter()
        .filter(|(name, _)| !name.ends_with("_PASSWORD"))
        .filter_map(|(name, value)| {
            name.strip_prefix("KAFKA_").map(|key| {
                let key = key
                    .to_lowercase()
                    .replace("___", "-")
                    .replace("__", "\u{1}")
                    .replace('_', ".")
                    .replace('\u{1}', "_");
                (key, value)
            })
        })
        .collect();
    for required in [
        "auto.create.topics.enable",
        "group.initial.rebalance.delay.ms",
        "listener.security.protocol.map",
        "inter.broker.listener.name",
        "sasl.enabled.mechanisms",
        "sasl.mechanism.inter.broker.protocol",
        "sasl.mechanism.controller.protocol",
        "listener.name.controller.sasl.enabled.mechanisms",
        "listener.name.controller.plain.sasl.jaas.config",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config",
        "authorizer.class.name",
        "super.users",
        "allow.everyone.if.no.acl.found",
    ] {
        let local_value = local.get(required).unwrap_or_else(|| {
            panic!("the local stack's NodeSettings (stack/src/kafka.rs) no longer sets {required}")
        });
        assert!(
            compose.contains_key(required),
            "{COMPOSE}: the kafka service must set {required}={local_value} as the local stack does \
             (KAFKA_{})",
            required.to_uppercase().replace('.', "_")
        );
    }
    // Addresses, paths and the node's id are each deployment's own.
    // So are the logins, which hold each deployment's passwords: their user names must agree.
    let per_deployment = [
        "node.id",
        "listeners",
        "advertised.listeners",
        "controller.quorum.voters",
        "log.dirs",
        "listener.name.controller.plain.sasl.jaas.config",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config",
    ];
    for key in &per_deployment[5..] {
        let user = |jaas: &str| {
            jaas.split("username=")
                .nth(1)
                .map(|u| u.split('"').nth(1).map(str::to_owned))
        };
        assert_eq!(
            user(&compose[*key]),
            user(&local[*key]),
            "{COMPOSE}: kafka's {key} logs in as another user than the local stack's"
        );
    }
    for (key, value) in &compose {
        if per_deployment.contains(&key.as_str()) {
            continue;
        }
        if let Some(local_value) = local.get(key) {
            assert_eq!(
                value, local_value,
                "{COMPOSE}: kafka's {key} is {value}, the local stack's {local_value} \
                 (NodeSettings, stack/src/kafka.rs): change compose (or both)"
            );
        }
    }
    // Topics: the same partition count (kafka-init creates them from debezium/topics.txt).
    let init = service(&services, "kafka-init");
    let partitions = init
        .lines
        .iter()
        .find_map(|line| {
            let rest = line.split("--partitions ").nth(1)?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{COMPOSE}: kafka-init creates topics with --partitions N"));
    assert_eq!(
        partitions,
        PARTITIONS.to_string(),
        "{COMPOSE}: kafka-init's --partitions must be the local stack's (stack::kafka::PARTITIONS)"
    );
}

// ---- The local stack's own settings -------------------------------------------------------------

/// `server.properties` of the local stack's node 1 in a one-node cluster, as compose runs.
fn local_broker_settings() -> BTreeMap<String, String> {
    let shape = Shape {
        brokers: 1,
        connect_workers: 1,
        ..stack::Shape::default()
    };
    let dir = std::env::temp_dir().join(format!("versions-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let stack = Stack {
        state: StackState::new(shape, &dir).expect("a one-node stack state"),
        state_dir: dir.clone(),
        repo: repo(),
        bin_dir: std::env::temp_dir(),
    };
    let settings = scalars(
        serde_json::to_value(NodeSettings::for_node(&stack, 1)).expect("NodeSettings serializes"),
    );
    // Its ports' claims lapse with the folder (crate ports: stale claims).
    let _ = std::fs::remove_dir_all(&dir);
    settings
}

/// The keys the local stack appends to the shared worker file.
fn local_worker_keys() -> BTreeSet<String> {
    let settings = WorkerSettings {
        bootstrap_servers: String::new(),
        listeners: String::new(),
        advertised_host: "",
        advertised_port: 0,
        plugin_path: String::new(),
        config_replication_factor: 1,
        offset_replication_factor: 1,
        status_replication_factor: 1,
    };
    let mut keys: BTreeSet<String> =
        scalars(serde_json::to_value(settings).expect("WorkerSettings serializes"))
            .into_keys()
            .collect();
    keys.extend(properties(&stack::connect::worker_login("x")).into_keys());
    keys
}

/// A settings struct serialized to JSON as `.properties` values (`to_properties`' rules).
fn scalars(value: serde_json::Value) -> BTreeMap<String, String> {
    let serde_json::Value::Object(map) = value else {
        panic!("settings serialize to a map");
    };
    map.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

// ---- Reading the files ---------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("stack/ is in the repository")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `<name>` of a pom (comments left out).
fn pom_property(pom: &str, name: &str) -> String {
    let mut text = read(pom);
    while let Some(start) = text.find("<!--") {
        let end = text[start..]
            .find("-->")
            .map_or(text.len(), |e| start + e + 3);
        text.replace_range(start..end, "");
    }
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("{pom} has no <{name}>"))
        + open.len();
    let len = text[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("{pom}: <{name}> is not closed"));
    text[start..start + len].trim().to_owned()
}

/// `key=value` lines of a `.properties` file (no continuation lines in ours).
fn properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The `key=value` lines of the entrypoint's here-document (what it appends to the shared file).
fn appended_worker_lines(entrypoint: &str) -> BTreeMap<String, String> {
    let body = entrypoint
        .split_once("<<EOF\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF\n"))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("{ENTRYPOINT}: appends its lines with a <<EOF here-document"));
    properties(body)
}

/// `N` of an `eclipse-temurin:N-…` or `…-eclipse-temurin-N` image.
fn temurin_major(image: &str) -> Option<u32> {
    let rest = &image[image.find("eclipse-temurin")? + "eclipse-temurin".len()..];
    let digits: String = rest
        .trim_start_matches([':', '-'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn rust_sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.push((path, text));
        }
    }
    out
}

/// How `dev/install` resolves each pom: the fixed arguments of its `mvn` line and the extra
/// arguments each `resolve` call passes; and the Java major it installs.
struct InstallResolution {
    common: BTreeSet<String>,
    extra: BTreeMap<String, BTreeSet<String>>,
    java_major: u32,
}

impl InstallResolution {
    fn read() -> Self {
        let text = join_continuations(&read(INSTALL));
        let mvn = text
            .lines()
            .find(|l| {
                l.trim_start().starts_with("mvn ") && l.contains("dependency:copy-dependencies")
            })
            .unwrap_or_else(|| panic!("{INSTALL}: no `mvn ... dependency:copy-dependencies` line"));
        let common = mvn
            .split_whitespace()
            .take_while(|t| !t.starts_with('>') && !t.starts_with("2>") && *t != "||")
            .filter(|t| t.starts_with('-') && *t != "-f" && !t.contains('$') && !t.contains('"'))
            .map(str::to_owned)
            .collect();
        let mut extra = BTreeMap::new();
        for pom in [KAFKA_POM, DEBEZIUM_POM] {
            let call = text
                .lines()
                .find(|l| l.trim_start().starts_with("resolve ") && l.contains(pom))
                .unwrap_or_else(|| panic!("{INSTALL}: no `resolve ... {pom}` call"));
            let args = call
                .split_whitespace()
                .filter(|t| t.starts_with('-'))
                .map(str::to_owned)
                .collect();
            extra.insert(pom.to_owned(), args);
        }
        let java_major = text
            .split("openjdk-")
            .nth(1)
            .and_then(|rest| rest.split('-').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{INSTALL}: installs no openjdk-N-jre package"));
        Self {
            common,
            extra,
            java_major,
        }
    }

    fn flags_for(&self, pom: &str) -> BTreeSet<String> {
        self.common.union(&self.extra[pom]).cloned().collect()
    }
}

/// The instructions of `debezium/Dockerfile.connect` that these tests look at.
struct Dockerfile {
    /// `(sources, destination)` of each COPY from the build context.
    copies: Vec<(Vec<String>, String)>,
    /// Sources of each `COPY --from=<stage>`.
    copied_from_stages: Vec<String>,
    /// Each `mvn` command of a RUN, as tokens from `mvn` on.
    maven: Vec<Vec<String>>,
    from_images: Vec<String>,
    entrypoint: String,
}

impl Dockerfile {
    fn read() -> Self {
        let text = join_continuations(&read(CONNECT_DOCKERFILE));
        let mut file = Self {
            copies: Vec::new(),
            copied_from_stages: Vec::new(),
            maven: Vec::new(),
            from_images: Vec::new(),
            entrypoint: String::new(),
        };
        for line in text.lines().map(str::trim) {
            let Some((instruction, rest)) = line.split_once(char::is_whitespace) else {
                continue;
            };
            let tokens: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            match instruction.to_uppercase().as_str() {
                "FROM" => file.from_images.extend(tokens.first().cloned()),
                "COPY" => {
                    let from_stage = tokens.iter().any(|t| t.starts_with("--from="));
                    let mut paths: Vec<String> = tokens
                        .into_iter()
                        .filter(|t| !t.starts_with("--"))
                        .collect();
                    let Some(dest) = paths.pop() else { continue };
                    if from_stage {
                        file.copied_from_stages.extend(paths);
                    } else {
                        file.copies.push((paths, dest));
                    }
                }
                "RUN" => {
                    for command in rest.split("&&") {
                        let tokens: Vec<String> = command
                            .split_whitespace()
                            .skip_while(|t| *t != "mvn")
                            .map(str::to_owned)
                            .collect();
                        if !tokens.is_empty() {
                            file.maven.push(tokens);
                        }
                    }
                }
                "ENTRYPOINT" => file.entrypoint = rest.to_owned(),
                _ => {}
            }
        }
        file
    }

    /// Whether `source` (a path in the repository) is copied to `target` in the image.
    fn copies(&self, source: &str, target: &str) -> bool {
        self.copies.iter().any(|(sources, dest)| {
            sources.iter().any(|s| s == source)
                && (dest == target
                    || (dest.ends_with('/')
                        && Path::new(dest).join(file_name(source)) == Path::new(target)))
        })
    }

    /// The `mvn` command that runs on the image's copy of `pom` (`-f <copy>`).
    fn maven_command_for(&self, pom: &str) -> Vec<String> {
        let (_, copy) = self
            .copies
            .iter()
            .find(|(sources, _)| sources.len() == 1 && sources[0] == pom)
            .unwrap_or_else(|| {
                panic!("{CONNECT_DOCKERFILE}: COPY {pom} (alone) into the resolving stage")
            });
        self.maven
            .iter()
            .find(|tokens| tokens.windows(2).any(|w| w[0] == "-f" && w[1] == *copy))
            .cloned()
            .unwrap_or_else(|| panic!("{CONNECT_DOCKERFILE}: no `mvn -f {copy}` resolving {pom}"))
    }

    /// Whether a `COPY --from=<stage>` brings `path` (or a folder above it) into the image.
    fn copied_from_build_stage(&self, path: &str) -> bool {
        self.copied_from_stages
            .iter()
            .any(|source| Path::new(path).starts_with(source))
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Shell and Dockerfile text with `\`-continued lines joined and comment lines dropped.
fn join_continuations(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                out.push_str(head);
                out.push(' ');
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

// ---- docker-compose.yml, line by line ------------------------------------------------------------

/// One service: its name and the lines of its block (comments and blank lines left out).
struct Service {
    name: String,
    lines: Vec<String>,
}

fn compose_services() -> Vec<Service> {
    let text = read(COMPOSE);
    let mut services: Vec<Service> = Vec::new();
    let mut in_services = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match indent(line) {
            0 => in_services = trimmed == "services:",
            2 if in_services => {
                let name = trimmed
                    .strip_suffix(':')
                    .unwrap_or_else(|| panic!("{COMPOSE}: unexpected line in services: {line}"));
                services.push(Service {
                    name: name.to_owned(),
                    lines: Vec::new(),
                });
            }
            _ if in_services => {
                if let Some(service) = services.last_mut() {
                    service.lines.push(line.to_owned());
                }
            }
            _ => {}
        }
    }
    services
}

fn service<'a>(services: &'a [Service], name: &str) -> &'a Service {
    services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{COMPOSE} has no service {name}"))
}

impl Service {
    /// `key: value` of the service itself.
    fn value(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .filter(|l| indent(l) == 4)
            .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
            .map(unquote)
            .filter(|v| !v.is_empty())
    }

    /// The lines of the block under `key:` (more indented than the service's keys).
    fn block(&self, key: &str) -> Vec<&str> {
        let header = format!("{key}:");
        self.lines
            .iter()
            .skip_while(|l| !(indent(l) == 4 && l.trim() == header))
            .skip(1)
            .take_while(|l| indent(l) > 4)
            .map(|l| l.trim())
            .collect()
    }

    /// The `NAME: value` entries under `key:`.
    fn map(&self, key: &str) -> BTreeMap<String, String> {
        self.block(key)
            .into_iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), unquote(v)))
            .collect()
    }

    fn value_of_map(&self, key: &str, entry: &str) -> Option<String> {
        self.map(key).remove(entry)
    }

    /// The `- item` entries under `key:`.
    fn list(&self, key: &str) -> Vec<String> {
        self.block(key)
            .into_iter()
            .filter_map(|l| l.strip_prefix("- "))
            .map(unquote)
            .collect()
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value)
        .to_owned()
}
