//! The integration-test harness: a real `crius` daemon with its own directories and socket, a real
//! local registry (Debian's `docker-registry` on 127.0.0.1), test images built from Debian's
//! `busybox-static`, registries behind TLS or basic auth, and a tonic CRI client. Every fixture
//! cleans up on drop, also after a panic.

pub mod containers;
pub mod daemon;
pub mod daemon_db;
pub mod images;
pub mod index;
pub mod metrics;
pub mod pods;
pub mod registry;
pub mod secure_registry;
pub mod security;
pub mod stall;
pub mod streaming;
pub mod util;

pub use daemon::{Daemon, DaemonOptions};
pub use registry::Registry;
