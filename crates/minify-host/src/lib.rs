//! minify-host: the host resources every minify crate shares, each with one owner here.
//!
//! - [`cgroup`]: where the cgroup hierarchies are ([`cgroup::CgroupLayout`], from the mount
//!   table), the trace cgroups' names, and making, killing and removing cgroup directories;
//!   used by the tracer, the runtime, the probes and `minify gc`.
//! - [`owner`]: the process that made a container, image or temporary directory, and how it
//!   is written on them, so `minify gc` can tell a killed run's leftovers from a run in
//!   progress.
//! - [`random_hex`]: the random part of every name minify makes.
//! - [`mountinfo`]: `/proc/self/mountinfo`, parsed.

pub mod cgroup;
pub mod mountinfo;
pub mod owner;

pub use cgroup::{CgroupError, CgroupLayout};
pub use owner::{BadOwner, LeftoverNames, Liveness, Maker, OWNER_LABEL, Owner};

/// `bytes` random bytes from the kernel, as lowercase hex: the random part of container,
/// image and cgroup names. Should `/dev/urandom` be unreadable, the time and pid stand in,
/// still unique enough within one host.
pub fn random_hex(bytes: usize) -> String {
    use std::fmt::Write as _;
    use std::io::Read as _;
    let mut b = vec![0u8; bytes];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let seed = (t ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = seed[i % seed.len()].wrapping_add((i / seed.len()) as u8);
        }
    }
    b.iter().fold(String::with_capacity(bytes * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_names_differ() {
        assert_ne!(super::random_hex(8), super::random_hex(8));
        assert_eq!(super::random_hex(8).len(), 16);
        assert_eq!(super::random_hex(6).len(), 12);
    }
}
