//! Helpers every e2e module shares: the `minify` binary under test and a runner that echoes
//! what it ran, so a failing test shows the command's own one-line error.

use std::process::{Command, Output};

/// The `minify` binary cargo built for this test run, with the caller's `RUST_LOG` removed so
/// the output the tests assert on is the default one.
pub fn minify() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_minify"));
    c.env_remove("RUST_LOG");
    c
}

/// Run a command to completion, echoing its arguments, status and stderr into the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run minify");
    eprintln!(
        "--- {:?}: {}\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
