//! The Docker engine through bollard: connecting, reading an image's run config, and creating
//! and starting a container from it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::RemoveImageOptionsBuilder;
use serde::Serialize;

use crate::container::Container;
use crate::{LABEL, OWNER_LABEL, Owner, RuntimeError, validate_cgroup_parent};

/// A connection to the Docker daemon.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) docker: Docker,
    /// This process, recorded on everything it makes (see [`Owner`]).
    pub(crate) owner: Owner,
}

/// One port an image declares with `EXPOSE`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ExposedPort {
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
}

/// What an image runs and how, from its config.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageInfo {
    /// The reference the image was looked up by.
    pub reference: String,
    /// The image id (`sha256:` of its config).
    pub id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// Sorted by port.
    pub exposed_ports: Vec<ExposedPort>,
    /// `StopSignal` (`SIGQUIT` for nginx); `None` means Docker's default, SIGTERM.
    pub stop_signal: Option<String>,
    pub user: String,
    pub workdir: String,
    /// Size the daemon reports (bytes of all layers, uncompressed).
    pub size: u64,
    /// The image's `HEALTHCHECK`, unless it has none or disables it (`NONE`).
    pub healthcheck: Option<crate::Healthcheck>,
}

impl ImageInfo {
    /// The exposed TCP ports, sorted. Without `0/tcp`, which an image can declare but no
    /// server can listen on: waiting for it would wait out the whole readiness timeout.
    pub fn tcp_ports(&self) -> Vec<u16> {
        self.exposed_ports
            .iter()
            .filter(|p| p.proto == "tcp" && p.port != 0)
            .map(|p| p.port)
            .collect()
    }

    /// The argv the container runs: entrypoint followed by cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// Changes to what the image runs. `None`/empty keeps the image's own value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// Replaces the entrypoint (an empty vector clears it, like `--entrypoint ''`).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the cmd.
    pub cmd: Option<Vec<String>>,
    /// Added to (and overriding) the image's env, `KEY=value`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

impl Overrides {
    /// The image's run config with these overrides applied, so the closure sees exactly what
    /// the container ran.
    pub fn apply(&self, image: &ImageInfo) -> ImageInfo {
        let mut out = image.clone();
        if let Some(e) = &self.entrypoint {
            out.entrypoint.clone_from(e);
            // Docker: overriding the entrypoint drops the image's cmd.
            if self.cmd.is_none() {
                out.cmd.clear();
            }
        }
        if let Some(c) = &self.cmd {
            out.cmd.clone_from(c);
        }
        for kv in &self.env {
            let key = kv.split('=').next().unwrap_or_default();
            out.env
                .retain(|old| old.split('=').next().unwrap_or_default() != key);
            out.env.push(kv.clone());
        }
        if let Some(w) = &self.workdir {
            out.workdir.clone_from(w);
        }
        if let Some(u) = &self.user {
            out.user.clone_from(u);
        }
        out
    }
}

/// How to run one container.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Image reference or id.
    pub image: String,
    pub overrides: Overrides,
    /// `HostConfig.CgroupParent`: the tracer's cgroup name (relative, e.g. `minify-1a2b`).
    pub cgroup_parent: Option<String>,
    /// How long `stop` waits after the stop signal before SIGKILL.
    pub stop_timeout: Duration,
}

