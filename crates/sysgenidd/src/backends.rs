//! Hardware backends: sources of restore events that bump the generation.
//!
//! Each backend runs on its own thread and sends [`crate::inbox::Message::HardwareBump`]
//! through the inbox.
//! This build has no hardware backends yet; `auto` starts none and says so, and a list that
//! names one is refused with the list of what exists.

use crate::config::BackendChoice;
use crate::control::BackendStatus;
use crate::inbox::Inbox;

/// The names of the backends this build knows.
pub const KNOWN: &[&str] = &[];

/// Starts the chosen backends and reports on each.
pub fn start(choice: &BackendChoice, _inbox: &Inbox) -> Result<Vec<BackendStatus>, String> {
    match choice {
        BackendChoice::None => {
            tracing::info!(
                "hardware backends off (--backends none): only triggers bump the generation"
            );
            Ok(Vec::new())
        }
        BackendChoice::Auto => {
            tracing::info!(
                "no hardware backend is available in this build: only triggers bump the generation"
            );
            Ok(Vec::new())
        }
        BackendChoice::List(names) => {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !KNOWN.contains(&n.as_str()))
                .collect();
            if unknown.is_empty() {
                Ok(Vec::new())
            } else {
                Err(format!(
                    "unknown backend {}: this build knows {}",
                    unknown
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if KNOWN.is_empty() {
                        "none".to_owned()
                    } else {
                        KNOWN.join(", ")
                    }
                ))
            }
        }
    }
}
