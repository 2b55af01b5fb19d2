//! Authoring crate for Stagecraft phase plugins.
