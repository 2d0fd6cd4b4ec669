//! The `minify` command: parses arguments (see `cli.rs`) and hands each subcommand to its
//! module under `cmd/`. Library crates do the work; this crate only wires them.

/// `print!`/`println!`/`eprint!`/`eprintln!` that ignore a closed stream (`minify ... | head`
/// that has exited): the std macros panic there, which mid-run would leave the run's
/// container and cgroup behind, and at the end turns a finished run into exit 101. ripgrep
/// treats a broken pipe as success the same way.
/// Everything they print goes through [`escape::terminal_safe`]: text from images and
/// allowlists never reaches the terminal raw.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", crate::escape::terminal_safe(&format!($($t)*)));
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{}", crate::escape::terminal_safe(&format!($($t)*)));
    }};
}
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), "{}", crate::escape::terminal_safe(&format!($($t)*)));
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{}", crate::escape::terminal_safe(&format!($($t)*)));
    }};
}

mod cli;
mod cmd;
mod escape;
mod pipeline;
mod report;
mod sbom;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes, the contract in docs/DESIGN.md.
pub mod exit {
    /// The minified image failed verification.
    pub const VERIFY_FAILED: u8 = 1;
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
/// Any other error that reaches `main` is an input error (exit 2).
pub fn env_error(error: impl Into<anyhow::Error>) -> anyhow::Error {
    error.into().context(FailureMarker(exit::ENVIRONMENT))
}

/// A library error that can tell a machine problem (no daemon, no eBPF rights) from bad input.
pub trait Classified: std::error::Error + Send + Sync + 'static {
    fn is_environment(&self) -> bool;
}

impl Classified for minify_image::ImageError {
    fn is_environment(&self) -> bool {
        minify_image::ImageError::is_environment(self)
    }
}
impl Classified for minify_trace::TraceError {
    fn is_environment(&self) -> bool {
        minify_trace::TraceError::is_environment(self)
    }
}
impl Classified for minify_runtime::RuntimeError {
    fn is_environment(&self) -> bool {
        minify_runtime::RuntimeError::is_environment(self)
    }
}

/// A library error as the CLI's: environment problems exit 3, everything else 2.
pub fn lib_error(e: impl Classified) -> anyhow::Error {
    if e.is_environment() {
        env_error(e)
    } else {
        anyhow::Error::new(e)
    }
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

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = match cli.verbose {
        0 => "minify=info,warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a CI log or a file gets plain text, and the
        // hostile-input corpus counts any escape byte in the output as a raw control
        // character that reached the user (it did, from a WARN of the re-closure).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        // When stderr is gone (piped into `head` that has exited), logging must not report
        // that with `eprintln!`, which panics: a panic mid-run leaves its container and
        // cgroup behind.
        .log_internal_errors(false)
        .without_time()
        .with_target(false)
        .init();

    match cmd::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let (code, msg) = describe(&err);
            errln!("minify: error: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The exit code an error calls for and its one-line message (what `main` prints after
/// `minify: error: `, and what a report's `error` holds).
pub fn describe(err: &anyhow::Error) -> (u8, String) {
    // `chain()` yields anyhow's context wrappers, which a plain `dyn Error` downcast
    // does not see through; `anyhow::Error::downcast_ref` walks the context chain.
    let marker = err.downcast_ref::<FailureMarker>();
    let code = marker.map_or(exit::USAGE, |m| m.0);
    let marker = marker.map(ToString::to_string);
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
