//! The image store: references, registry pulls, the content store, layers and image records.
//!
//! This crate never sees tonic; errors are typed and mapped to gRPC codes once, in the daemon.
//! Entry point: [`store::ImageStore`] (open, pull, get, list, remove, lease, release, layer_dirs).

pub mod content;
#[cfg(test)]
mod fake_registry;
pub mod platform;
pub mod pull;
pub mod record;
pub mod reference;
mod refgrammar;
pub mod registry;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
mod test_util;
pub mod unpack;
pub mod usage;

pub use platform::Platform;
pub use pull::PullError;
pub use record::ImageRecord;
pub use reference::{ImageRef, Mirror, RegistryHosts};
pub use registry::{Credentials, RegistryError};
pub use store::{ImageStore, StoreConfig, StoreError};
