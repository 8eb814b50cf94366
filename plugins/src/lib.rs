//! EdMIPS plugins.
