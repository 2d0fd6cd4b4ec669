//! `ImageConfig`: the typed parts of an image config blob that the rest of minify reads
//! (how to run the image, and its layer diff_ids). The raw JSON is kept alongside so packing
//! can carry every field over untouched.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Digest;

/// What an image's config says about running it, plus its rootfs diff_ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `config.Entrypoint` (empty when unset).
    pub entrypoint: Vec<String>,
    /// `config.Cmd` (empty when unset).
    pub cmd: Vec<String>,
    /// `config.Env`, `KEY=value`.
    pub env: Vec<String>,
    /// `config.WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `config.User` (empty: root).
    pub user: String,
    /// `config.ExposedPorts` keys, sorted: `80/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    /// `config.Volumes` keys, sorted.
    pub volumes: Vec<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `config.StopSignal`.
    pub stop_signal: Option<String>,
    /// `config.Healthcheck.Test` as written (`["CMD", ..]`, `["CMD-SHELL", ..]`,
    /// `["NONE"]`; empty when unset).
    pub healthcheck: Vec<String>,
    /// `architecture`, `os`.
    pub architecture: String,
    pub os: String,
    /// `created`, RFC 3339, as written.
    pub created: Option<String>,
    /// `rootfs.diff_ids`: the sha256 of each *uncompressed* layer, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// The exposed TCP ports as numbers, sorted (`80/tcp` and a bare `80` count).
    pub fn exposed_tcp_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .exposed_ports
            .iter()
            .filter_map(|p| match p.split_once('/') {
                Some((n, "tcp")) => n.parse().ok(),
                None => p.parse().ok(),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Parse a config blob. `name` says where it came from, for the error.
    pub(crate) fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let c = raw.config.unwrap_or_default();
        let mut diff_ids = Vec::new();
        for d in raw.rootfs.map(|r| r.diff_ids).unwrap_or_default() {
            diff_ids.push(Digest::parse(&d).map_err(|e| format!("rootfs.diff_ids: {e}"))?);
        }
        Ok(ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            healthcheck: c.healthcheck.and_then(|h| h.test).unwrap_or_default(),
            architecture: raw.architecture.unwrap_or_default(),
            os: raw.os.unwrap_or_default(),
            created: raw.created,
            diff_ids,
        })
    }
}

#[derive(Deserialize)]
struct RawConfig {
    architecture: Option<String>,
    os: Option<String>,
    created: Option<String>,
    config: Option<RawRunConfig>,
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    labels: Option<BTreeMap<String, String>>,
    stop_signal: Option<String>,
    healthcheck: Option<RawHealthcheck>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawHealthcheck {
    test: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_settings() {
        let c = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
                "config":{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
                "Env":["PATH=/usr/bin"],"ExposedPorts":{"80/tcp":{},"443/tcp":{},"53/udp":{}},
                "StopSignal":"SIGQUIT","Labels":null,"WorkingDir":"","User":"www",
                "Healthcheck":{"Test":["CMD-SHELL","curl -f localhost"],"Interval":1000000000}},
                "rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#,
        )
        .unwrap();
        assert_eq!(c.exposed_tcp_ports(), vec![80, 443]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.cmd.len(), 3);
        assert_eq!(c.user, "www");
        assert_eq!(c.healthcheck, ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(c.diff_ids.len(), 1);
        assert!(ImageConfig::parse(b"{\"rootfs\":{\"diff_ids\":[\"md5:1\"]}}").is_err());
        assert!(ImageConfig::parse(b"[]").is_err());
    }
}
