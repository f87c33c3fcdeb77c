//! Policy file: TOML schema, validation, loading. STUB.
mod model;
pub use model::*;

use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub struct ConfigError(pub String);
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

pub fn load(path: &Path) -> Result<Policy, ConfigError> {
    Err(ConfigError(format!("{}: not implemented", path.display())))
}
