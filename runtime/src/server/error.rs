//! Domain errors → gRPC status codes, in one table.

use tonic::Status;

/// An error and its causes as one message, each cause once: a cause whose text the message
/// already holds (a `Display` that prints its `#[source]`) is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

/// The answer of every RPC whose issue has not landed yet: UNIMPLEMENTED naming the RPC.
pub fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by crius yet"))
}

/// Image store failures (lookups, records, removal, leases).
pub fn image_store(e: crius_image::StoreError) -> Status {
    use crius_image::StoreError as E;
    match &e {
        E::NotFound(_) => Status::not_found(chain(&e)),
        E::Db { .. } | E::Corrupt { .. } | E::Content(_) | E::Io { .. } | E::RegistryTls(_) => {
            Status::internal(chain(&e))
        }
    }
}

/// Pull failures: the registry's own answer keeps its meaning (unknown image → NOT_FOUND,
/// 5xx → UNAVAILABLE, timeout → DEADLINE_EXCEEDED), bad content is DATA_LOSS or INVALID_ARGUMENT.
pub fn pull(e: crius_image::PullError) -> Status {
    use crius_image::content::ContentError as C;
    use crius_image::unpack::{LayerError as L, UnpackError as U};
    use crius_image::{PullError as P, RegistryError as R};
    let msg = chain(&e);
    match e {
        P::Reference(_) | P::InvalidConfig { .. } => Status::invalid_argument(msg),
        P::Registry { source, .. } => match source {
            R::NotFound(_) | R::NoPlatform { .. } => Status::not_found(msg),
            R::Unauthorized(_) => Status::unauthenticated(msg),
            R::Server { .. } | R::Network(_) => Status::unavailable(msg),
            // The node's trust or identity must change before this can work.
            R::Certificate(_) => Status::failed_precondition(msg),
            R::Timeout(_) => Status::deadline_exceeded(msg),
            R::DigestMismatch { .. } | R::Content(C::DigestMismatch { .. } | C::SizeMismatch { .. }) => {
                Status::data_loss(msg)
            }
            R::InvalidManifest { .. } | R::BadAuth(_) | R::TooLarge { .. } | R::Content(C::BadDigest(_)) => {
                Status::invalid_argument(msg)
            }
            R::Content(C::Io { .. }) => Status::internal(msg),
            R::Tls { .. } => Status::failed_precondition(msg),
        },
        P::Layer { source, .. } => match source {
            L::Unpack(U::DiffIdMismatch { .. }) => Status::data_loss(msg),
            L::Unpack(U::Io { .. }) | L::Io { .. } => Status::internal(msg),
            L::Unpack(_) | L::Id(_) => Status::invalid_argument(msg),
        },
        P::Store { source, .. } => image_store(source),
        P::NoEndpoint { .. } | P::AuthFile(_) => Status::failed_precondition(msg),
        P::Task { .. } => Status::internal(msg),
    }
}

/// Pod sandbox failures. A plugin's or the kernel's refusal of what the request asked for
/// (an invalid sysctl) is INVALID_ARGUMENT; a missing network config is FAILED_PRECONDITION.
pub fn sandbox(e: crius_sandbox::SandboxError) -> Status {
    use crius_sandbox::SandboxError as E;
    let msg = chain(&e);
    if e.is_invalid_argument() {
        return Status::invalid_argument(msg);
    }
    match e {
        E::Invalid(_) => Status::invalid_argument(msg),
        E::NotFound { .. } | E::UnknownHandler(_) => Status::not_found(msg),
        E::NameReserved { .. } => Status::already_exists(msg),
        E::NetworkNotReady(_) | E::HostUnsupported(_) => Status::failed_precondition(msg),
        E::Namespaces(_)
        | E::Network(_)
        | E::Files(_)
        | E::Cgroup(_)
        | E::Pause(_)
        | E::Store(_)
        | E::Containers { .. }
        | E::Task(_) => Status::internal(msg),
    }
}

/// Container failures. A refused request is INVALID_ARGUMENT, a verb in the wrong state or on a
/// pod that is not ready FAILED_PRECONDITION, an exec past its timeout DEADLINE_EXCEEDED.
pub fn container(e: crate::container::ContainerError) -> Status {
    use crate::container::ContainerError as E;
    use crate::shim_client::ShimError as S;
    let msg = chain(&e);
    match e {
        E::NotFound(_) | E::PodNotFound(_) | E::ImageNotFound(_) => Status::not_found(msg),
        E::AlreadyExists { .. } => Status::already_exists(msg),
        E::Spec(crate::spec::SpecError::Unsupported(_)) => Status::failed_precondition(msg),
        E::Invalid(_) | E::Spec(_) => Status::invalid_argument(msg),
        E::Cdi(crate::cdi::CdiError::Unsupported { .. }) => Status::failed_precondition(msg),
        E::Cdi(crate::cdi::CdiError::Dir { .. }) => Status::internal(msg),
        E::Cdi(_) => Status::invalid_argument(msg),
        E::PodNotReady(_) | E::WrongState { .. } | E::Handler(_) => Status::failed_precondition(msg),
        E::ExecTimeout { .. } => Status::deadline_exceeded(msg),
        E::Checkpoint(c) if c.is_precondition() => Status::failed_precondition(msg),
        E::Checkpoint(c) if c.is_deadline() => Status::deadline_exceeded(msg),
        E::Checkpoint(c) if c.is_invalid() => Status::invalid_argument(msg),
        E::Checkpoint(_) => Status::internal(msg),
        E::Shim {
            source: S::Unreachable { .. } | S::Timeout(_),
            ..
        } => Status::unavailable(msg),
        E::Shim { .. } | E::Io { .. } | E::Record(_) | E::Image(_) => Status::internal(msg),
    }
}

/// A node verb's failure, as the side it came from maps it.
pub fn node(e: crate::node::NodeError) -> Status {
    match e {
        crate::node::NodeError::Sandbox(e) => sandbox(e),
        crate::node::NodeError::Container(e) => container(e),
        crate::node::NodeError::Host(m) => Status::internal(m),
    }
}

/// A GetContainerEvents subscriber that read too slowly was dropped.
pub fn events_lagged(e: crate::node::events::Lagged) -> Status {
    Status::resource_exhausted(e.to_string())
}

/// A streaming URL that could not be issued (too many tokens in flight, or no server).
pub fn streaming(e: crius_streaming::StreamingError) -> Status {
    use crius_streaming::StreamingError as E;
    let msg = chain(&e);
    match e {
        E::Token(_) => Status::resource_exhausted(msg),
        E::Bind { .. } => Status::unavailable(msg),
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Root;

    #[derive(Debug, thiserror::Error)]
    enum Mid {
        #[error("write layer: {0}")]
        Repeats(#[source] Root),
        #[error("write layer")]
        Hides(#[source] Root),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("create container c1")]
    struct Top(#[source] Mid);

    #[test]
    fn chain_names_every_cause_once() {
        assert_eq!(
            super::chain(&Top(Mid::Repeats(Root))),
            "create container c1: write layer: disk on fire"
        );
        assert_eq!(
            super::chain(&Top(Mid::Hides(Root))),
            "create container c1: write layer: disk on fire"
        );
    }
}
