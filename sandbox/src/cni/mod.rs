//! A client for the CNI exec interface (no maintained Rust client exists): configuration loading,
//! plugin invocation, result caching.

mod config;

pub use config::{ConfigError, NetworkConfig, PluginConfig, load_network};