impl RunSpec {
    pub fn new(image: impl Into<String>) -> Self {
        RunSpec {
            image: image.into(),
            overrides: Overrides::default(),
            cgroup_parent: None,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) fn docker_err(
    action: impl Into<String>,
) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let action = action.into();
    move |source| RuntimeError::Docker { action, source }
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Runtime {
    /// Connect to the local daemon (`DOCKER_HOST` or `/var/run/docker.sock`) and agree on an
    /// API version (Docker 20.10 speaks 1.41, older than bollard's default).
    pub async fn connect() -> Result<Self, RuntimeError> {
        let owner = Owner::current().map_err(|source| RuntimeError::Owner { source })?;
        let docker = Docker::connect_with_local_defaults()
            .map_err(|source| RuntimeError::Connect { source })?
            // Our own timeouts bound every wait; bollard's 2-minute default would cut long
            // traces short.
            .with_timeout(Duration::from_hours(24));
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|source| RuntimeError::Connect { source })?;
        docker
            .ping()
            .await
            .map_err(|source| RuntimeError::Connect { source })?;
        Ok(Runtime { docker, owner })
    }

    /// This process, as recorded on the containers and images it makes.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The underlying bollard client, for callers that need another API.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Read an image's run config.
    pub async fn inspect_image(&self, image: &str) -> Result<ImageInfo, RuntimeError> {
        let ins = match self.docker.inspect_image(image).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => {
                return Err(RuntimeError::ImageNotFound {
                    image: image.to_owned(),
                });
            }
            Err(e) => return Err(docker_err(format!("inspecting image {image}"))(e)),
        };
        let cfg = ins.config.unwrap_or_default();
        let mut exposed_ports: Vec<ExposedPort> = cfg
            .exposed_ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                Some(ExposedPort {
                    port: port.parse().ok()?,
                    proto: proto.to_owned(),
                })
            })
            .collect();
        exposed_ports.sort();
        Ok(ImageInfo {
            reference: image.to_owned(),
            id: ins.id.unwrap_or_default(),
            entrypoint: cfg.entrypoint.unwrap_or_default(),
            cmd: cfg.cmd.unwrap_or_default(),
            env: cfg.env.unwrap_or_default(),
            exposed_ports,
            stop_signal: cfg.stop_signal.filter(|s| !s.is_empty()),
            user: cfg.user.unwrap_or_default(),
            workdir: cfg.working_dir.unwrap_or_default(),
            size: ins.size.unwrap_or(0).max(0) as u64,
            healthcheck: cfg
                .healthcheck
                .and_then(|h| crate::Healthcheck::from_config(&h, &cfg.shell.unwrap_or_default())),
        })
    }

    /// Create and start a container for `spec`. The returned [`Container`] removes the
    /// container (and its v1 cgroup directories) when dropped, if [`Container::remove`] was
    /// not called.
    pub async fn start(&self, spec: &RunSpec) -> Result<Container, RuntimeError> {
        let image = self.inspect_image(&spec.image).await?;
        if let Some(p) = &spec.cgroup_parent {
            validate_cgroup_parent(p)?;
        }
        let name = format!("minify-{}", minify_host::random_hex(8));
        let o = &spec.overrides;
        let mut env = image.env.clone();
        env.extend(o.env.iter().cloned());
        let body = ContainerCreateBody {
            image: Some(image.id.clone()),
            entrypoint: o.entrypoint.clone(),
            cmd: o.cmd.clone(),
            env: if o.env.is_empty() { None } else { Some(env) },
            working_dir: o.workdir.clone(),
            user: o.user.clone(),
            stop_signal: image.stop_signal.clone(),
            // Docker's own health checker off: it would exec the image's HEALTHCHECK in the
            // traced container whenever its interval came round, so what it uses would be
            // kept or not depending on how long the run took. minify runs the check itself,
            // at a fixed point, as a probe (`Probe::Healthcheck`), unless told not to.
            healthcheck: Some(bollard::models::HealthConfig {
                test: Some(vec!["NONE".to_owned()]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([
                (LABEL.to_owned(), "1".to_owned()),
                (OWNER_LABEL.to_owned(), self.owner.to_string()),
            ])),
            host_config: Some(HostConfig {
                cgroup_parent: spec.cgroup_parent.clone(),
                privileged: Some(false),
                // No restart: an exit is an answer we want to see, not hide.
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The guard exists before the request is sent: whenever this future is dropped from
        // here on, what the daemon creates is removed. Once it has answered, the container
        // guard below owns the container (there is no await in between).
        tracing::debug!(container = %name, image = %spec.image, "creating container");
        let id = crate::container::PendingCreate::send(
            &self.docker,
            name.clone(),
            body,
            format!("creating a container from {}", spec.image),
            spec.cgroup_parent.clone(),
        )
        .id()
        .await?;
        let mut container = Container::new(
            self.docker.clone(),
            id,
            name,
            image,
            spec.cgroup_parent.clone(),
            spec.stop_timeout,
        );
        self.docker
            .start_container(&container.id, None)
            .await
            .map_err(docker_err(format!(
                "starting container {} of {}",
                container.name, spec.image
            )))?;
        container.refresh_address().await?;
        Ok(container)
    }

    /// Remove an image reference (e.g. a verify failure's output when asked to): a name is
    /// untagged, and the image goes when nothing else names it. Missing is fine.
    pub async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        remove_image_async(&self.docker, image).await
    }
}

pub(crate) async fn remove_image_async(docker: &Docker, image: &str) -> Result<(), RuntimeError> {
    match docker
        .remove_image(
            image,
            Some(RemoveImageOptionsBuilder::default().noprune(false).build()),
            None,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(docker_err(format!("removing image {image}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_like_docker() {
        let img = ImageInfo {
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["nginx".into(), "-g".into()],
            env: vec!["PATH=/usr/bin".into(), "A=1".into()],
            ..Default::default()
        };
        let o = Overrides {
            entrypoint: Some(vec!["/usr/sbin/nginx".into()]),
            env: vec!["A=2".into()],
            ..Default::default()
        };
        let r = o.apply(&img);
        assert_eq!(r.argv(), vec!["/usr/sbin/nginx"]);
        assert_eq!(r.env, vec!["PATH=/usr/bin", "A=2"]);
        let o = Overrides {
            cmd: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert_eq!(o.apply(&img).argv(), vec!["/docker-entrypoint.sh", "x"]);
    }

    #[test]
    fn port_zero_is_not_waited_for() {
        let port = |port, proto: &str| ExposedPort {
            port,
            proto: proto.to_owned(),
        };
        let img = ImageInfo {
            exposed_ports: vec![port(0, "tcp"), port(53, "udp"), port(80, "tcp")],
            ..Default::default()
        };
        assert_eq!(img.tcp_ports(), vec![80]);
    }
}
