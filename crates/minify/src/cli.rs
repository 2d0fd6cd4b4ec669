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
    /// Pack IMAGE from an allowlist, with no tracing (same image + allowlist = same id).
    Build(BuildArgs),
    /// Show an image's size, layers, file count and largest directories.
    Inspect(InspectArgs),
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

/// `minify build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Source image: name:tag or name@sha256:.. in the Docker daemon, docker-archive:PATH,
    /// oci:DIR[:TAG] or oci-archive:PATH.
    pub image: String,
    /// The allowlist to pack (from `minify run --allowlist-out`, or hand-written).
    #[arg(long)]
    pub allowlist: PathBuf,
    /// Output image (default NAME:TAG-min in the daemon); also docker-archive:PATH,
    /// oci:DIR[:TAG], oci-archive:PATH.
    #[arg(long)]
    pub tag: Option<String>,
    /// Replace an existing output file or directory.
    #[arg(long)]
    pub force: bool,
}

/// `minify inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Image: name:tag or name@sha256:.. in the Docker daemon, docker-archive:PATH,
    /// oci:DIR[:TAG] or oci-archive:PATH.
    pub image: String,
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}
