//! CRI `RuntimeService`: each handler converts, calls the domain, maps the error.

use std::pin::Pin;
use std::sync::Arc;

use cri_api::v1::runtime_service_server::RuntimeService;
use cri_api::v1::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{Crius, error, ids};
use crate::info;
use crius_streaming::Pending;

pub struct Runtime(pub Arc<Crius>);

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for Runtime {
    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

    async fn version(&self, _req: Request<VersionRequest>) -> Rpc<VersionResponse> {
        Ok(Response::new(info::version()))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Rpc<StatusResponse> {
        let verbose = req.into_inner().verbose;
        Ok(Response::new(info::status(
            &self.0.config,
            self.0.is_ready(),
            verbose,
        )))
    }

    async fn runtime_config(&self, _req: Request<RuntimeConfigRequest>) -> Rpc<RuntimeConfigResponse> {
        Ok(Response::new(info::runtime_config(self.0.config.cgroup_driver())))
    }

    /// CRI: kubelet pushes the node's pod CIDR here. crius takes pod addressing from the CNI
    /// configuration (as CRI-O does), so the value is logged and otherwise not used.
    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Rpc<UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr);
        tracing::info!(pod_cidr = ?cidr, "runtime config update received; pod addressing comes from CNI");
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    /// A stream of container events for as long as the client listens; a client that reads
    /// too slowly gets RESOURCE_EXHAUSTED and the stream ends (it never slows the runtime).
    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        use futures_util::StreamExt;
        let stream = self.0.events.subscribe().map(|r| r.map_err(error::events_lagged));
        Ok(Response::new(Box::pin(stream)))
    }

    // Sandbox verbs run detached inside the sandbox manager: a dropped RPC cannot cut them short.
    async fn run_pod_sandbox(&self, req: Request<RunPodSandboxRequest>) -> Rpc<RunPodSandboxResponse> {
        let pod_sandbox_id = self.0.run_pod(ids::inner(req)).await.map_err(error::sandbox)?;
        ids::record(ids::POD, &pod_sandbox_id);
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(&self, req: Request<StopPodSandboxRequest>) -> Rpc<StopPodSandboxResponse> {
        let id = ids::inner(req).pod_sandbox_id;
        self.0.sandboxes.stop(id).await.map_err(error::sandbox)?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Rpc<RemovePodSandboxResponse> {
        let id = ids::inner(req).pod_sandbox_id;
        self.0.sandboxes.remove(id).await.map_err(error::sandbox)?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Rpc<PodSandboxStatusResponse> {
        let req = ids::inner(req);
        let (status, info) = self
            .0
            .sandboxes
            .status(req.pod_sandbox_id, req.verbose)
            .await
            .map_err(error::sandbox)?;
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(&self, req: Request<ListPodSandboxRequest>) -> Rpc<ListPodSandboxResponse> {
        let items = self
            .0
            .sandboxes
            .list(req.into_inner().filter)
            .await
            .map_err(error::sandbox)?;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, req: Request<CreateContainerRequest>) -> Rpc<CreateContainerResponse> {
        // `sandbox_config` is the client's copy of the pod config; the pod's record rules.
        let req = ids::inner(req);
        let container_id = self
            .0
            .create_container(&req.pod_sandbox_id, req.config)
            .await
            .map_err(error::node)?;
        ids::record(ids::CONTAINER, &container_id);
        Ok(Response::new(CreateContainerResponse { container_id }))
    }

    async fn start_container(&self, req: Request<StartContainerRequest>) -> Rpc<StartContainerResponse> {
        let id = ids::inner(req).container_id;
        let c = self.0.containers.clone();
        detached(async move { c.start(&id).await }).await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(&self, req: Request<StopContainerRequest>) -> Rpc<StopContainerResponse> {
        let req = ids::inner(req);
        let c = self.0.containers.clone();
        detached(async move { c.stop(&req.container_id, req.timeout).await }).await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(&self, req: Request<RemoveContainerRequest>) -> Rpc<RemoveContainerResponse> {
        let id = ids::inner(req).container_id;
        let c = self.0.containers.clone();
        detached(async move { c.remove(&id).await }).await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(&self, req: Request<ListContainersRequest>) -> Rpc<ListContainersResponse> {
        let filter = req.into_inner().filter;
        let containers = self
            .0
            .containers
            .list(filter.as_ref())
            .await
            .map_err(error::container)?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(&self, req: Request<ContainerStatusRequest>) -> Rpc<ContainerStatusResponse> {
        let req = ids::inner(req);
        let id = req.container_id;
        let status = self
            .0
            .containers
            .status(&id, req.verbose)
            .await
            .map_err(error::container)?;
        Ok(Response::new(status))
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Rpc<UpdateContainerResourcesResponse> {
        let req = ids::inner(req);
        let id = req.container_id;
        let c = self.0.containers.clone();
        detached(async move { c.update_resources(&id, req.linux).await }).await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Rpc<ReopenContainerLogResponse> {
        let id = ids::inner(req).container_id;
        self.0
            .containers
            .reopen_log(&id)
            .await
            .map_err(error::container)?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> Rpc<ExecSyncResponse> {
        let req = ids::inner(req);
        let id = req.container_id;
        let c = self.0.containers.clone();
        // Detached, so a client that gives up early still gets its exec killed at the timeout.
        let resp = detached(async move { c.exec_sync(&id, req.cmd, req.timeout).await }).await?;
        Ok(Response::new(resp))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Rpc<ExecResponse> {
        let c = &self.0.containers;
        let req = c.exec_request(ids::inner(req)).await.map_err(error::container)?;
        let url = self
            .streaming()?
            .url(Pending::Exec(req))
            .map_err(error::streaming)?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(&self, req: Request<AttachRequest>) -> Rpc<AttachResponse> {
        let c = &self.0.containers;
        let req = c
            .attach_request(ids::inner(req))
            .await
            .map_err(error::container)?;
        let url = self
            .streaming()?
            .url(Pending::Attach(req))
            .map_err(error::streaming)?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(&self, req: Request<PortForwardRequest>) -> Rpc<PortForwardResponse> {
        let mut req = ids::inner(req);
        req.pod_sandbox_id = self
            .0
            .port_forward_pod(&req.pod_sandbox_id)
            .await
            .map_err(error::node)?;
        let url = self
            .streaming()?
            .url(Pending::PortForward(req))
            .map_err(error::streaming)?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(&self, req: Request<ContainerStatsRequest>) -> Rpc<ContainerStatsResponse> {
        let id = ids::inner(req).container_id;
        let stats = self.0.containers.stats(&id).await.map_err(error::container)?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Rpc<ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self
            .0
            .containers
            .list_stats(filter.as_ref())
            .await
            .map_err(error::container)?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(&self, req: Request<PodSandboxStatsRequest>) -> Rpc<PodSandboxStatsResponse> {
        let id = ids::inner(req).pod_sandbox_id;
        let stats = self.0.pod_stats(&id).await.map_err(error::node)?;
        Ok(Response::new(PodSandboxStatsResponse { stats: Some(stats) }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Rpc<ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self.0.list_pod_stats(filter).await.map_err(error::node)?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> Rpc<CheckpointContainerResponse> {
        let req = ids::inner(req);
        let c = self.0.containers.clone();
        detached(async move { c.checkpoint(&req.container_id, &req.location, req.timeout).await }).await?;
        Ok(Response::new(CheckpointContainerResponse {}))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> Rpc<ListMetricDescriptorsResponse> {
        let descriptors = self.0.metric_descriptors();
        Ok(Response::new(ListMetricDescriptorsResponse { descriptors }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> Rpc<ListPodSandboxMetricsResponse> {
        let pod_metrics = self.0.list_pod_metrics().await.map_err(error::node)?;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }
}

impl Runtime {
    fn streaming(&self) -> Result<&crius_streaming::StreamingServer, Status> {
        self.0
            .streaming
            .get()
            .map(|s| &**s)
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))
    }
}

/// Runs a mutating container verb in its own task, so a client that goes away mid-call never
/// cancels it half-way.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, crate::container::ContainerError>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(error::container)
}
