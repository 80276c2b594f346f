//! What runs on a stack rather than being part of it: the demo, the
//! benchmark, the chaos suite with its oracle, and reconciliation.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod oracle;
pub mod reconcile;
pub mod scale;
