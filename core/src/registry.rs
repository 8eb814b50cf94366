//! Plugin registries, filled at link time through [`inventory`].
//!
//! There is one registry per [`PluginKind`]. A plugin registers with the kind's macro
//! ([`register_quantizer!`](crate::register_quantizer), [`register_relaxation!`](crate::register_relaxation),
//! [`register_cost!`](crate::register_cost), [`register_backbone!`](crate::register_backbone),
//! [`register_config!`](crate::register_config)); built-ins use the same macros a third-party
//! crate would. Each entry carries an id, a one-line summary, the module that registered it,
//! its default parameters and a constructor from a parameter table.
//!
//! Lookups check the whole registry first: a duplicate id is an error naming both modules, an
//! unknown id is an error listing the closest known ids.
//!
//! inventory only sees crates that are linked. Binaries and tests that rely on the built-ins
//! should name the facade crate (`use edmips as _;`).
//!
//! ```
//! use edmips_core::registry;
//! // With no plugin crate linked into this doctest, the registry is empty and says so.
//! let err = registry::quantizer("hwgq").unwrap_err().to_string();
//! assert!(err.contains("unknown quantizer id `hwgq`"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::plugin_params::{merge_defaults, ParamInfo, PluginSpec, Table};
use crate::traits::{Backbone, ComplexityCost, Quantizer, Relaxation};

/// The kinds of registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// [`Quantizer`] plugins.
    Quantizer,
    /// [`Relaxation`] plugins.
    Relaxation,
    /// [`ComplexityCost`] plugins.
    Cost,
    /// [`Backbone`] plugins.
    Backbone,
    /// Named experiment configurations (e.g. `mixres18_w1234a234`).
    Config,
}

impl PluginKind {
    /// All kinds, in display order.
    pub const ALL: [PluginKind; 5] =
        [PluginKind::Quantizer, PluginKind::Relaxation, PluginKind::Cost, PluginKind::Backbone, PluginKind::Config];

    /// The lowercase name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Quantizer => "quantizer",
            PluginKind::Relaxation => "relaxation",
            PluginKind::Cost => "cost",
            PluginKind::Backbone => "backbone",
            PluginKind::Config => "config",
        }
    }

    /// Parses a kind name (as printed by [`name`](Self::name)).
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::config(
                "--kind",
                s,
                format!("unknown kind; expected one of {}", Self::ALL.map(|k| k.name()).join(", ")),
            )
        })
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One registry entry. `T` is the trait object the constructor returns.
pub struct Entry<T: ?Sized + 'static> {
    /// The id configs and the CLI use.
    pub id: &'static str,
    /// One line saying what it is.
    pub summary: &'static str,
    /// `module_path!()` of the registration (names the crate in duplicate errors).
    pub module: &'static str,
    /// The default parameters.
    pub defaults: fn() -> Table,
    /// The typed parameters' descriptions (empty for a table-only or parameterless plugin).
    pub params: fn() -> Vec<ParamInfo>,
    /// Builds the plugin from its (defaults-merged) parameters.
    pub build: fn(&Table) -> Result<Box<T>>,
}

impl<T: ?Sized> fmt::Debug for Entry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("summary", &self.summary)
            .field("module", &self.module)
            .finish()
    }
}

impl<T: ?Sized> Entry<T> {
    /// Builds the plugin from `params` merged over the defaults.
    pub fn create(&self, params: &Table) -> Result<Box<T>> {
        (self.build)(&merge_defaults(&(self.defaults)(), params))
    }
}

/// A quantizer registration.
pub type QuantizerEntry = Entry<dyn Quantizer>;
/// A relaxation registration.
pub type RelaxationEntry = Entry<dyn Relaxation>;
/// A cost registration.
pub type CostEntry = Entry<dyn ComplexityCost>;
/// A backbone registration.
pub type BackboneEntry = Entry<dyn Backbone>;
/// A named configuration registration; it builds a [`ModelConfig`](crate::model_config::ModelConfig).
pub type ConfigEntry = Entry<crate::model_config::ModelConfig>;

inventory::collect!(QuantizerEntry);
inventory::collect!(RelaxationEntry);
inventory::collect!(CostEntry);
inventory::collect!(BackboneEntry);
inventory::collect!(ConfigEntry);

/// What `edmips list` prints for one entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryInfo {
    /// Registry kind.
    pub kind: PluginKind,
    /// Id.
    pub id: String,
    /// One-line summary.
    pub summary: String,
    /// Registering module.
    pub module: String,
    /// Default parameters (TOML table).
    pub defaults: Table,
    /// Each parameter's type, default and doc (typed parameters only).
    pub params: Vec<ParamInfo>,
}

