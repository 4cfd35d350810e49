//! What the fuzz targets share: reading the keys of a JSON object as written.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The keys of a JSON object in the order written, duplicates kept (a `Value` keeps only
/// the last of duplicated keys, so it cannot tell).
pub struct ObjectKeys(pub Vec<String>);

impl<'de> Deserialize<'de> for ObjectKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = ObjectKeys;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ObjectKeys, M::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(ObjectKeys(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// The top-level keys of `text` if it is one JSON object whose keys are all distinct.
pub fn distinct_top_level_keys(text: &str) -> Option<Vec<String>> {
    let ObjectKeys(keys) = serde_json::from_str(text).ok()?;
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    (sorted.len() == keys.len()).then_some(keys)
}
