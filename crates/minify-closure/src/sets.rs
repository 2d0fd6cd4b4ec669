//! The default support sets: files a workload commonly needs at run time but that a short
//! trace easily misses (TLS roots, name resolution, user lookup, time zones, locales).

/// One default support set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DefaultSet {
    /// CA certificates: `/etc/ssl/certs` and what its links point to, the bundles.
    CaCertificates,
    /// NSS and resolver: `nsswitch.conf`, `hosts`, `resolv.conf`, `host.conf`, `gai.conf`,
    /// `libnss_files`, `libnss_dns`, `libresolv` with their ELF closure.
    Nss,
    /// `/etc/passwd` and `/etc/group`.
    Passwd,
    /// `/usr/share/zoneinfo`, `/etc/localtime`, `/etc/timezone`.
    Zoneinfo,
    /// Compiled locales (`/usr/lib/locale`) and the locale alias/default files.
    Locale,
    /// The directories every container needs whatever the probe did, each as its entry
    /// alone, never its contents: `/tmp`, `/var/tmp`, root's and the image `USER`'s home, the
    /// `WORKDIR`, every `VOLUME`, and `/proc`, `/sys`, `/dev`, `/run` (see `skeleton.rs`).
    Skeleton,
    /// The distribution's identity, which scanners read to know whose packages these are:
    /// `/etc/os-release`, `/usr/lib/os-release`, `/etc/debian_version`.
    OsRelease,
}

impl DefaultSet {
    /// Every set, in report order.
    pub const ALL: [DefaultSet; 7] = [
        DefaultSet::CaCertificates,
        DefaultSet::Nss,
        DefaultSet::Passwd,
        DefaultSet::Zoneinfo,
        DefaultSet::Locale,
        DefaultSet::Skeleton,
        DefaultSet::OsRelease,
    ];

    /// The name used in the allowlist's `detail` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            DefaultSet::CaCertificates => "ca-certificates",
            DefaultSet::Nss => "nss",
            DefaultSet::Passwd => "passwd",
            DefaultSet::Zoneinfo => "zoneinfo",
            DefaultSet::Locale => "locale",
            DefaultSet::Skeleton => "skeleton",
            DefaultSet::OsRelease => "os-release",
        }
    }

    /// Paths added as a whole tree (directories recursively, symlink targets too).
    pub(crate) fn trees(self) -> &'static [&'static str] {
        match self {
            DefaultSet::CaCertificates => &[
                "/etc/ssl/certs",
                "/usr/share/ca-certificates",
                "/usr/local/share/ca-certificates",
                "/etc/ca-certificates.conf",
                "/etc/ssl/cert.pem",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/pki/tls/cert.pem",
                "/etc/pki/ca-trust/extracted",
            ],
            DefaultSet::Nss => &[
                "/etc/nsswitch.conf",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/host.conf",
                "/etc/gai.conf",
            ],
            DefaultSet::Passwd => &["/etc/passwd", "/etc/group"],
            DefaultSet::Zoneinfo => &["/usr/share/zoneinfo", "/etc/localtime", "/etc/timezone"],
            DefaultSet::Locale => &[
                "/usr/lib/locale",
                "/usr/share/locale/locale.alias",
                "/etc/locale.alias",
                "/etc/default/locale",
                "/etc/locale.conf",
            ],
            DefaultSet::Skeleton => &[],
            DefaultSet::OsRelease => &[
                "/etc/os-release",
                "/usr/lib/os-release",
                "/etc/debian_version",
            ],
        }
    }

    /// Shared libraries looked up with the image's loader rules.
    pub(crate) fn libraries(self) -> &'static [&'static str] {
        match self {
            DefaultSet::Nss => &["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"],
            _ => &[],
        }
    }
}

/// Which default sets are added. CA certificates, NSS, passwd, skeleton and os-release are
/// on by default; zoneinfo and locale are off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct DefaultSets {
    pub ca_certificates: bool,
    pub nss: bool,
    pub passwd: bool,
    pub zoneinfo: bool,
    pub locale: bool,
    pub skeleton: bool,
    pub os_release: bool,
}

impl Default for DefaultSets {
    fn default() -> Self {
        DefaultSets {
            ca_certificates: true,
            nss: true,
            passwd: true,
            zoneinfo: false,
            locale: false,
            skeleton: true,
            os_release: true,
        }
    }
}

impl DefaultSets {
    /// No default set at all.
    pub fn none() -> Self {
        DefaultSets {
            ca_certificates: false,
            nss: false,
            passwd: false,
            zoneinfo: false,
            locale: false,
            skeleton: false,
            os_release: false,
        }
    }

    /// Whether `set` is on.
    pub fn enabled(&self, set: DefaultSet) -> bool {
        match set {
            DefaultSet::CaCertificates => self.ca_certificates,
            DefaultSet::Nss => self.nss,
            DefaultSet::Passwd => self.passwd,
            DefaultSet::Zoneinfo => self.zoneinfo,
            DefaultSet::Locale => self.locale,
            DefaultSet::Skeleton => self.skeleton,
            DefaultSet::OsRelease => self.os_release,
        }
    }

    /// Turn `set` on or off.
    pub fn set(&mut self, set: DefaultSet, on: bool) {
        let flag = match set {
            DefaultSet::CaCertificates => &mut self.ca_certificates,
            DefaultSet::Nss => &mut self.nss,
            DefaultSet::Passwd => &mut self.passwd,
            DefaultSet::Zoneinfo => &mut self.zoneinfo,
            DefaultSet::Locale => &mut self.locale,
            DefaultSet::Skeleton => &mut self.skeleton,
            DefaultSet::OsRelease => &mut self.os_release,
        };
        *flag = on;
    }
}
