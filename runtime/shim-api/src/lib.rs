//! The daemon↔shim protocol: versioned, length-prefixed serde messages on a unix socket under the
//! shim's state directory. Both `crius` and `crius-shim` use these types; this crate pulls in
//! neither tokio/tonic nor libcontainer.

/// Bumped whenever a message changes shape; a daemon refuses a shim that speaks another version.
pub const PROTOCOL_VERSION: u32 = 1;
