//! Validated names: model names, semantic versions and the relative paths of files inside a
//! version. Every string that becomes part of a mount path or a storage key passes through here,
//! so hostile names (`..`, absolute paths, NUL, over-long components) are refused in one place.

use std::fmt;
use std::str::FromStr;

/// Why a name, version or path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid model name {0:?}: use 1-128 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-'")]
    ModelName(String),
    #[error("invalid version {0:?}: expected a semantic version such as 1.2.0 ({1})")]
    Version(String, String),
    #[error("invalid file path {0:?}: {1}")]
    Path(String, &'static str),
}

/// A model's name. It is a directory name in the mount, so it is kept to a portable alphabet.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ModelName(String);

impl ModelName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModelName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::ModelName(s.chars().take(200).collect()))
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version: a semantic version (`MAJOR.MINOR.PATCH[-pre][+build]`). Ordering is semver
/// ordering, which is what `ls` shows and what "latest" means.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ModelVersion(semver::Version);

impl ModelVersion {
    pub fn semver(&self) -> &semver::Version {
        &self.0
    }
}

impl FromStr for ModelVersion {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        // The version is a directory name in the mount; semver already excludes '/', but a
        // length bound keeps storage keys and paths reasonable.
        if s.len() > 128 {
            return Err(NameError::Version(
                s.chars().take(200).collect(),
                "longer than 128 characters".into(),
            ));
        }
        semver::Version::parse(s)
            .map(Self)
            .map_err(|e| NameError::Version(s.to_owned(), e.to_string()))
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file's path relative to its version's root: `/`-separated, no empty, `.` or `..` component,
/// no NUL, not absolute, each component at most 255 bytes, 4096 bytes in all.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RelPath(String);

impl RelPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl FromStr for RelPath {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = |why| Err(NameError::Path(s.chars().take(300).collect(), why));
        if s.is_empty() {
            return err("empty");
        }
        if s.len() > 4096 {
            return err("longer than 4096 bytes");
        }
        if s.contains('\0') {
            return err("contains NUL");
        }
        if s.starts_with('/') {
            return err("absolute");
        }
        for c in s.split('/') {
            match c {
                "" => return err("empty component"),
                "." | ".." => return err("'.' or '..' component"),
                _ if c.len() > 255 => return err("component longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(ModelName);
serde_via_str!(ModelVersion);
serde_via_str!(RelPath);

crate::schema::string_schema!(
    ModelName,
    "ModelName",
    crate::schema::string(
        "A model's name: 1-128 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
        "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$",
        Some(128),
        "resnet",
    )
);
crate::schema::string_schema!(
    ModelVersion,
    "ModelVersion",
    crate::schema::string(
        "A semantic version (MAJOR.MINOR.PATCH[-pre][+build]), at most 128 characters, each number below 2^64",
        crate::schema::SEMVER,
        Some(128),
        "1.2.0",
    )
);
crate::schema::string_schema!(
    RelPath,
    "RelPath",
    crate::schema::string(
        "A file's path inside its version: '/'-separated components, none empty, '.' or '..', no NUL, not absolute; at most 255 bytes per component and 4096 bytes in all (UTF-8)",
        &crate::schema::rel_path_pattern(),
        None,
        "weights/model.safetensors",
    )
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert!("resnet-50_v2.onnx".parse::<ModelName>().is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(bad.parse::<ModelName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn versions_order_semantically() {
        let a: ModelVersion = "1.9.0".parse().unwrap();
        let b: ModelVersion = "1.10.0".parse().unwrap();
        assert!(a < b);
        assert!("1.0".parse::<ModelVersion>().is_err());
        assert!("v1.0.0".parse::<ModelVersion>().is_err());
    }

    #[test]
    fn paths() {
        assert!("a/b/model.safetensors".parse::<RelPath>().is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            &"x".repeat(256),
        ] {
            assert!(bad.parse::<RelPath>().is_err(), "{bad:?} accepted");
        }
    }
}
