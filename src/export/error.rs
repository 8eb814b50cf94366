//! What can stop an export ([`ExportError`]); every message names the file, layer or plugin.

use std::path::PathBuf;

/// An export failure.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint is a search's: its network is a soft mixture, not one architecture.
    #[error(
        "checkpoint `{}` is from a search run: export needs a retrained network. Retrain the searched \
         architecture (`edmips train -a <quant*_cfg> --ac <search>/arch.json`) and export that run's checkpoint",
        .path.display()
    )]
    SearchCheckpoint {
        /// The checkpoint.
        path: PathBuf,
    },

    /// The network to export is not a fixed-bit (or full-precision) one.
    #[error("the network is in search mode: only fixed-bit or full-precision networks can be exported")]
    SearchNetwork,

    /// A quantizer plugin has no export description.
    #[error(
        "layer {layer} `{name}`: quantizer `{plugin}` has no export description for {operand} bits {bits} \
         (it returns None from Quantizer::export_form), so this network cannot be exported; \
         implement `export_form` in the plugin"
    )]
    NotExportable {
        /// The plugin id.
        plugin: String,
        /// `weight` or `activation`.
        operand: String,
        /// The bit width.
        bits: u32,
        /// Searchable-layer index.
        layer: usize,
        /// Layer name.
        name: String,
    },

    /// `--ac` names other bits than the checkpoint was trained with.
    #[error(
        "--ac `{}` does not match the bits checkpoint `{}` was trained with (leave out --ac, or pass the \
         architecture file of that run):\n  {}",
        .arch.display(), .checkpoint.display(), .diffs.join("\n  ")
    )]
    ArchMismatch {
        /// The architecture file.
        arch: PathBuf,
        /// The checkpoint.
        checkpoint: PathBuf,
        /// One line per differing layer.
        diffs: Vec<String>,
    },

    /// The checkpoint does not hold what its own configuration needs.
    #[error("checkpoint `{}`: {message}", .path.display())]
    BadCheckpoint {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// An error from the network, a plugin or a file operation.
    #[error(transparent)]
    Core(#[from] edmips_core::Error),
}

impl From<candle_core::Error> for ExportError {
    fn from(e: candle_core::Error) -> Self {
        ExportError::Core(e.into())
    }
}

/// Result of the export functions.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;
