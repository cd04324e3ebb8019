//! Why a backend cannot run: the reason shown in status and in the log.

use super::BackendKind;

/// Why a backend cannot run, or why the backends cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--backends` names backends this build does not know.
    #[error("unknown backend {}: this build knows {}", quoted(.0), known())]
    Unknown(Vec<String>),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn known() -> String {
    BackendKind::ALL.map(BackendKind::name).join(", ")
}
