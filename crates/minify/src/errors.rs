//! Exit codes and the one place that maps an error to one: an explicit marker
//! ([`with_code`], [`env_error`]) wins, then the first library error in the chain that can
//! tell a machine problem from bad input decides, and everything else is an input error.
//! Also what an interrupted command says it kept ([`Kept`]).

use minify_image::{ImageError, SinkError, SourceError};
use minify_runtime::RuntimeError;
use minify_trace::TraceError;

/// Exit codes, the contract in docs/DESIGN.md.
pub mod exit {
    /// The minified image failed verification.
    pub const VERIFY_FAILED: u8 = 1;
    /// A policy refused the output (`--fail-on-shell`).
    pub const POLICY_FAILED: u8 = 1;
    /// Usage or input error.
    pub const USAGE: u8 = 2;
    /// Environment: no daemon, no eBPF rights.
    pub const ENVIRONMENT: u8 = 3;
    /// Interrupted by Ctrl-C (128 + SIGINT, what shells report).
    pub const INTERRUPTED: u8 = 130;
    /// Stopped by SIGTERM (128 + SIGTERM), e.g. a cancelled CI job.
    pub const TERMINATED: u8 = 143;
}

/// Mark an error as an environment problem (exit 3): no daemon, no eBPF rights, no tracefs.
/// Only for errors no library classifies (see [`exit_code`]).
pub fn env_error(error: impl Into<anyhow::Error>) -> anyhow::Error {
    with_code(error, exit::ENVIRONMENT)
}

/// Mark an error with an explicit exit code.
pub fn with_code(error: impl Into<anyhow::Error>, code: u8) -> anyhow::Error {
    error.into().context(FailureMarker(code))
}

/// Attached to an error chain to pick the exit code.
#[derive(Debug)]
pub struct FailureMarker(pub u8);
impl std::fmt::Display for FailureMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}
impl std::error::Error for FailureMarker {}

/// Whether a library error in a chain is a problem of the machine (no daemon, no eBPF
/// rights), `None` for an error no library classifies.
fn environment(e: &(dyn std::error::Error + 'static)) -> Option<bool> {
    if let Some(e) = e.downcast_ref::<ImageError>() {
        Some(e.is_environment())
    } else if let Some(e) = e.downcast_ref::<SourceError>() {
        Some(e.is_environment())
    } else if let Some(e) = e.downcast_ref::<SinkError>() {
        Some(e.is_environment())
    } else if let Some(e) = e.downcast_ref::<RuntimeError>() {
        Some(e.is_environment())
    } else {
        e.downcast_ref::<TraceError>()
            .map(TraceError::is_environment)
    }
}

/// The exit code an error calls for: the outermost explicit marker; else 3 when the
/// outermost library error in the chain says the environment is at fault; else 2.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    // `chain()` yields anyhow's context wrappers, which a plain `dyn Error` downcast
    // does not see through; `anyhow::Error::downcast_ref` walks the context chain.
    if let Some(m) = err.downcast_ref::<FailureMarker>() {
        return m.0;
    }
    match err.chain().find_map(environment) {
        Some(true) => exit::ENVIRONMENT,
        _ => exit::USAGE,
    }
}

/// The exit code an error calls for and its one-line message (what `main` prints after
/// `minify: error: `, and what a report's `error` holds).
pub fn describe(err: &anyhow::Error) -> (u8, String) {
    let code = exit_code(err);
    let marker = err.downcast_ref::<FailureMarker>().map(ToString::to_string);
    // One line: the outermost context first, then its causes (without the marker,
    // and without a cause that only repeats the end of the line so far).
    let mut msg = String::new();
    for part in err.chain().map(ToString::to_string) {
        if Some(&part) == marker.as_ref() || msg.ends_with(&part) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&part);
    }
    // One line, whatever the causes hold.
    (code, msg.replace('\n', "\\n"))
}

/// What a command has finished making and keeps on purpose even when it is interrupted (a
/// written output, an allowlist file), so the interruption's message says what stays instead
/// of claiming that everything was removed.
#[derive(Debug, Default)]
pub struct Kept(std::sync::Mutex<Vec<String>>);

impl Kept {
    /// Record `what` (e.g. `the output app:1-min (written, not verified)`) as staying.
    pub fn add(&self, what: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(what);
    }

    /// `everything this run made was removed`, or what stays besides.
    pub fn removed_message(&self) -> String {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.is_empty() {
            "everything this run made was removed".to_owned()
        } else {
            format!(
                "everything else this run made was removed, but {} {} kept",
                kept.join(" and "),
                if kept.len() == 1 { "is" } else { "are" }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    fn env_trace_error() -> TraceError {
        TraceError::Io(std::io::Error::other("no tracefs"))
    }

    #[test]
    fn exit_codes_are_decided_here() {
        // A library error says itself whether the machine is at fault, however deep in
        // the context it is.
        let e = anyhow::Error::new(env_trace_error()).context("starting the tracer");
        assert_eq!(exit_code(&e), exit::ENVIRONMENT);
        let e = anyhow::Error::new(RuntimeError::ImageNotFound {
            image: "app:1".into(),
        })
        .context("opening app:1");
        assert_eq!(exit_code(&e), exit::USAGE);
        // An explicit marker outside wins over the library's word.
        let e = with_code(env_trace_error(), exit::USAGE);
        assert_eq!(exit_code(&e), exit::USAGE);
        // Anything else is bad input; `env_error` marks what no library classifies.
        let e: anyhow::Result<()> = Err(std::io::Error::other("x")).context("reading a.json");
        assert_eq!(exit_code(&e.unwrap_err()), exit::USAGE);
        let e = env_error(anyhow::anyhow!("no cgroup v2"));
        assert_eq!(exit_code(&e), exit::ENVIRONMENT);
        // The message has no marker in it, and is one line.
        let (code, msg) = describe(&with_code(anyhow::anyhow!("a\nb"), exit::USAGE).context("c"));
        assert_eq!((code, msg.as_str()), (exit::USAGE, "c: a\\nb"));
    }
}
