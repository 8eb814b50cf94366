//! Configuration values shared by plugins: [`PluginSpec`] and typed access to parameter tables.
//!
//! Plugins are named by id in TOML or JSON and carry a table of parameters:
//!
//! ```toml
//! [act_quantizer]
//! id = "hwgq"
//! # parameters of the plugin, if any, follow the id
//! ```
//!
//! A plugin's constructor receives its table merged over its registered defaults
//! ([`merge_defaults`]) and reads it through [`Params`], which reports unknown keys and wrong
//! types with the plugin id and the key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A TOML table of plugin parameters.
pub type Table = toml::Table;

/// A plugin named by id, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// The registry id, e.g. `hwgq`.
    pub id: String,
    /// The plugin's parameters (merged over its defaults when built).
    #[serde(default, flatten)]
    pub params: Table,
}

impl PluginSpec {
    /// A spec with an id and no parameters (the plugin's defaults apply).
    pub fn new(id: impl Into<String>) -> Self {
        PluginSpec { id: id.into(), params: Table::new() }
    }
}

/// Returns `defaults` overridden key by key (recursively for sub-tables) by `given`.
pub fn merge_defaults(defaults: &Table, given: &Table) -> Table {
    let mut out = defaults.clone();
    for (k, v) in given {
        match (out.get_mut(k), v) {
            (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => {
                *dst = merge_defaults(dst, src);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Typed, checked access to a plugin's parameter table.
///
/// ```
/// use edmips_core::config::{Params, Table};
/// let t: Table = toml::from_str("temperature = 0.5").unwrap();
/// let p = Params::new("softmax", &t);
/// let temp: f64 = p.get_or("temperature", 1.0).unwrap();
/// assert_eq!(temp, 0.5);
/// p.deny_unknown(&["temperature"]).unwrap();
/// ```
pub struct Params<'a> {
    context: String,
    table: &'a Table,
}

impl<'a> Params<'a> {
    /// Wraps `table`; `context` (usually the plugin id) names it in errors.
    pub fn new(context: impl Into<String>, table: &'a Table) -> Self {
        Params { context: context.into(), table }
    }

    /// The value of `key`, or `default` when absent. A present value of the wrong type is an error.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        match self.table.get(key) {
            None => Ok(default),
            Some(v) => self.convert(key, v),
        }
    }

    /// The value of `key`, which must be present.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        match self.table.get(key) {
            None => Err(Error::config(&self.context, key, "missing required parameter")),
            Some(v) => self.convert(key, v),
        }
    }

    fn convert<T: DeserializeOwned>(&self, key: &str, v: &toml::Value) -> Result<T> {
        v.clone().try_into().map_err(|e: toml::de::Error| {
            Error::config(&self.context, key, format!("invalid value {v}: {}", e.message()))
        })
    }

    /// Fails on the first key not in `allowed` (the `id` key is always allowed).
    pub fn deny_unknown(&self, allowed: &[&str]) -> Result<()> {
        for k in self.table.keys() {
            if k != "id" && !allowed.contains(&k.as_str()) {
                let expected = if allowed.is_empty() {
                    "this plugin takes no parameters".to_string()
                } else {
                    format!("known parameters: {}", allowed.join(", "))
                };
                return Err(Error::config(&self.context, k.as_str(), format!("unknown parameter; {expected}")));
            }
        }
        Ok(())
    }
}
