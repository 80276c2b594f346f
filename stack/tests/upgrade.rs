//! A stack made before the brokers required a login (its `stack.json` has no
//! Kafka users): it gets them if its cluster was never formatted; otherwise
//! starting Kafka is refused with what to do, and it can still be purged.

#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

use stack::Stack;

/// A new stack's `stack.json` written back without its `kafka` secrets.
fn old_stack(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fresh = Stack::open(&dir, stack::default_bin_dir()).unwrap();
    let file = fresh.state_dir.join("stack.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("kafka");
    std::fs::write(&file, state.to_string()).unwrap();
    fresh.state_dir
}

#[test]
fn an_old_stack_never_formatted_gets_its_kafka_users() {
    let dir = old_stack("unformatted");
    let stack = Stack::open(&dir, stack::default_bin_dir()).unwrap();
    assert!(!stack.state.kafka.is_none(), "the users are made on open");
    let saved = std::fs::read_to_string(dir.join("stack.json")).unwrap();
    assert!(
        saved.contains(&stack.state.kafka.admin_password),
        "and kept"
    );
    stack::state::remove_stack_files(&dir).unwrap();
}

#[test]
fn an_old_formatted_cluster_is_refused_with_what_to_do_and_can_be_purged() {
    let dir = old_stack("formatted");
    let data = dir.join("kafka/node-1/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("meta.properties"), "version=1\n").unwrap();
    let stack = Stack::open(&dir, stack::default_bin_dir()).unwrap();
    assert!(stack.state.kafka.is_none());
    let refused = stack::kafka::start_node(&stack, 1).unwrap_err().to_string();
    assert!(
        refused.contains("made before the brokers required a login")
            && refused.contains("stack down --purge"),
        "{refused}"
    );
    stack.down(&|_| {}).unwrap();
    stack::state::remove_stack_files(&dir).unwrap();
    assert!(!dir.exists());
}
