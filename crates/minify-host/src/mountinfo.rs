//! `/proc/self/mountinfo`, parsed for what minify looks up in it: the cgroup hierarchies
//! ([`crate::CgroupLayout`]) and whether tracefs is mounted.

use std::path::PathBuf;

/// One line of the mount table: the fields minify reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mounted directory of its filesystem (field 4: `/` unless a sub-tree is mounted).
    pub root: String,
    /// Where it is mounted, unescaped.
    pub point: PathBuf,
    /// The filesystem type after the ` - ` separator (`cgroup2`, `tracefs`, ...).
    pub fstype: String,
}

/// The current mount table (empty when it cannot be read).
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Parse a mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut fields = pre.split_whitespace().skip(3);
            let root = fields.next()?;
            let mount_point = fields.next()?;
            Some(Mount {
                root: unescape(root),
                point: PathBuf::from(unescape(mount_point)),
                fstype: post.split_whitespace().next()?.to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_and_unescapes() {
        let m = parse(
            "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
             garbage\n\
             40 1 0:30 /user.slice/x /mnt/a\\040b rw - ext4 /dev/sda rw\n",
        );
        assert_eq!(
            m,
            [
                Mount {
                    root: "/".into(),
                    point: "/sys/fs/cgroup/unified".into(),
                    fstype: "cgroup2".into()
                },
                Mount {
                    root: "/user.slice/x".into(),
                    point: "/mnt/a b".into(),
                    fstype: "ext4".into()
                }
            ]
        );
    }
}
