//! # medbus-config — what users write, checked before anything starts
//!
//! A config file is the whole configuration: listeners it does not name do not
//! exist. Settings it leaves out take the documented defaults below, and the
//! embedded default (`default.toml`, used only when no file is given) is an
//! ordinary config file compiled into the binary.
//!
//! # Layout
//! - [`schema`]: the structs users write, one `///` doc per field (that doc is
//!   the user documentation) and `deny_unknown_fields` everywhere.
//! - [`retention`]: how long topics keep records.
//! - [`route`]: `[[routes]]` and their `when` conditions, compiled once
//!   (globs, regexes, HL7 field paths) and evaluated per record.
//! - [`tls`]: TLS settings and PEM loading for listeners and destinations.
//! - [`units`]: human durations (`"30s"`, `"10m"`) and sizes (`"1MiB"`).
//! - [`cidr`]: address blocks for listener allowlists.
//! - [`destination`]: `[[destinations]]`, MLLP delivery settings.
//! - [`protocol`]: `[protocol]` (the binary-protocol listener) and
//!   `[[clients]]` (hashed tokens, topic patterns).
//! - [`fhir`]: `[fhir]` (the FHIR REST gateway) and `[fhir.auth]` (SMART on
//!   FHIR bearer tokens).
//! - [`error`]: [`ConfigError`], printed as `file:line:col: key: message`.
//! - [`validate`]: the checks serde cannot express; collects every problem,
//!   not just the first.

pub mod cidr;
pub mod destination;
pub mod error;
pub mod fhir;
pub mod protocol;
pub mod retention;
pub mod route;
pub mod schema;
pub mod tls;
pub mod units;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use route::{Condition, RouteConfig, Subject, Transform};
pub use schema::{
    AckPolicy, Config, Durability, HttpConfig, ListenerConfig, MappingConfig, StorageConfig,
};
pub use serde_spanned::Spanned;
pub use units::{ByteSize, HumanDuration};

/// The embedded default configuration, as TOML text.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// The name shown in errors about the embedded default.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default>";

/// Parse and validate config text. `file` names the source in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let config: Config = toml::from_str(text)
        .map_err(|e| ConfigErrors(vec![ConfigError::from_toml(file, text, &e)]))?;
    let problems = validate::validate(&config, file, text);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// The top-level keys a `SIGHUP` reload applies; a change anywhere else
/// takes effect at the next start.
pub const RELOADED: &[&str] = &["routes", "destinations", "mapping"];

/// The top-level keys (tables such as `listeners`, `storage`, `retention`,
/// or settings such as `data_dir`) whose values differ between two config
/// texts and that a reload does not apply ([`RELOADED`] excepted), sorted.
/// Texts that do not parse as TOML compare as empty.
pub fn restart_needed(running: &str, new: &str) -> Vec<String> {
    let table = |t: &str| t.parse::<toml::Table>().unwrap_or_default();
    let (a, b) = (table(running), table(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| !RELOADED.contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Read, parse and validate a config file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&text, &file)
}

/// The embedded default configuration, parsed.
pub fn embedded_default() -> Config {
    match parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME) {
        Ok(c) => c,
        // The embedded default is checked by a unit test; reaching this is a
        // build defect, not an input error.
        Err(e) => unreachable!("embedded default config is invalid: {e}"),
    }
}

#[cfg(test)]
mod tests;
