//! The error type shared by every edmips crate.
//!
//! Every variant says *what* was wrong and *where* (file, key, plugin id, layer), so the CLI can
//! print it as it is. Library code never panics on user input; it returns one of these.

use std::path::PathBuf;

/// Result alias used across edmips.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in edmips.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// An id was looked up in a registry and not found.
    #[error("unknown {kind} id `{id}`; {}", known_ids_hint(.suggestions, .known))]
    UnknownId {
        /// Which registry (quantizer, relaxation, cost, backbone, config).
        kind: &'static str,
        /// The id that was asked for.
        id: String,
        /// Known ids closest to `id`, best first.
        suggestions: Vec<String>,
        /// Every known id, sorted.
        known: Vec<String>,
    },

    /// Two registrations share one id.
    #[error("duplicate {kind} id `{id}`: registered by `{first}` and by `{second}`")]
    DuplicateId {
        /// Which registry.
        kind: &'static str,
        /// The shared id.
        id: String,
        /// Module path of the first registration.
        first: String,
        /// Module path of the second registration.
        second: String,
    },

    /// A configuration value is missing, malformed or out of range.
    #[error("configuration error in {context}: key `{key}`: {message}")]
    Config {
        /// Where the value came from: a file path, a plugin id, `--set`, ...
        context: String,
        /// The offending key (dotted path).
        key: String,
        /// What was expected.
        message: String,
    },

    /// A quantizer was asked for a bit width or operand it does not support.
    #[error("quantizer `{quantizer}` does not support {operand} bit width {bits}: {expected}")]
    UnsupportedBits {
        /// Quantizer id.
        quantizer: String,
        /// `weight` or `activation`.
        operand: String,
        /// The bit width asked for.
        bits: u32,
        /// What is supported.
        expected: String,
    },

    /// A tensor or input had the wrong shape.
    #[error("shape error in {context}: expected {expected}, found {found}")]
    Shape {
        /// Layer or input name.
        context: String,
        /// The expected shape.
        expected: String,
        /// The shape that was given.
        found: String,
    },

    /// A file could not be read or written.
    #[error("{action} `{}`: {source}", .path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A data set is missing, malformed or inconsistent.
    #[error("data error: {0}")]
    Data(String),

    /// An architecture (per-layer bits) file is malformed or does not fit the network.
    #[error("architecture file `{}`: {message}", .path.display())]
    ArchFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the layer where it applies.
        message: String,
    },

    /// A loss, metric or parameter is NaN or infinite; the message names which and its value.
    #[error("non-finite {0}")]
    NonFinite(String),

    /// A CUDA-specific failure (kernel compilation, launch).
    #[error("cuda: {0}")]
    Cuda(String),

    /// Anything else, with a message that says what happened.
    #[error("{0}")]
    Msg(String),
}

fn known_ids_hint(suggestions: &[String], known: &[String]) -> String {
    let mut s = String::new();
    if !suggestions.is_empty() {
        s.push_str(&format!("did you mean {}? ", quote_list(suggestions)));
    }
    if known.is_empty() {
        s.push_str("no ids are registered (is the crate that provides them linked?)");
    } else {
        s.push_str(&format!("known ids: {}", quote_list(known)));
    }
    s
}

fn quote_list(v: &[String]) -> String {
    v.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// Shorthand for [`Error::Msg`].
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(context: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { context: context.into(), key: key.into(), message: message.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}
