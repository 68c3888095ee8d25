//! The exit status written on the error stream, as client-go's remotecommand decodes it:
//! a `metav1.Status` JSON for protocol v4/v5, plain text (only on failure) for v2/v3.

use serde_json::json;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Failed(String),
}

/// `metav1.Status` JSON for v4/v5. CRI: the cause's key is `reason` and its message must parse
/// as the exit code.
pub fn status_json(o: &Outcome) -> Vec<u8> {
    let v = match o {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).expect("status serializes")
}

/// Plain-text error for v1–v3 (nothing on success).
pub fn status_text(o: &Outcome) -> Option<Vec<u8>> {
    match o {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => {
            Some(format!("command terminated with non-zero exit code: {code}").into_bytes())
        }
        Outcome::Failed(msg) => Some(msg.clone().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_exit_carries_the_code_as_a_cause() {
        let v: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(ok["status"], "Success");
        assert_eq!(status_text(&Outcome::Exited(0)), None);
    }
}
