//! Typed, layered configuration: defaults, then an optional TOML file, then environment
//! variables (`<PREFIX>_<FIELD>`, nested with `__`), validated at start with a readable
//! message. Secrets come only from the environment.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value has the wrong type or an unknown key is present.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A value is out of its bounds.
    #[error("invalid configuration: {field}: {reason}")]
    Value {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A configuration that can check itself after loading.
pub trait Validate {
    /// Checks bounds and relations between fields.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T`: defaults, then the TOML file (when given and present), then `<prefix>_*`
/// environment variables (e.g. `GATEWAY_LISTEN`, `GATEWAY_BUS__URL`).
pub fn load<T>(prefix: &str, file: Option<&std::path::Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let config: T = load_unchecked(prefix, file)?;
    config.validate()?;
    Ok(config)
}

/// [`load`] without [`Validate::validate`]: for a tool that uses part of a service's
/// configuration and checks that part itself (e.g. `eventctl features export` needs the
/// features' counters, not their API keys).
pub fn load_unchecked<T>(prefix: &str, file: Option<&std::path::Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Invalid(format!("config file {} does not exist", path.display())));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(&format!("{prefix}_")).split("__"));
    figment.extract().map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            OneOrMany::Many(v) => v,
        }
    }
}

/// `#[serde(deserialize_with = "service_kit::config::string_list")]`: a list given as a
/// sequence (TOML) or as one comma-separated string (an environment variable).
pub fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize;
    Ok(OneOrMany::deserialize(d)?.into_vec())
}

/// A map of lists, each a sequence or a comma-separated string (see [`string_list`]).
pub fn string_list_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, D::Error> {
    use serde::Deserialize;
    let raw = std::collections::BTreeMap::<String, OneOrMany>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
}
