//! The image store: references, registry pulls, the content store, layers and image records.
//!
//! This crate never sees tonic; errors are typed and mapped to gRPC codes once, in the daemon.

pub mod content;
pub mod reference;
pub mod unpack;
pub mod usage;
