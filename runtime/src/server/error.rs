//! Domain errors → gRPC status codes, in one table.

use tonic::Status;

/// The answer of every RPC whose issue has not landed yet: UNIMPLEMENTED naming the RPC.
pub fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by crius yet"))
}

/// Wire input that failed validation.
#[allow(dead_code)]
pub fn invalid(e: cri_api::validate::InvalidInput) -> Status {
    Status::invalid_argument(e.to_string())
}
