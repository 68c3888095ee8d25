//! CRI `ImageService`: each handler converts, calls the domain, maps the error.

use std::sync::Arc;

use cri_api::v1::image_service_server::ImageService;
use cri_api::v1::*;
use tonic::{Request, Response, Status};

use super::{Crius, unimplemented};
use crate::info;

pub struct Images(pub Arc<Crius>);

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, _req: Request<ListImagesRequest>) -> Rpc<ListImagesResponse> {
        Err(unimplemented("ListImages"))
    }

    async fn image_status(&self, _req: Request<ImageStatusRequest>) -> Rpc<ImageStatusResponse> {
        Err(unimplemented("ImageStatus"))
    }

    async fn pull_image(&self, _req: Request<PullImageRequest>) -> Rpc<PullImageResponse> {
        Err(unimplemented("PullImage"))
    }

    async fn remove_image(&self, _req: Request<RemoveImageRequest>) -> Rpc<RemoveImageResponse> {
        Err(unimplemented("RemoveImage"))
    }

    /// CRI: must never fail (crictl calls it on every connect); the walk runs off the async workers.
    async fn image_fs_info(&self, _req: Request<ImageFsInfoRequest>) -> Rpc<ImageFsInfoResponse> {
        let root = self.0.config.root.clone();
        let resp = tokio::task::spawn_blocking(move || info::image_fs_info(&root))
            .await
            .map_err(|e| Status::internal(format!("ImageFsInfo walk failed: {e}")))?;
        Ok(Response::new(resp))
    }
}
