//! Rendering for people (tables, one line per phase) and for machines (`--json`).

pub mod deploy;
pub mod logs;
pub mod releases;
pub mod status;
pub mod table;
pub mod terminal;
