//! CRI `RuntimeService`: each handler converts, calls the domain, maps the error.

use std::pin::Pin;
use std::sync::Arc;

use cri_api::v1::runtime_service_server::RuntimeService;
use cri_api::v1::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{Crius, error, unimplemented};
use crate::info;

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
        Ok(Response::new(info::runtime_config()))
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

    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        Err(unimplemented("GetContainerEvents"))
    }

    // Answer UNIMPLEMENTED, naming the RPC, until their issue lands.
    // Sandbox verbs run detached inside the sandbox manager: a dropped RPC cannot cut them short.
    async fn run_pod_sandbox(&self, req: Request<RunPodSandboxRequest>) -> Rpc<RunPodSandboxResponse> {
        let pod_sandbox_id = self.0.sandboxes.run(req.into_inner()).await.map_err(error::sandbox)?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(&self, req: Request<StopPodSandboxRequest>) -> Rpc<StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.0.sandboxes.stop(id).await.map_err(error::sandbox)?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Rpc<RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.0.sandboxes.remove(id).await.map_err(error::sandbox)?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Rpc<PodSandboxStatusResponse> {
        let req = req.into_inner();
        let (status, info) =
            self.0.sandboxes.status(req.pod_sandbox_id, req.verbose).await.map_err(error::sandbox)?;
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(&self, req: Request<ListPodSandboxRequest>) -> Rpc<ListPodSandboxResponse> {
        let items = self.0.sandboxes.list(req.into_inner().filter).await.map_err(error::sandbox)?;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, _req: Request<CreateContainerRequest>) -> Rpc<CreateContainerResponse> {
        Err(unimplemented("CreateContainer"))
    }

    async fn start_container(&self, _req: Request<StartContainerRequest>) -> Rpc<StartContainerResponse> {
        Err(unimplemented("StartContainer"))
    }

    async fn stop_container(&self, _req: Request<StopContainerRequest>) -> Rpc<StopContainerResponse> {
        Err(unimplemented("StopContainer"))
    }

    async fn remove_container(&self, _req: Request<RemoveContainerRequest>) -> Rpc<RemoveContainerResponse> {
        Err(unimplemented("RemoveContainer"))
    }

    async fn list_containers(&self, _req: Request<ListContainersRequest>) -> Rpc<ListContainersResponse> {
        Err(unimplemented("ListContainers"))
    }

    async fn container_status(&self, _req: Request<ContainerStatusRequest>) -> Rpc<ContainerStatusResponse> {
        Err(unimplemented("ContainerStatus"))
    }

    async fn update_container_resources(
        &self,
        _req: Request<UpdateContainerResourcesRequest>,
    ) -> Rpc<UpdateContainerResourcesResponse> {
        Err(unimplemented("UpdateContainerResources"))
    }

    async fn reopen_container_log(
        &self,
        _req: Request<ReopenContainerLogRequest>,
    ) -> Rpc<ReopenContainerLogResponse> {
        Err(unimplemented("ReopenContainerLog"))
    }

    async fn exec_sync(&self, _req: Request<ExecSyncRequest>) -> Rpc<ExecSyncResponse> {
        Err(unimplemented("ExecSync"))
    }

    async fn exec(&self, _req: Request<ExecRequest>) -> Rpc<ExecResponse> {
        Err(unimplemented("Exec"))
    }

    async fn attach(&self, _req: Request<AttachRequest>) -> Rpc<AttachResponse> {
        Err(unimplemented("Attach"))
    }

    async fn port_forward(&self, _req: Request<PortForwardRequest>) -> Rpc<PortForwardResponse> {
        Err(unimplemented("PortForward"))
    }

    async fn container_stats(&self, _req: Request<ContainerStatsRequest>) -> Rpc<ContainerStatsResponse> {
        Err(unimplemented("ContainerStats"))
    }

    async fn list_container_stats(
        &self,
        _req: Request<ListContainerStatsRequest>,
    ) -> Rpc<ListContainerStatsResponse> {
        Err(unimplemented("ListContainerStats"))
    }

    async fn pod_sandbox_stats(&self, _req: Request<PodSandboxStatsRequest>) -> Rpc<PodSandboxStatsResponse> {
        Err(unimplemented("PodSandboxStats"))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _req: Request<ListPodSandboxStatsRequest>,
    ) -> Rpc<ListPodSandboxStatsResponse> {
        Err(unimplemented("ListPodSandboxStats"))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<CheckpointContainerRequest>,
    ) -> Rpc<CheckpointContainerResponse> {
        Err(unimplemented("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> Rpc<ListMetricDescriptorsResponse> {
        Err(unimplemented("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> Rpc<ListPodSandboxMetricsResponse> {
        Err(unimplemented("ListPodSandboxMetrics"))
    }
}
