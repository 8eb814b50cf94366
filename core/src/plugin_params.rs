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

/// One parameter of a plugin, as `edmips list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamInfo {
    /// Key in the plugin's table.
    pub name: String,
    /// Rust type as written in the definition (e.g. `f64`).
    pub ty: String,
    /// Default value (absent when it does not serialise, e.g. `None`).
    pub default: Option<toml::Value>,
    /// The field's doc comment.
    pub doc: String,
}

/// Typed plugin parameters that can describe themselves: implemented by
/// [`plugin_params!`](macro@crate::plugin_params), the one place a plugin writes each parameter's
/// name, type, default and doc.
pub trait DescribeParams: Serialize + DeserializeOwned + Default {
    /// Every parameter, in declaration order.
    fn describe() -> Vec<ParamInfo>;
}

/// Defines a plugin's typed parameters once: a struct with serde defaults, its `Default`, and
/// its [`DescribeParams`] (names, types, defaults and docs for `edmips list`). The calling
/// crate needs `serde` (with `derive`) as a dependency.
///
/// ```
/// edmips_core::plugin_params! {
///     /// Parameters of a clip quantizer.
///     pub struct Clip {
///         /// The clip value.
///         pub max: f64 = 6.0,
///         /// Whether to round half to even.
///         pub even: bool = true,
///     }
/// }
/// use edmips_core::plugin_params::DescribeParams;
/// let d = Clip::describe();
/// assert_eq!((d[0].name.as_str(), d[0].ty.as_str(), d[0].doc.as_str()), ("max", "f64", "The clip value."));
/// assert_eq!(Clip::default().max, 6.0);
/// ```
#[macro_export]
macro_rules! plugin_params {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])+ $fvis:vis $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        $vis struct $name {
            $( $(#[doc = $doc])+ $fvis $field: $ty, )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $crate::plugin_params::DescribeParams for $name {
            fn describe() -> Vec<$crate::plugin_params::ParamInfo> {
                let defaults = $crate::plugin_params::defaults_of::<$name>();
                vec![ $(
                    $crate::plugin_params::ParamInfo {
                        name: stringify!($field).to_string(),
                        ty: stringify!($ty).to_string(),
                        default: defaults.get(stringify!($field)).cloned(),
                        doc: concat!($($doc, " "),+).split_whitespace().collect::<Vec<_>>().join(" "),
                    },
                )* ]
            }
        }
    };
}

/// The defaults of a plugin's typed parameters `T` as a table: what the registry merges a
/// configuration's table over, and what `edmips list` prints. Fields that serialise to
/// nothing (`None`) have no default to show; typed parameters should not use them.
pub fn defaults_of<T: Serialize + Default>() -> Table {
    Table::try_from(T::default()).unwrap_or_default()
}

/// Reads a plugin's parameter table into its typed definition `T`, the single place a
/// plugin's parameter names, types and defaults are written (a struct deriving `Serialize`,
/// `Deserialize` and `Default`, with `#[serde(default)]`).
///
/// A key that `T` does not have is an error listing the known keys; a value of the wrong type
/// names the plugin `context` and the key. The `id` key is ignored.
///
/// ```
/// use edmips_core::{parse_params, Table};
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// #[serde(default)]
/// struct Clip { max: f64 }
/// impl Default for Clip { fn default() -> Self { Clip { max: 6.0 } } }
///
/// let t: Table = toml::from_str("max = 3.0").unwrap();
/// assert_eq!(parse_params::<Clip>("clip", &t).unwrap().max, 3.0);
/// let bad: Table = toml::from_str("max = \"big\"").unwrap();
/// assert!(parse_params::<Clip>("clip", &bad).unwrap_err().to_string().contains("`max`"));
/// ```
pub fn parse_params<T: Serialize + DeserializeOwned + Default>(context: &str, table: &Table) -> Result<T> {
    let defaults = defaults_of::<T>();
    let known: Vec<&str> = defaults.keys().map(String::as_str).collect();
    Params::new(context, table).deny_unknown(&known)?;
    let mut given = table.clone();
    given.remove("id");
    // Try each key alone over the defaults first, so an error names the key at fault.
    for (k, v) in &given {
        let mut one = defaults.clone();
        one.insert(k.clone(), v.clone());
        toml::Value::Table(one).try_into::<T>().map_err(|e: toml::de::Error| {
            Error::config(context, k.as_str(), format!("invalid value {v}: {}", e.message()))
        })?;
    }
    toml::Value::Table(merge_defaults(&defaults, &given))
        .try_into::<T>()
        .map_err(|e: toml::de::Error| Error::config(context, "-", e.message().to_string()))
}

/// Typed, checked access to a plugin's parameter table.
///
/// ```
/// use edmips_core::plugin_params::{Params, Table};
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
