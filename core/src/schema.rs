//! JSON Schemas (for the control API's OpenAPI document) of the types that travel as strings:
//! ids, names, versions, paths, keys and signatures. Their serde form is their `Display`/`FromStr`
//! text, so utoipa cannot derive them; each schema here states, as a pattern, what that type's
//! `FromStr` accepts, so the document refuses what the daemon refuses. Patterns use only what
//! ECMA-262 and Python's `re` read alike (no `\d`, which Python also matches to non-ASCII
//! digits; no lookaround), since the API fuzzer generates and checks strings with the latter.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A string schema with a pattern and an example.
pub(crate) fn string(
    description: &str,
    pattern: &str,
    max_length: Option<usize>,
    example: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(max_length)
        .examples([example])
        .into()
}

/// Implements `utoipa::ToSchema` for a type whose JSON form is a string described by
/// `$schema` (an expression returning `RefOr<Schema>`), named after the type.
macro_rules! string_schema {
    ($t:ty, $name:expr, $schema:expr) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema
            }
        }
        impl utoipa::ToSchema for $t {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($name)
            }
        }
    };
}
pub(crate) use string_schema;

/// A file's mode in a push, as the daemon accepts it (`manifest::FILE_MODES`): the type the
/// document gives `PUT /v1/uploads/{id}/files?mode=`, which the daemon reads as a `u32` and
/// refuses unless it is one of these.
pub enum FileMode {}

impl utoipa::PartialSchema for FileMode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some("420 (0644) or 493 (0755)"))
            .enum_values(Some(crate::manifest::FILE_MODES))
            .into()
    }
}

impl utoipa::ToSchema for FileMode {}

/// 64 hex digits (32 bytes); either case is read, lower case is written.
pub(crate) const HEX32: &str = "^[0-9a-fA-F]{64}$";

/// The example of a 32-byte id.
pub(crate) const HEX32_EXAMPLE: &str =
    "171e6e6ca2a036fa0c4e6b1e5c3f7a2d9d1f0e4b8a6c2e1f3d5b7a9c0e2f4a6b";

/// One component of a relative path: not empty, not `.` or `..`, no `/` or NUL.
const COMPONENT: &str = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)";

/// `RelPath`'s pattern: components joined by `/`. The byte limits (255 per component, 4096 in
/// all) are not expressible as character counts and are stated in the description instead.
pub(crate) fn rel_path_pattern() -> String {
    format!("^{COMPONENT}(?:/{COMPONENT})*$")
}

/// A semantic version (semver.org's grammar, with `[0-9]` for digits). MAJOR, MINOR and PATCH
/// have at most 19 digits here, so every number the pattern allows fits the daemon's `u64`
/// (the contract test's versions with longer numbers were refused); the daemon also reads 20-digit
/// ones up to 2^64 - 1.
pub(crate) const SEMVER: &str = concat!(
    r"^(?:0|[1-9][0-9]{0,18})\.(?:0|[1-9][0-9]{0,18})\.(?:0|[1-9][0-9]{0,18})",
    r"(?:-(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?",
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$"
);

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    /// The schema's example, which the document shows as a valid value.
    fn example<T: PartialSchema>() -> String {
        let v = serde_json::to_value(T::schema()).expect("schema");
        v["examples"][0].as_str().expect("an example").to_owned()
    }

    /// Every example the document gives parses as its type: the document never shows a value
    /// the daemon would refuse.
    #[test]
    fn examples_parse() {
        example::<crate::ChunkId>()
            .parse::<crate::ChunkId>()
            .unwrap();
        example::<crate::audit::EventHash>()
            .parse::<crate::audit::EventHash>()
            .unwrap();
        example::<crate::ModelName>()
            .parse::<crate::ModelName>()
            .unwrap();
        example::<crate::ModelVersion>()
            .parse::<crate::ModelVersion>()
            .unwrap();
        example::<crate::RelPath>()
            .parse::<crate::RelPath>()
            .unwrap();
        example::<crate::sign::PublicKey>()
            .parse::<crate::sign::PublicKey>()
            .unwrap();
        example::<crate::sign::Signature>()
            .parse::<crate::sign::Signature>()
            .unwrap();
    }
}
