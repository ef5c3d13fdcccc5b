//! The field names of a `#[derive(Deserialize)]` struct, read from serde itself, so the list of
//! known keys used for "unknown key" errors can never drift from the struct.

use serde::de::{self, Deserialize, Deserializer, Visitor};

struct Grab<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names read")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Grab<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The keys a struct accepts.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut out = None;
    let _ = T::deserialize(Grab(&mut out));
    out.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Example {
        name: String,
        #[serde(rename = "max-jobs")]
        jobs: u32,
    }

    #[test]
    fn reads_serde_field_names() {
        assert_eq!(super::fields_of::<Example>(), &["name", "max-jobs"]);
    }
}
