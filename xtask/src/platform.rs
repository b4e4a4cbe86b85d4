//! Platforms, `os/arch[/variant]`, parsed once from `PLATFORMS`: what each build is for, its
//! tag's and cache's suffix, and whether the arm64 node builds it.

use std::fmt;

use crate::invalid::Invalid;

/// Operating systems and architectures `docker buildx` builds for.
const OSES: &[&str] = &["linux", "windows", "darwin", "freebsd"];
const ARCHES: &[&str] =
    &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "mips64", "loong64"];

/// One platform docker buildx builds for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, arch: &str) -> Platform {
        Platform { os: os.to_string(), arch: arch.to_string(), variant: None }
    }

    /// `os/arch[/variant]`, from the operating systems and architectures buildx knows.
    pub fn parse(text: &str) -> Result<Platform, Invalid> {
        let parts: Vec<&str> = text.split('/').collect();
        let known = match parts.as_slice() {
            [os, arch] | [os, arch, _] => OSES.contains(os) && ARCHES.contains(arch),
            _ => false,
        };
        if !known || parts.iter().any(|p| p.is_empty()) {
            return Err(Invalid::new(format!(
                "PLATFORMS: `{text}` is not a platform docker buildx builds: give os/arch[/variant] \
                 from {OSES:?} and {ARCHES:?}, comma separated, e.g. linux/amd64,linux/arm64"
            )));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            arch: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// What names its tag and cache: linux/arm64 → arm64, linux/arm/v7 → arm-v7.
    pub fn suffix(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}-{variant}", self.arch),
            None => self.arch.clone(),
        }
    }

    pub fn os(&self) -> &str {
        &self.os
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Built on the arm64 node, with MULTI_CONTEXT=1.
    pub fn is_arm64(&self) -> bool {
        self.os == "linux" && self.arch == "arm64"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Some platforms, in the order given; shown comma separated, as `PLATFORMS` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platforms(Vec<Platform>);

impl Platforms {
    /// `PLATFORMS`: comma separated, spaces around the commas dropped.
    pub fn parse(text: &str) -> Result<Platforms, Invalid> {
        text.split(',').map(|p| Platform::parse(p.trim())).collect::<Result<_, _>>().map(Platforms)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Platform> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any is built on the arm64 node (with MULTI_CONTEXT=1).
    pub fn any_arm64(&self) -> bool {
        self.0.iter().any(Platform::is_arm64)
    }
}

impl From<Vec<Platform>> for Platforms {
    fn from(list: Vec<Platform>) -> Platforms {
        Platforms(list)
    }
}

impl FromIterator<Platform> for Platforms {
    fn from_iter<I: IntoIterator<Item = Platform>>(iter: I) -> Platforms {
        Platforms(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Platforms {
    type Item = &'a Platform;
    type IntoIter = std::slice::Iter<'a, Platform>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.0.iter().map(Platform::to_string).collect();
        f.write_str(&texts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_platforms_as_given() {
        let platforms = Platforms::parse("linux/amd64 , linux/arm/v7,linux/arm64").unwrap();
        assert_eq!(platforms.to_string(), "linux/amd64,linux/arm/v7,linux/arm64");
        let suffixes: Vec<String> = platforms.iter().map(Platform::suffix).collect();
        assert_eq!(suffixes, ["amd64", "arm-v7", "arm64"]);
        assert!(platforms.any_arm64());
        assert!(!Platforms::parse("linux/amd64,linux/arm/v7").unwrap().any_arm64());
        for bad in ["linux", "linux/", "plan9/amd64", "linux/amd64/v2/x", "linux/sparc"] {
            assert!(Platforms::parse(bad).is_err(), "{bad}");
        }
    }
}
