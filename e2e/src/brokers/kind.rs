//! What differs between brokers: binary, Debian package, config file name, default config.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// A broker the harness can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Nats,
    Mosquitto,
    Redis,
    RabbitMq,
    /// `moto_server` (PyPI `moto[server]`): AWS SNS, SQS and IoT on one port. The config file holds nothing;
    /// every state lives in the process's memory, so [`super::BrokerProcess::restart`] starts empty.
    Moto,
}

/// Where broker binaries are looked for after `$PATH` (tests often run without `/usr/sbin` on `$PATH`).
const EXTRA_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/sbin",
    "/bin",
];

impl Kind {
    /// Every kind, for tests that loop over brokers.
    pub const ALL: [Kind; 5] = [
        Kind::Nats,
        Kind::Mosquitto,
        Kind::Redis,
        Kind::RabbitMq,
        Kind::Moto,
    ];

    /// The package that ships the broker: Debian/Ubuntu, except moto (PyPI).
    pub fn package(self) -> &'static str {
        match self {
            Kind::Nats => "nats-server",
            Kind::Mosquitto => "mosquitto",
            Kind::Redis => "redis-server",
            Kind::RabbitMq => "rabbitmq-server",
            Kind::Moto => "moto[server]",
        }
    }

    /// The executable's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Kind::Nats => "nats-server",
            Kind::Mosquitto => "mosquitto",
            Kind::Redis => "redis-server",
            Kind::RabbitMq => "rabbitmq-server",
            Kind::Moto => "moto_server",
        }
    }

    /// The environment variable that overrides the binary's path, e.g. `EDGEWIRE_TEST_BIN_NATS`.
    pub fn env_override(self) -> &'static str {
        match self {
            Kind::Nats => "EDGEWIRE_TEST_BIN_NATS",
            Kind::Mosquitto => "EDGEWIRE_TEST_BIN_MOSQUITTO",
            Kind::Redis => "EDGEWIRE_TEST_BIN_REDIS",
            Kind::RabbitMq => "EDGEWIRE_TEST_BIN_RABBITMQ",
            Kind::Moto => "EDGEWIRE_TEST_BIN_MOTO",
        }
    }

    /// Name of the config file written into the broker's dir.
    pub fn config_file_name(self) -> &'static str {
        match self {
            Kind::Nats => "nats.conf",
            Kind::Mosquitto => "mosquitto.conf",
            Kind::Redis => "redis.conf",
            Kind::RabbitMq => "rabbitmq.conf",
            Kind::Moto => "moto.conf",
        }
    }

    /// The config used by [`super::BrokerProcess::start_default`] (placeholders not yet replaced).
    pub fn default_config(self) -> &'static str {
        match self {
            Kind::Nats => {
                "listen: 127.0.0.1:{port}\n\
                 jetstream {\n  store_dir: \"{dir}/jetstream\"\n}\n"
            }
            Kind::Mosquitto => {
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {dir}/\n"
            }
            Kind::Redis => {
                "bind 127.0.0.1\n\
                 port {port}\n\
                 protected-mode no\n\
                 save \"\"\n\
                 appendonly no\n\
                 dir {dir}\n\
                 daemonize no\n\
                 logfile \"\"\n"
            }
            // The AMQP listener is set from RABBITMQ_NODE_IP_ADDRESS/RABBITMQ_NODE_PORT; `guest` may log in
            // from loopback (RabbitMQ's default).
            Kind::RabbitMq => "disk_free_limit.absolute = 1MB\n",
            // moto_server takes everything on its command line.
            Kind::Moto => "",
        }
    }

    /// Grace period between SIGTERM and SIGKILL in [`super::BrokerProcess::stop`].
    pub(crate) fn stop_grace(self) -> std::time::Duration {
        match self {
            Kind::RabbitMq => std::time::Duration::from_secs(30),
            _ => std::time::Duration::from_secs(10),
        }
    }

    /// How long [`super::BrokerProcess::start`] waits for the main port.
    pub(crate) fn start_timeout(self) -> std::time::Duration {
        match self {
            Kind::RabbitMq => std::time::Duration::from_secs(90),
            _ => std::time::Duration::from_secs(30),
        }
    }

    /// Finds the broker binary: `$EDGEWIRE_TEST_BIN_<KIND>`, then `$PATH`, then the usual system dirs.
    pub fn binary(self) -> anyhow::Result<PathBuf> {
        let overridden = std::env::var_os(self.env_override()).filter(|v| !v.is_empty());
        resolve_binary(self, overridden, std::env::var_os("PATH"))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

fn resolve_binary(
    kind: Kind,
    overridden: Option<OsString>,
    path: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    let registry = if kind == Kind::Moto {
        "PyPI"
    } else {
        "Debian/Ubuntu"
    };
    let missing = |looked: String| {
        anyhow::anyhow!(
            "{} not found ({looked}): install the {registry} package `{}` (`make deps` installs every broker \
             the tests need)",
            kind.binary_name(),
            kind.package(),
        )
    };
    if let Some(value) = overridden {
        let candidate = PathBuf::from(&value);
        if candidate.components().count() > 1 {
            return if is_executable(&candidate) {
                Ok(candidate)
            } else {
                Err(missing(format!(
                    "${}={}",
                    kind.env_override(),
                    candidate.display()
                )))
            };
        }
        return search(&candidate, path.as_ref()).ok_or_else(|| {
            missing(format!(
                "${}={} is not on $PATH",
                kind.env_override(),
                candidate.display()
            ))
        });
    }
    // Debian's /usr/sbin/rabbitmq-server is a wrapper that `su`s to the rabbitmq user, `cd`s to
    // /var/lib/rabbitmq and redirects output to /var/log/rabbitmq; the real script is this one.
    if kind == Kind::RabbitMq {
        let real = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        if is_executable(real) {
            return Ok(real.to_path_buf());
        }
    }
    search(Path::new(kind.binary_name()), path.as_ref())
        .ok_or_else(|| missing(format!("looked on $PATH and in {}", EXTRA_DIRS.join(", "))))
}

fn search(name: &Path, path: Option<&OsString>) -> Option<PathBuf> {
    let on_path = path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_to_a_missing_path_names_the_package_and_make_deps() {
        for kind in Kind::ALL {
            let err = resolve_binary(kind, Some("/nonexistent/broker".into()), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{}`", kind.package())), "{err}");
            assert!(err.contains("make deps"), "{err}");
            assert!(err.contains(kind.env_override()), "{err}");
        }
    }

    #[test]
    fn override_to_an_existing_executable_is_used_as_is() {
        let found = resolve_binary(Kind::Redis, Some("/bin/sh".into()), None).unwrap();
        assert_eq!(found, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn a_bare_override_name_is_searched_on_path() {
        let found = resolve_binary(
            Kind::Nats,
            Some("sh".into()),
            Some("/nonexistent:/bin".into()),
        )
        .unwrap();
        assert!(found.ends_with("sh"), "{}", found.display());
        let err = resolve_binary(
            Kind::Nats,
            Some("no-such-broker-xyz".into()),
            Some("/nonexistent".into()),
        );
        assert!(err.unwrap_err().to_string().contains("`nats-server`"));
    }
}
