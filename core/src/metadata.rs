//! A version's metadata, following ModelMetadata of the design sketch. The publisher supplies
//! everything except `created_by` and `created_at`, which the daemon sets from the socket's peer
//! credentials and its own clock; the publisher signs the digest of what it supplied.

use std::collections::BTreeMap;

use crate::id::MetadataDigest;
use crate::name::{ModelName, ModelVersion};

/// The kinds of model the sketch names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    Classification,
    Regression,
    Nlp,
    ComputerVision,
    Generative,
    Recommendation,
    /// Not stated by the publisher.
    #[default]
    Unspecified,
}

impl std::str::FromStr for ModelType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("unknown model type {s:?}: expected classification, regression, nlp, computer_vision, generative or recommendation")
        })
    }
}

/// What the publisher states about a version. Its canonical digest is signed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedMetadata {
    pub name: ModelName,
    pub version: ModelVersion,
    #[serde(default)]
    pub model_type: ModelType,
    #[serde(default)]
    pub framework: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub input_schema: serde_json::Value,
    #[serde(default)]
    pub output_schema: serde_json::Value,
    #[serde(default)]
    pub training_dataset: String,
    #[serde(default)]
    pub training_parameters: serde_json::Value,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub parent_version: Option<ModelVersion>,
    /// Allowed distribution hashes per package (`--hash=sha256:…` entries of a requirements
    /// file). Omitted from the encoding when empty, so digests of versions pushed without it
    /// are unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependency_hashes: BTreeMap<String, Vec<String>>,
}

/// Why metadata was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metric {0:?} is not a finite number")]
    NonFiniteMetric(String),
    #[error("metadata does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("metadata is larger than {MAX_METADATA_BYTES} bytes once encoded")]
    TooLarge,
}

/// Upper bound on encoded metadata; it travels in one request body and lives in every record.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// BLAKE3 derive-key context for the metadata digest (domain separation from every other hash).
const METADATA_CONTEXT: &str = "arca 2026 metadata digest v1";

impl PublishedMetadata {
    /// A minimal record: name and version, everything else empty.
    pub fn new(name: ModelName, version: ModelVersion) -> Self {
        Self {
            name,
            version,
            model_type: ModelType::Unspecified,
            framework: String::new(),
            description: String::new(),
            input_schema: serde_json::Value::Null,
            output_schema: serde_json::Value::Null,
            training_dataset: String::new(),
            training_parameters: serde_json::Value::Null,
            metrics: BTreeMap::new(),
            tags: Vec::new(),
            dependencies: BTreeMap::new(),
            dependency_hashes: BTreeMap::new(),
            parent_version: None,
        }
    }

    /// The canonical encoding: JSON with every object's keys sorted (at every depth, including
    /// inside schemas), no whitespace, numbers as serde_json prints them. Going through
    /// `serde_json::Value` is what sorts the keys: its map is a BTreeMap.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, MetadataError> {
        if let Some((k, _)) = self.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(MetadataError::NonFiniteMetric(k.clone()));
        }
        let value = serde_json::to_value(self)?;
        let bytes = serde_json::to_vec(&value)?;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge);
        }
        Ok(bytes)
    }

    /// BLAKE3 in derive-key mode over the canonical encoding.
    pub fn digest(&self) -> Result<MetadataDigest, MetadataError> {
        let bytes = self.canonical_bytes()?;
        Ok(MetadataDigest(
            blake3::Hasher::new_derive_key(METADATA_CONTEXT)
                .update(&bytes)
                .finalize()
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PublishedMetadata {
        let mut m = PublishedMetadata::new("m".parse().unwrap(), "1.0.0".parse().unwrap());
        m.input_schema = serde_json::json!({"z": 1, "a": {"y": 2, "b": 3}});
        m.metrics.insert("acc".into(), 0.93);
        m
    }

    #[test]
    fn canonical_form_sorts_nested_keys() {
        let bytes = sample().canonical_bytes().unwrap();
        let s = String::from_utf8(bytes).unwrap();
        assert!(
            s.contains(r#""input_schema":{"a":{"b":3,"y":2},"z":1}"#),
            "{s}"
        );
        assert!(!s.contains(' '));
    }

    #[test]
    fn digest_changes_with_any_field_and_rejects_nan() {
        let a = sample();
        let mut b = sample();
        b.description = "x".into();
        assert_ne!(a.digest().unwrap(), b.digest().unwrap());
        // Same content parsed back from JSON in another key order gives the same digest.
        let reparsed: PublishedMetadata =
            serde_json::from_slice(&a.canonical_bytes().unwrap()).unwrap();
        assert_eq!(a.digest().unwrap(), reparsed.digest().unwrap());
        let mut c = sample();
        c.metrics.insert("bad".into(), f64::NAN);
        assert!(matches!(c.digest(), Err(MetadataError::NonFiniteMetric(_))));
    }

    #[test]
    fn model_type_parses() {
        assert_eq!(
            "computer_vision".parse::<ModelType>().unwrap(),
            ModelType::ComputerVision
        );
        assert!("magic".parse::<ModelType>().is_err());
    }
}
