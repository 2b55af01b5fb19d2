//! The component store: the exact component each release ran, kept by the state under its
//! sha256 so that a rollback can run it again (spec/state.md, "Components").
//!
//! Components are kept once however many releases name them, and a release names them only
//! through its plan's digests: the release record never holds component bytes. A component is
//! removed ([`crate::state::StateStore::sweep_components`]) only when no release the history
//! holds names it.
//!
//! Ordering, so that a sweep never removes a component a release needs: a deploy keeps its
//! components before it creates its release, and checks them again right after (keeping any a
//! sweep removed in between). A sweep decides what is unused from every release committed
//! before it, and shuts out the check while it removes (the file backend's commit lock, a
//! table lock in PostgreSQL), so the check after the release is committed either sees the
//! component kept or finds it gone and keeps it again.

use std::collections::BTreeSet;

use super::{State, StateError};

/// The most bytes a stored component may have: the most a plugin file may have.
pub const MAX_STORED_COMPONENT_BYTES: u64 = crate::plugin::MAX_COMPONENT_BYTES;

/// Whether `digest` is a sha256 as the store names components: 64 lowercase hex digits.
pub fn is_component_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuse a digest that is not one (it names a file or a row: nothing else may pass).
pub(crate) fn check_digest(digest: &str) -> anyhow::Result<()> {
    if is_component_digest(digest) {
        Ok(())
    } else {
        Err(StateError::new(format!(
            "{digest:?} is not a component digest (64 lowercase hex digits of sha256)"
        ))
        .into())
    }
}

/// Check that `bytes` are the component `digest` names. `Err` says what they are instead.
pub(crate) fn verify(digest: &str, bytes: &[u8]) -> Result<(), String> {
    let actual = crate::plugin::sha256_hex(bytes);
    if actual == digest {
        Ok(())
    } else {
        Err(format!("its {} bytes have sha256 {actual}", bytes.len()))
    }
}

/// The cause of the error a store gives for a component whose bytes are not its digest's (a
/// damaged copy), so a caller can tell it from a store that cannot be read.
#[derive(Debug)]
pub struct DamagedComponent {
    pub digest: String,
}

impl std::fmt::Display for DamagedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "component {} is damaged", self.digest)
    }
}

impl std::error::Error for DamagedComponent {}

impl DamagedComponent {
    /// The store's error for it: `message` says where it is and what to do.
    pub(crate) fn error(digest: &str, message: String) -> anyhow::Error {
        StateError::caused_by(
            message,
            DamagedComponent {
                digest: digest.to_string(),
            },
        )
        .into()
    }

    /// Whether `error` is a store's error for a damaged component.
    pub fn is(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| cause.is::<DamagedComponent>())
    }
}

/// Every component digest a release of `state` names in its plan.
pub fn referenced_components(state: &State) -> BTreeSet<String> {
    state
        .releases
        .iter()
        .filter_map(|r| r.plan.as_ref())
        .flat_map(|plan| plan.phases.iter().map(|p| p.digest.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_hex_names_a_component() {
        let good = "a".repeat(64);
        assert!(is_component_digest(&good));
        assert!(!is_component_digest(&"A".repeat(64)));
        assert!(!is_component_digest(&"a".repeat(63)));
        assert!(!is_component_digest("../../etc/passwd"));
        assert!(check_digest(&format!("{}/", "a".repeat(63))).is_err());
    }

    #[test]
    fn verification_names_what_the_bytes_are() {
        let digest = crate::plugin::sha256_hex(b"wasm");
        assert!(verify(&digest, b"wasm").is_ok());
        let why = verify(&digest, b"wasn").unwrap_err();
        assert!(why.starts_with("its 4 bytes have sha256 "), "{why}");
    }
}
