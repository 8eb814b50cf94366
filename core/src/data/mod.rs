//! Data sources, transforms and loaders.
