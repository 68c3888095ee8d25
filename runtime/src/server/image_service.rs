//! CRI `ImageService`: each handler converts, calls the domain, maps the error.
//!
//! Invariants: mutating work (pull, remove) runs in a spawned task, so it finishes or rolls back
//! on its own when the client's deadline drops the handler future; every store call runs on the
//! blocking pool.

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1::image_service_server::ImageService;
use cri_api::v1::*;
use tonic::{Request, Response, Status};

use super::{Crius, error, ids};
use crate::info;

pub struct Images(pub Arc<Crius>);

type Rpc<T> = Result<Response<T>, Status>;

fn spec_image(spec: Option<ImageSpec>) -> String {
    spec.map(|s| s.image).unwrap_or_default()
}

fn task_failed(rpc: &str, e: tokio::task::JoinError) -> Status {
    Status::internal(format!("{rpc} task failed: {e}"))
}

/// Runs a store call on the blocking pool (the store reads redb and files).
async fn blocking<T: Send + 'static>(
    rpc: &'static str,
    f: impl FnOnce() -> Result<T, crius_image::StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| task_failed(rpc, e))?
        .map_err(error::image_store)
}

#[tonic::async_trait]
impl ImageService for Images {
    /// CRI: the filter names one image in any form ImageStatus accepts.
    async fn list_images(&self, req: Request<ListImagesRequest>) -> Rpc<ListImagesResponse> {
        let filter = spec_image(req.into_inner().filter.and_then(|f| f.image));
        let store = self.0.images.clone();
        let images = blocking("ListImages", move || {
            let records = if filter.is_empty() {
                store.list()?
            } else {
                store.get(&filter)?.into_iter().collect()
            };
            let pinned = store.pinned_ids()?;
            Ok(records.iter().map(|r| r.to_cri(pinned.contains(&r.id))).collect())
        })
        .await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    /// CRI: an unknown image is OK with no image; `verbose` adds `info` (chain ID, image config).
    async fn image_status(&self, req: Request<ImageStatusRequest>) -> Rpc<ImageStatusResponse> {
        let req = ids::inner(req);
        let store = self.0.images.clone();
        let resp = blocking("ImageStatus", move || {
            let Some(record) = store.get(&spec_image(req.image))? else {
                return Ok(ImageStatusResponse::default());
            };
            let info = if req.verbose {
                record.verbose_info(&store.config_json(&record.id)?)
            } else {
                HashMap::new()
            };
            Ok(ImageStatusResponse {
                image: Some(record.to_cri(store.pinned_ids()?.contains(&record.id))),
                info,
            })
        })
        .await?;
        Ok(Response::new(resp))
    }

    async fn pull_image(&self, req: Request<PullImageRequest>) -> Rpc<PullImageResponse> {
        let req = ids::inner(req);
        // An empty or malformed reference is the image crate's InvalidArgument.
        let image = spec_image(req.image);
        let creds = req
            .auth
            .map(|a| crius_image::Credentials {
                username: a.username,
                password: a.password,
                auth: a.auth,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
                server_address: a.server_address,
            })
            .unwrap_or_default();
        let store = self.0.images.clone();
        let metrics = self.0.metrics.clone();
        // Counted inside the task: a pull that outlives its client is counted when it ends.
        let image_ref = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let pulled = store.pull(&image, &creds).await;
            metrics.observe_pull(pulled.is_ok(), started.elapsed());
            pulled
        })
        .await
        .map_err(|e| task_failed("PullImage", e))?
        .map_err(error::pull)?;
        Ok(Response::new(PullImageResponse { image_ref }))
    }

    /// CRI: removing an image that does not exist succeeds.
    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> Rpc<RemoveImageResponse> {
        let image = spec_image(ids::inner(req).image);
        let store = self.0.images.clone();
        blocking("RemoveImage", move || store.remove(&image)).await?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    /// CRI: must never fail (crictl calls it on every connect); the walk runs off the async workers.
    async fn image_fs_info(&self, _req: Request<ImageFsInfoRequest>) -> Rpc<ImageFsInfoResponse> {
        let crius = self.0.clone();
        let resp = tokio::task::spawn_blocking(move || {
            let known = |name: &std::ffi::OsStr| crius.containers.fresh_layer_usage(name.to_str()?);
            info::image_fs_info(&crius.config.root, &crius.layer_usage, known)
        })
        .await
        .map_err(|e| Status::internal(format!("ImageFsInfo walk failed: {e}")))?;
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use crius_image::content::ContentError;
    use crius_image::{PullError, RegistryError, StoreError};
    use tonic::Code;

    use super::error;

    fn registry(source: RegistryError) -> PullError {
        PullError::Registry {
            reference: "r".into(),
            endpoint: "e".into(),
            source,
        }
    }

    #[test]
    fn pull_failures_keep_distinct_codes() {
        let cases = [
            (
                registry(RegistryError::NotFound("manifest unknown".into())),
                Code::NotFound,
            ),
            (
                registry(RegistryError::Unauthorized("denied".into())),
                Code::Unauthenticated,
            ),
            (
                registry(RegistryError::Server {
                    status: 503,
                    message: "down".into(),
                }),
                Code::Unavailable,
            ),
            (
                registry(RegistryError::Network("refused".into())),
                Code::Unavailable,
            ),
            (
                registry(RegistryError::Timeout("slow".into())),
                Code::DeadlineExceeded,
            ),
            (
                registry(RegistryError::DigestMismatch {
                    expected: "a".into(),
                    actual: "b".into(),
                }),
                Code::DataLoss,
            ),
            (
                registry(RegistryError::InvalidManifest {
                    digest: "d".into(),
                    why: "too big".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                registry(RegistryError::Content(ContentError::BadDigest("x".into()))),
                Code::InvalidArgument,
            ),
            (
                registry(RegistryError::TooLarge {
                    what: "manifest",
                    limit: 4 << 20,
                    size: Some(1 << 30),
                }),
                Code::InvalidArgument,
            ),
            (
                PullError::Layer {
                    reference: "r".into(),
                    digest: "d".into(),
                    source: crius_image::unpack::UnpackError::TooLarge {
                        what: "GNU long-name entry",
                        size: 1 << 30,
                        limit: 1 << 20,
                    }
                    .into(),
                },
                Code::InvalidArgument,
            ),
            (
                PullError::Reference(crius_image::ImageRef::parse("Bad Name!").unwrap_err()),
                Code::InvalidArgument,
            ),
            (
                PullError::NoEndpoint {
                    reference: "r".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                registry(RegistryError::Certificate(
                    "invalid peer certificate: UnknownIssuer".into(),
                )),
                Code::FailedPrecondition,
            ),
            (
                PullError::AuthFile(crius_image::registry::auth_file::AuthFileError {
                    path: "/n/config.json".into(),
                    why: "not valid JSON at line 1 column 1".into(),
                }),
                Code::FailedPrecondition,
            ),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            let status = error::pull(e);
            assert_eq!(status.code(), code, "{msg}");
            assert_eq!(status.message(), msg, "the message is the domain error's");
        }
        assert_eq!(
            error::image_store(StoreError::NotFound("x".into())).code(),
            Code::NotFound
        );
    }
}
