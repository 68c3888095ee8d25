//! The crius daemon: configuration, the CRI gRPC server (the only tonic code), the runtime-wide
//! queries (version, status, filesystem info), start-up recovery, the Prometheus endpoint and the
//! process lifecycle.

pub mod cdi;
pub mod config;
pub mod container;
pub mod daemon;
mod dir_names;
pub mod handlers;
pub mod info;
pub mod metrics;
pub mod node;
mod notify;
pub mod private;
pub(crate) mod proc_stat;
pub mod server;
pub mod shim_client;
pub mod spec;
pub mod store;