fn checked<T: ?Sized>(kind: PluginKind, entries: Vec<&'static Entry<T>>) -> Result<Vec<&'static Entry<T>>> {
    let mut seen: BTreeMap<&str, &Entry<T>> = BTreeMap::new();
    for e in &entries {
        if let Some(prev) = seen.insert(e.id, e) {
            let (mut first, mut second) = (prev.module.to_string(), e.module.to_string());
            if first > second {
                std::mem::swap(&mut first, &mut second);
            }
            return Err(Error::DuplicateId { kind: kind_str(kind), id: e.id.to_string(), first, second });
        }
    }
    let mut v = entries;
    v.sort_by_key(|e| e.id);
    Ok(v)
}

fn kind_str(k: PluginKind) -> &'static str {
    k.name()
}

fn find<T: ?Sized>(kind: PluginKind, entries: Vec<&'static Entry<T>>, id: &str) -> Result<&'static Entry<T>> {
    let entries = checked(kind, entries)?;
    if let Some(e) = entries.iter().find(|e| e.id == id) {
        return Ok(e);
    }
    let known: Vec<String> = entries.iter().map(|e| e.id.to_string()).collect();
    Err(Error::UnknownId { kind: kind_str(kind), id: id.to_string(), suggestions: closest(id, &known), known })
}

/// The known ids closest to `id` (edit distance at most a third of the longer string, or a
/// shared prefix/substring), best first, at most three.
pub fn closest(id: &str, known: &[String]) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = known
        .iter()
        .filter_map(|k| {
            let d = levenshtein(&id.to_lowercase(), &k.to_lowercase());
            let limit = id.len().max(k.len()).div_ceil(3).max(1);
            let related = k.contains(id) || id.contains(k.as_str());
            (d <= limit || related).then_some((d, k))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, k)| k.clone()).collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The plugin a registry entry built must report the id it was registered under: the
/// registration is the one source of a plugin's id, and this check keeps `fn id()` true to it.
fn check_id<T: ?Sized>(kind: PluginKind, entry: &Entry<T>, reported: &str) -> Result<()> {
    if reported == entry.id {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "{kind} `{}` (registered by `{}`) reports id `{reported}`; its `id()` must return the registered id",
            entry.id, entry.module
        )))
    }
}

macro_rules! kind_api {
    ($entry:ty, $kind:expr, $all:ident, $one:ident, $make:ident, $tr:ty) => {
        kind_api!(@lookup $entry, $kind, $all, $one);

        #[doc = concat!("Builds the plugin a [`PluginSpec`] names, with its parameters merged over the defaults; ",
            "the plugin must report the id it is registered under.")]
        pub fn $make(spec: &PluginSpec) -> Result<Box<$tr>> {
            let entry = $one(&spec.id)?;
            let plugin = entry.create(&spec.params)?;
            check_id($kind, entry, plugin.id())?;
            Ok(plugin)
        }
    };
    (@lookup $entry:ty, $kind:expr, $all:ident, $one:ident) => {
        #[doc = concat!("Every `", stringify!($all), "` registration, sorted by id (errors on a duplicate id).")]
        pub fn $all() -> Result<Vec<&'static $entry>> {
            checked($kind, inventory::iter::<$entry>.into_iter().collect())
        }

        #[doc = concat!("The registration with this id, or an error listing the closest known ids.")]
        pub fn $one(id: &str) -> Result<&'static $entry> {
            find($kind, inventory::iter::<$entry>.into_iter().collect(), id)
        }

    };
}

kind_api!(QuantizerEntry, PluginKind::Quantizer, quantizers, quantizer, build_quantizer, dyn Quantizer);
kind_api!(RelaxationEntry, PluginKind::Relaxation, relaxations, relaxation, build_relaxation, dyn Relaxation);
kind_api!(CostEntry, PluginKind::Cost, costs, cost, build_cost, dyn ComplexityCost);
kind_api!(BackboneEntry, PluginKind::Backbone, backbones, backbone, build_backbone, dyn Backbone);
kind_api!(@lookup ConfigEntry, PluginKind::Config, configs, config);

/// Builds the named configuration a [`PluginSpec`] names.
pub fn build_config(spec: &PluginSpec) -> Result<Box<crate::model_config::ModelConfig>> {
    config(&spec.id)?.create(&spec.params)
}

fn infos<T: ?Sized>(kind: PluginKind, v: Vec<&'static Entry<T>>) -> Vec<EntryInfo> {
    v.into_iter()
        .map(|e| EntryInfo {
            kind,
            id: e.id.to_string(),
            summary: e.summary.to_string(),
            module: e.module.to_string(),
            defaults: (e.defaults)(),
            params: (e.params)(),
        })
        .collect()
}

