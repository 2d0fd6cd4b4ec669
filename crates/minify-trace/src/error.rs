//! The one error type of the tracer. Every variant names the file, program or value involved.

use std::path::PathBuf;

/// Everything that can go wrong while setting up, running or decoding a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The kernel refused for lack of privilege (not root, no CAP_BPF/CAP_PERFMON, cannot
    /// create cgroups). `what` says which step.
    #[error(
        "{what}: permission denied (run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
    )]
    NotPermitted {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// No cgroup v2 hierarchy is mounted.
    #[error(
        "no cgroup v2 hierarchy mounted (looked in /proc/self/mountinfo); mount one: `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroup2,
    /// A cgroup file or directory could not be created, written or removed.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel has no BTF, so struct offsets cannot be known.
    #[error("kernel BTF not found at {path} (needs CONFIG_DEBUG_INFO_BTF=y)")]
    NoBtf { path: PathBuf },
    /// BTF is present but malformed or lacks a type/member the programs need.
    #[error("kernel BTF {path}: {detail}")]
    Btf { path: PathBuf, detail: String },
    /// tracefs is not mounted and could not be mounted.
    #[error(
        "tracefs not mounted at /sys/kernel/tracing ({detail}); fix: `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoTracefs { detail: String },
    /// A tracepoint `format` file is missing a field the programs need, or unreadable.
    #[error("tracepoint format {path}: {detail}")]
    Format { path: PathBuf, detail: String },
    /// Bad [`crate::TraceOptions`].
    #[error("invalid option: {0}")]
    Options(String),
    /// Loading the eBPF object or a program failed; `verifier_log` holds the kernel's log
    /// when the verifier rejected it.
    #[error("loading eBPF program {program}: {detail}{}", if verifier_log.is_empty() { String::new() } else { format!("\nverifier log:\n{verifier_log}") })]
    Load {
        program: String,
        detail: String,
        verifier_log: String,
    },
    /// Attaching a program to its hook failed.
    #[error("attaching {program} to {hook}: {detail}")]
    Attach {
        program: String,
        hook: String,
        detail: String,
    },
    /// The background reader thread failed or panicked.
    #[error("ring buffer reader: {0}")]
    Reader(String),
    /// Starting or waiting for the traced command failed.
    #[error("command {command}: {detail}")]
    Spawn { command: String, detail: String },
    /// Any other I/O error, with the file it concerns.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl TraceError {
    /// Whether this is a problem of the machine (privileges, kernel features, mounts) rather
    /// than of the input: the CLI exits with code 3 for these.
    pub fn is_environment(&self) -> bool {
        !matches!(self, TraceError::Options(_) | TraceError::Spawn { .. })
    }

    /// Classify an I/O error from a privileged step: EPERM/EACCES become [`NotPermitted`].
    ///
    /// [`NotPermitted`]: TraceError::NotPermitted
    pub(crate) fn from_io(what: impl Into<String>, source: std::io::Error) -> TraceError {
        if is_permission(&source) {
            TraceError::NotPermitted {
                what: what.into(),
                source,
            }
        } else {
            TraceError::Io(std::io::Error::new(
                source.kind(),
                format!("{}: {source}", what.into()),
            ))
        }
    }
}

/// EPERM or EACCES.
pub(crate) fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        || e.kind() == std::io::ErrorKind::PermissionDenied
}
