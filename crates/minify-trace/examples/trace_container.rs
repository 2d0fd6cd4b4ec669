//! Trace one Docker container from its first exec: `cargo run -p minify-trace --example
//! trace_container -- IMAGE [CMD...]` (as root). Shows the cgroup-parent wiring `minify run`
//! uses: the container's cgroup is created below our trace cgroup, so the filter catches it.

use minify_trace::{TraceCgroup, TraceOptions, Tracer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((image, cmd)) = args.split_first() else {
        return Err("usage: trace_container IMAGE [CMD...]".into());
    };
    let cgroup = TraceCgroup::create()?;
    let tracer = Tracer::start(&cgroup, TraceOptions::default())?;
    let status = std::process::Command::new("docker")
        .args(["run", "--rm", "--cgroup-parent", cgroup.name(), image])
        .args(cmd)
        .status()?;
    let rec = tracer.finish_recording()?;
    for e in &rec.trace.events {
        println!("{e}");
    }
    eprintln!(
        "docker: {status}; {} events, {} lost, {} processes",
        rec.trace.events.len(),
        rec.trace.lost_total(),
        rec.processes.len()
    );
    Ok(())
}
