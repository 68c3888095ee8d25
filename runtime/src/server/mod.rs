//! The CRI gRPC layer, and the only code in crius that touches tonic.
//!
//! Each RPC converts the request, calls the domain (`crate::node`, `crate::container`, the
//! sandbox and image crates) and maps the error (`error.rs`); it validates nothing and assembles
//! nothing itself. The readiness gate, the per-RPC tracing span and the per-RPC log line
//! (`log_layer.rs`) live here once, not in each handler.

mod deadline;
pub(crate) mod error;
mod ids;
mod image_service;
mod log_layer;
mod runtime_service;

pub use deadline::ClientDeadline;
pub use log_layer::RpcLog;

use std::sync::Arc;

use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;
use tonic::service::interceptor::InterceptedService;

pub use crate::node::Crius;

pub use error::unimplemented;

/// CRI: cri-client sends and accepts messages up to 16 MiB; tonic's default is 4 MiB.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// The readiness gate, applied to every RPC of both services.
#[derive(Clone)]
pub struct Gate(Arc<Crius>);

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.0.is_ready() {
            Ok(req)
        } else {
            Err(tonic::Status::unavailable(
                "crius is starting: state recovery has not finished yet",
            ))
        }
    }
}

pub type RuntimeSvc = InterceptedService<RuntimeServiceServer<runtime_service::Runtime>, Gate>;
pub type ImageSvc = InterceptedService<ImageServiceServer<image_service::Images>, Gate>;

/// Builds both CRI services over one shared state, gated and with 16 MiB message limits.
pub fn services(crius: Arc<Crius>) -> (RuntimeSvc, ImageSvc) {
    let runtime = RuntimeServiceServer::new(runtime_service::Runtime(crius.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let images = ImageServiceServer::new(image_service::Images(crius.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    (
        InterceptedService::new(runtime, Gate(crius.clone())),
        InterceptedService::new(images, Gate(crius)),
    )
}

/// The tracing span every RPC runs in, named by its gRPC path; the handlers record the ids the
/// RPC is about in its empty fields (`ids.rs`).
pub fn rpc_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!("rpc", method = %req.uri().path(), pod = Empty, container = Empty, image = Empty)
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;
    use crate::config::Config;

    #[test]
    fn gate_answers_unavailable_until_ready() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let images = crate::daemon::open_images(&Config::default(), dir.path(), db.clone()).unwrap();
        // Never the default state dir: sandbox recovery removes unknown pod state under it.
        let sandbox_config = Config {
            state: dir.path().join("state"),
            ..Config::default()
        };
        let sandboxes = crate::daemon::open_sandboxes(&sandbox_config, db.clone()).unwrap();
        let containers =
            crate::container::Containers::new(db.clone(), images.clone(), dir.path(), dir.path())
                .map(Arc::new)
                .unwrap();
        let crius = Crius::new(Config::default(), db, images, sandboxes, containers);
        let mut gate = Gate(crius.clone());
        let err = gate.call(tonic::Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        crius.mark_ready();
        assert!(gate.call(tonic::Request::new(())).is_ok());
    }
}
