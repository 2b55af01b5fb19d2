//! A phase's network: the `net` grant ([`grant`]), which addresses are internal
//! ([`address`]), and the `wasi:http` requests the host sends for a guest ([`client`]).
//! Programs run through `exec` under a `net` grant are confined by port instead (see
//! `confine`).

pub mod address;
pub mod client;
pub mod grant;

pub(crate) use client::{HttpHooks, NetPolicy};
pub use grant::NetGrant;
