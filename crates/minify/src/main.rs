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
mod errors;
mod escape;
mod files;
mod pipeline;
mod report;
mod sbom;

use std::process::ExitCode;

use clap::Parser;

pub use errors::{describe, env_error, exit, with_code};

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
