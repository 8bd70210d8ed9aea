//! What a `twoway-server` command failed with, and the exit code each
//! failure gives ([`crate::cli::EXIT_CODES`]): 1 internal error, 2 usage or
//! configuration error, 5 missing privilege.

use crate::cli::ControlFailure;
use crate::daemon::RunError;
use crate::pki::PkiError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// `run` stopped before it served.
    #[error(transparent)]
    Run(#[from] RunError),
    /// `status`, `kick` or `reload` got no answer.
    #[error(transparent)]
    Control(#[from] ControlFailure),
    /// A `pki` command.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Output could not be written as JSON.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Failure {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Run(e) => e.exit_code(),
            Self::Control(ControlFailure::Privilege(_)) => 5,
            Self::Control(ControlFailure::Config(_)) | Self::Pki(_) => 2,
            Self::Control(ControlFailure::Control(_)) | Self::Json(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ControlPrivilege;
    use crate::privilege::{DropError, NoNetAdmin};
    use std::io::{Error, ErrorKind};

    fn bind(kind: ErrorKind) -> Failure {
        RunError::Bind {
            what: "cannot listen".into(),
            source: Error::from(kind),
        }
        .into()
    }

    #[test]
    fn each_failure_has_its_documented_exit_code() {
        assert_eq!(
            Failure::from(RunError::NoNetAdmin(NoNetAdmin)).exit_code(),
            5
        );
        let not_root = DropError::NotRoot("twoway".into());
        assert_eq!(Failure::from(RunError::Drop(not_root)).exit_code(), 5);
        let no_user = DropError::NoUser("nobody-here".into());
        assert_eq!(Failure::from(RunError::Drop(no_user)).exit_code(), 1);
        let denied = ControlFailure::Privilege(ControlPrivilege("kick needs root".into()));
        assert_eq!(Failure::from(denied).exit_code(), 5);
        // A taken or foreign address is the configuration's fault, not the server's.
        assert_eq!(bind(ErrorKind::AddrInUse).exit_code(), 2);
        assert_eq!(bind(ErrorKind::AddrNotAvailable).exit_code(), 2);
        assert_eq!(bind(ErrorKind::PermissionDenied).exit_code(), 1);
    }
}