/// Every registration of `kind` as printable info, sorted by id.
pub fn list(kind: PluginKind) -> Result<Vec<EntryInfo>> {
    Ok(match kind {
        PluginKind::Quantizer => infos(kind, quantizers()?),
        PluginKind::Relaxation => infos(kind, relaxations()?),
        PluginKind::Cost => infos(kind, costs()?),
        PluginKind::Backbone => infos(kind, backbones()?),
        PluginKind::Config => infos(kind, configs()?),
    })
}

/// Registers a [`Quantizer`]. Fields: `id`, `summary`, then optionally `params: T` (the
/// plugin's typed parameters, defined with [`plugin_params!`](macro@crate::plugin_params): the
/// registry merges tables over their defaults and `edmips list` shows each parameter's type,
/// default and doc; read them with [`parse_params`](crate::parse_params)) or `defaults`
/// (a `fn() -> Table`), then `build` (a `fn(&Table) -> Result<Box<dyn Quantizer>>`).
///
/// The id is written once, here: the plugin's `id()` must return it (the registry checks when
/// it builds the plugin), so plugin files keep it in one `const ID`.
///
/// ```ignore
/// edmips_core::register_quantizer! {
///     id: "hwgq",
///     summary: "Half-wave Gaussian activation quantizer",
///     build: |params| Ok(Box::new(Hwgq::from_params(params)?)),
/// }
/// ```
#[macro_export]
macro_rules! register_quantizer {
    ($($body:tt)*) => { $crate::__register!($crate::registry::QuantizerEntry, $($body)*); };
}

/// Registers a [`Relaxation`]; fields as in [`register_quantizer!`](crate::register_quantizer).
#[macro_export]
macro_rules! register_relaxation {
    ($($body:tt)*) => { $crate::__register!($crate::registry::RelaxationEntry, $($body)*); };
}

/// Registers a [`ComplexityCost`]; fields as in [`register_quantizer!`](crate::register_quantizer).
#[macro_export]
macro_rules! register_cost {
    ($($body:tt)*) => { $crate::__register!($crate::registry::CostEntry, $($body)*); };
}

/// Registers a [`Backbone`]; fields as in [`register_quantizer!`](crate::register_quantizer).
#[macro_export]
macro_rules! register_backbone {
    ($($body:tt)*) => { $crate::__register!($crate::registry::BackboneEntry, $($body)*); };
}

/// Registers a named configuration; `build` returns a `Box<ModelConfig>`.
#[macro_export]
macro_rules! register_config {
    ($($body:tt)*) => { $crate::__register!($crate::registry::ConfigEntry, $($body)*); };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    ($entry:ty, id: $id:expr, summary: $summary:expr, defaults: $defaults:expr, build: $build:expr $(,)?) => {
        $crate::inventory::submit! {
            <$entry>::new_const($id, $summary, ::core::module_path!(), $defaults, ::std::vec::Vec::new, $build)
        }
    };
    ($entry:ty, id: $id:expr, summary: $summary:expr, params: $params:ty, build: $build:expr $(,)?) => {
        $crate::inventory::submit! {
            <$entry>::new_const(
                $id,
                $summary,
                ::core::module_path!(),
                $crate::plugin_params::defaults_of::<$params>,
                <$params as $crate::plugin_params::DescribeParams>::describe,
                $build,
            )
        }
    };
    ($entry:ty, id: $id:expr, summary: $summary:expr, build: $build:expr $(,)?) => {
        $crate::__register!($entry, id: $id, summary: $summary, defaults: $crate::plugin_params::Table::new, build: $build);
    };
}

impl<T: ?Sized> Entry<T> {
    /// Const constructor used by the registration macros.
    pub const fn new_const(
        id: &'static str,
        summary: &'static str,
        module: &'static str,
        defaults: fn() -> Table,
        params: fn() -> Vec<ParamInfo>,
        build: fn(&Table) -> Result<Box<T>>,
    ) -> Self {
        Entry { id, summary, module, defaults, params, build }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_ids_prefer_small_edits_and_substrings() {
        let known: Vec<String> = ["hwgq", "gauss", "softmax", "bitops"].iter().map(|s| s.to_string()).collect();
        assert_eq!(closest("hwg", &known), vec!["hwgq"]);
        assert_eq!(closest("gaus", &known), vec!["gauss"]);
        assert!(closest("zzzzzz", &known).is_empty());
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn kind_parse_round_trips_and_rejects_unknown() {
        for k in PluginKind::ALL {
            assert_eq!(PluginKind::parse(k.name()).unwrap(), k);
        }
        assert!(PluginKind::parse("quantiser").unwrap_err().to_string().contains("quantizer"));
    }
}
