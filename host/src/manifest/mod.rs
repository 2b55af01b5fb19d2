//! `stagecraft.toml`: environments, the pipeline, per-phase plugins, grants and limits, and the
//! state backend, parsed once into a validated model.
