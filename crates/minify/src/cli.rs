//! The command line. The `///` docs here are the `--help` text. The contract (names, flags,
//! exit codes) is in shared/DESIGN.md: change it there first.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Shrink a container image to the files its workload really uses.
#[derive(Debug, Parser)]
#[command(name = "minify", version, about, long_about = None)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Union several allowlists of the same image into one.
    Merge(MergeArgs),
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Allowlists to merge (made from the same image).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the union.
    #[arg(short, long)]
    pub output: PathBuf,
}
