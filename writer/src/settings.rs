//! Writer settings: `--config FILE` (TOML) overridden by `WRITER__DATABASE__*`.
use std::path::Path;

use serde::Deserialize;
use service::{DatabaseSettings, SettingsError};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The write database (state + outbox).
    pub database: DatabaseSettings,
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        service::load_settings(file, "WRITER", &[])
    }
}
