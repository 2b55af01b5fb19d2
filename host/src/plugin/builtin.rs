//! The built-in plugins (`builtin:<name>`), compiled from plugins/builtin/* by build.rs and
//! embedded in the binary.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The component bytes of `builtin:<name>`.
pub(crate) fn bytes(name: &str) -> Option<&'static [u8]> {
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Every built-in plugin name, in a stable order.
pub fn builtin_names() -> Vec<&'static str> {
    EMBEDDED.iter().map(|(name, _)| *name).collect()
}
