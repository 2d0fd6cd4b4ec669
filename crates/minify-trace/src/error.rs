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
    /// No cgroup v2 hierarchy is mounted (or another problem minify-host reports about the
    /// cgroup tree as a whole).
    #[error(transparent)]
    NoCgroup2(minify_host::CgroupError),
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

/// Find an `io::Error` in an error's source chain (aya nests them).
fn io_in_chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// An error and its sources, `outer: inner: ...` (aya's own messages omit the cause).
pub(crate) fn chain_message(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turn an aya error into ours: EPERM/EACCES anywhere in the chain means "not permitted".
pub(crate) fn aya_error(
    what: &str,
    program: &str,
    e: &(dyn std::error::Error + 'static),
) -> TraceError {
    let detail = chain_message(e);
    let verifier_log = match e.downcast_ref::<aya::programs::ProgramError>() {
        Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) => {
            verifier_log.to_string()
        }
        _ => String::new(),
    };
    // The verifier rejects a program with EACCES too; with a log that is not about rights.
    if let Some(io) = io_in_chain(e)
        && is_permission(io)
        && verifier_log.trim().is_empty()
    {
        return TraceError::NotPermitted {
            what: format!("{what} {program}"),
            source: std::io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(libc::EPERM)),
        };
    }
    TraceError::Load {
        program: program.to_owned(),
        detail,
        verifier_log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as aya nests them (`ProgramError::SyscallError` -> io).
    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Outer {
        what: &'static str,
        #[source]
        source: std::io::Error,
    }

    fn nested(errno: i32) -> Outer {
        Outer {
            what: "bpf_prog_load failed",
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn chain_message_names_every_cause() {
        let m = chain_message(&nested(libc::EINVAL));
        assert!(m.starts_with("bpf_prog_load failed: "), "{m}");
        assert!(m.contains("Invalid argument"), "{m}");
    }

    #[test]
    fn a_refusal_anywhere_in_the_chain_is_not_permitted() {
        for errno in [libc::EPERM, libc::EACCES] {
            let e = aya_error("loading", "sys_exit", &nested(errno));
            let TraceError::NotPermitted { what, source } = e else {
                panic!("{errno}: {e:?}");
            };
            assert_eq!(what, "loading sys_exit");
            assert_eq!(source.raw_os_error(), Some(errno));
        }
        // Anything else is a load error naming the program, with the causes.
        let e = aya_error("attaching", "sched_fork", &nested(libc::ENOENT));
        let TraceError::Load {
            program, detail, ..
        } = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(program, "sched_fork");
        assert!(detail.contains("No such file"), "{detail}");
    }
}
