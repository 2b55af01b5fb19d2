//! The one phase executor shared by deploy and rollback.
