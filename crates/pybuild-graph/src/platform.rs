//! OCI platforms (`linux/amd64`, `linux/arm/v7`) and the platform build args.

use std::fmt;

/// An OCI platform: operating system, architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// `linux`, ...
    pub os: String,
    /// GOARCH-style architecture: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, ...
    pub architecture: String,
    /// `v7`, `v8`, ... when it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program runs on ([`pybuild_oci::Platform::host`]).
    pub fn host() -> Self {
        let host = pybuild_oci::Platform::host();
        Self {
            os: host.os,
            architecture: host.architecture,
            variant: host.variant,
        }
    }

    /// The same platform as the image spec writes it (index descriptors, image
    /// configs, platform selection in a registry's index).
    pub fn to_oci(&self) -> pybuild_oci::Platform {
        pybuild_oci::Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// Parse `os/arch[/variant]` (or a bare architecture, taken as Linux), normalizing
    /// architecture aliases as containerd does (`x86_64` → `amd64`, `aarch64` → `arm64`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let bad =
            || format!("invalid platform {text:?}: expected os/arch[/variant], like linux/amd64");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] if is_known_arch(one) => ("linux", *one, None),
            [one] if *one == "linux" => {
                return Ok(Self {
                    os: "linux".into(),
                    ..Self::host()
                });
            }
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad()),
        };
        if !is_known_arch(arch) {
            return Err(format!(
                "invalid platform {text:?}: unknown architecture {arch:?}"
            ));
        }
        let (architecture, variant) = normalize_arch(arch, variant);
        Ok(Self {
            os: os.to_string(),
            architecture,
            variant,
        })
    }

    /// The build args BuildKit predefines for a platform, with `prefix` `TARGET` or
    /// `BUILD`: `<P>PLATFORM`, `<P>OS`, `<P>ARCH`, `<P>VARIANT`.
    pub fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.architecture.clone()),
            (
                format!("{prefix}VARIANT"),
                self.variant.clone().unwrap_or_default(),
            ),
        ]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "amd64"
            | "x86_64"
            | "x86-64"
            | "arm64"
            | "aarch64"
            | "arm"
            | "armhf"
            | "armel"
            | "386"
            | "i386"
            | "ppc64le"
            | "s390x"
            | "riscv64"
            | "mips64le"
            | "loong64"
    )
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let (a, v) = match (arch, variant) {
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("aarch64", v) | ("arm64", v) => ("arm64", v.filter(|v| *v != "v8")),
        ("armhf", None) => ("arm", Some("v7")),
        ("armel", None) => ("arm", Some("v6")),
        ("arm", None) => ("arm", Some("v7")),
        ("i386", v) => ("386", v),
        (a, v) => (a, v),
    };
    (a.to_string(), v.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Platform::parse("linux/amd64").map(|p| p.to_string()),
            Ok("linux/amd64".into())
        );
        assert_eq!(
            Platform::parse("linux/x86_64").map(|p| p.to_string()),
            Ok("linux/amd64".into())
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").map(|p| p.to_string()),
            Ok("linux/arm64".into())
        );
        assert_eq!(
            Platform::parse("linux/arm").map(|p| p.to_string()),
            Ok("linux/arm/v7".into())
        );
        assert_eq!(
            Platform::parse("arm64").map(|p| p.to_string()),
            Ok("linux/arm64".into())
        );
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("linux/sparc").is_err());
    }

    #[test]
    fn platform_args() {
        let p = Platform::parse("linux/arm/v7").expect("valid");
        let args = p.args("TARGET");
        assert_eq!(args[0], ("TARGETPLATFORM".into(), "linux/arm/v7".into()));
        assert_eq!(args[2], ("TARGETARCH".into(), "arm".into()));
        assert_eq!(args[3], ("TARGETVARIANT".into(), "v7".into()));
    }
}
