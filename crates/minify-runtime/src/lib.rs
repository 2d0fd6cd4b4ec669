//! minify-runtime: running images for minify. Today that is the Docker engine through bollard;
//! a daemonless runtime can slot in behind the same types later.
//!
//! The lifecycle the pipeline drives:
//! ```text
//! Runtime::connect ─► inspect_image ─► start(RunSpec) ─► Container
//!     Container::wait_ready ─► run_probe(Probe)... ─► stop ─► remove   (Drop removes too)
//! ```
//! - The container runs the image's own entrypoint/cmd (overridable, [`Overrides`]), is not
//!   privileged, and gets nothing mounted or injected.
//! - [`RunSpec::cgroup_parent`] puts it under the tracer's cgroup so the eBPF filter catches
//!   its very first exec. Docker's cgroupfs driver also makes v1 controller directories
//!   `/sys/fs/cgroup/<ctrl>/<parent>`; [`Container::remove`] (and `Drop`) remove them once the
//!   container is gone. The v2 directory belongs to whoever made it (the tracer).
//! - Every container is named `minify-<random>`, labelled [`LABEL`]`=1` and carries the
//!   process that made it in [`OWNER_LABEL`] ([`Owner`]), so leftovers of a killed run can
//!   be told from runs in progress and removed ([`Runtime::gc_plan`], `minify gc`).
//! - [`Runtime::temp_image`] names a temporary image (`minify-verify/<random>:<owner>`, e.g.
//!   a copy of a file output to verify) and removes it when dropped.
//! - Probes ([`Probe`]) run on the host (`sh -c`), inside the container (Docker exec, without
//!   a shell when the command needs none) or as HTTP GETs on every exposed TCP port; each
//!   gives a [`ProbeResult`] and never an error, so a failing probe is data, not a crash.

mod container;
mod docker;
mod gc;
mod image;
mod probe;

// Cgroups and owners are minify-host's; the names callers of this crate met here stay.
pub use container::{Container, Readiness};
pub use docker::{ExposedPort, ImageInfo, Overrides, RunSpec, Runtime};
pub use gc::{CGROUP_GRACE, GcPlan, Kept, Leftover, VERIFY_REPO};
pub use image::TempImage;
pub use minify_host::cgroup::{
    CgroupError, CgroupLayout, CgroupPin, TraceCgroupDirs, is_trace_cgroup_name,
    remove_v1_controller_dirs, trace_cgroups, validate_cgroup_parent,
};
pub use minify_host::owner::{BadOwner, Liveness, OWNER_LABEL, Owner};
pub use probe::{
    ExecMode, Healthcheck, Probe, ProbeOutcome, ProbeResult, exec_mode, truncate_output,
};

/// The label every container minify creates carries (value `1`).
pub const LABEL: &str = "org.minify.run";

/// Errors from the container runtime. Each names the image or container it is about.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The Docker daemon cannot be reached (not running, no permission on the socket).
    #[error("cannot reach the Docker daemon (is dockerd running?): {source}")]
    Connect {
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is not in the daemon.
    #[error("image {image} is not in the Docker daemon")]
    ImageNotFound { image: String },
    /// A Docker API call failed.
    #[error("docker: {action}: {source}")]
    Docker {
        /// What minify was doing, e.g. `creating a container from nginx:fixture`.
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The container has no IP address on any network, so its ports cannot be reached.
    #[error("container {container} has no IP address (network mode none?)")]
    NoAddress { container: String },
    /// The container exited while minify waited for its ports.
    #[error(
        "container {container} of {image} exited with code {code} before its ports {ports} accepted connections; last output:\n{logs}"
    )]
    ExitedEarly {
        container: String,
        image: String,
        code: i64,
        ports: String,
        logs: String,
    },
    /// The exposed ports did not accept connections in time.
    #[error(
        "container {container} of {image}: ports {ports} did not accept connections within {secs} s; last output:\n{logs}"
    )]
    ReadyTimeout {
        container: String,
        image: String,
        ports: String,
        secs: u64,
        logs: String,
    },
    /// The cgroup parent name is not usable, or a cgroup directory could not be removed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// This process's own pid and start time cannot be read (no `/proc`?); containers would
    /// carry no owner, and `minify gc` could not tell them from leftovers.
    #[error("cannot read this process's pid and start time from /proc: {source}")]
    Owner {
        #[source]
        source: std::io::Error,
    },
    /// A cleanup task failed to run to its end.
    #[error("cleanup task failed: {0}")]
    Cleanup(String),
    /// The thread that sends a request to the daemon (see `PendingCreate`) could not run or
    /// ended without an answer.
    #[error("{action}: {detail}")]
    Thread { action: String, detail: String },
}

impl RuntimeError {
    /// Whether this is a problem with the machine (exit 3) rather than with the input.
    pub fn is_environment(&self) -> bool {
        match self {
            RuntimeError::Connect { .. }
            | RuntimeError::Cgroup(_)
            | RuntimeError::Owner { .. }
            | RuntimeError::Cleanup(_)
            | RuntimeError::Thread { .. } => true,
            RuntimeError::Docker { source, .. } => !matches!(
                source,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 400..=499,
                    ..
                }
            ),
            _ => false,
        }
    }
}
