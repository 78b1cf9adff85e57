//! A JSON list with a bound on its length, refused while it is parsed.
//!
//! A derived `Vec<T>` reads the whole list before any check can count it: a
//! body naming a million items costs a million parsed items (about ten times
//! the text) before its handler refuses it. [`AtMost`] is a serde seed that
//! counts while it reads and fails on the first item past its bound, so a
//! request over a limit costs its body and at most `max` items.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Deserializes a list of at most `max` items; the first item past `max`
/// fails the parse with the message `too_many` returns.
pub struct AtMost<T, F> {
    max: usize,
    too_many: F,
    item: PhantomData<fn() -> T>,
}

impl<T, F: FnOnce() -> String> AtMost<T, F> {
    /// A list of at most `max` items; `too_many` writes the error of a
    /// longer one (called once, when the parser reaches item `max + 1`).
    pub fn new(max: usize, too_many: F) -> Self {
        AtMost {
            max,
            too_many,
            item: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>, F: FnOnce() -> String> DeserializeSeed<'de> for AtMost<T, F> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>, F: FnOnce() -> String> Visitor<'de> for AtMost<T, F> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} items", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            if items.len() == self.max {
                return Err(A::Error::custom((self.too_many)()));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, max: usize) -> Result<Vec<u32>, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        AtMost::new(max, || format!("more than {max}"))
            .deserialize(&mut de)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn up_to_the_bound_is_a_list() {
        assert_eq!(parse("[]", 2), Ok(vec![]));
        assert_eq!(parse("[1, 2]", 2), Ok(vec![1, 2]));
    }

    #[test]
    fn past_the_bound_fails_at_the_first_extra_item() {
        let err = parse("[1, 2, 3, 4, 5]", 2).unwrap_err();
        // Refused once the third item is read: before the fourth (column
        // 11), never at the end of the list.
        assert_eq!(err, "more than 2 at line 1 column 10");
    }

    #[test]
    fn not_a_list_is_refused() {
        let err = parse("{}", 2).unwrap_err();
        assert!(err.contains("a list of at most 2 items"), "{err}");
    }
}
