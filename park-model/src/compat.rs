//! How the documents' values are typed in automerge, so that Rust and a JavaScript web app
//! using `@automerge/automerge` 3.x read and write the same documents.
//!
//! The facts this follows (checked with `@automerge/automerge` 3.5.0, see `tests/compat/`):
//!
//! - Rust writes every string as a scalar **Str**: an atomic value, replaced whole when it
//!   changes. Two replicas that change the same field concurrently conflict at the key and
//!   automerge keeps one whole value (the same on every replica), never an interleaving of the
//!   characters of both like `"suspendedlost"`. Ids, statuses, card numbers and plates must not
//!   merge character by character, and names in a registry are records, not prose.
//! - JavaScript writes a plain string as an automerge **Text** object and reads a Str back as an
//!   `ImmutableString` (`String(value)` or `value.toString()` gives the string; `value ===
//!   "active"` is false). A web app therefore reads string fields through `String(...)`, and
//!   writes either plain strings or `new ImmutableString(...)`. Rust reads both forms, and an
//!   unchanged field is never rewritten, whatever form it has.
//! - JavaScript writes whole numbers as **Int** and other numbers as **F64**. Integer fields are
//!   written as Int and read from Int, Uint, Counter, or an F64 without a fraction; a fractional
//!   or out-of-range number is an error. Float fields are written as F64 and read from any of them.
//! - An optional value is absent (key deleted) or `null`; both read as `None`. Writing `None`
//!   deletes the key.
//! - A value that is unchanged is not written again (not even as another numeric type), so
//!   reconciling an entity whose value JavaScript wrote as Int does not create churn.
//!
//! Costs: why not Text everywhere, which JavaScript reads as plain strings? Every character of
//! a Text is an operation of its own. A directory of 100,000 credentials written as Text was
//! four times the size (8.4 MB against 2.1 MB saved) and took five times as long to load
//! (about 5 s against 1 s in a release build), which an edge pays at every start.
//!
//! This module does not define document layout (see `document`); it only encodes field values.

use std::borrow::Cow;

use automerge::{ObjId, ObjType, ScalarValue, Value};
use autosurgeon::{
    HydrateError, Prop, ReadDoc, Reconcile, Reconciler,
    reconcile::{LoadKey, MapReconciler},
};

/// Reads a string from a value found in a document: a Text object or a scalar Str.
pub(crate) fn string_from_value<D: ReadDoc>(
    doc: &D,
    value: &Value<'_>,
    id: &ObjId,
) -> Result<String, HydrateError> {
    match value {
        Value::Object(ObjType::Text) => Ok(doc.text(id)?),
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Ok(s.to_string()),
            other => Err(HydrateError::unexpected(
                "a string",
                format!("a {}", scalar_kind(other)),
            )),
        },
        Value::Object(other) => Err(HydrateError::unexpected(
            "a string",
            format!("a {other:?} object"),
        )),
    }
}

fn scalar_kind(s: &ScalarValue) -> &'static str {
    match s {
        ScalarValue::Bytes(_) => "bytes value",
        ScalarValue::Str(_) => "string",
        ScalarValue::Int(_) => "int",
        ScalarValue::Uint(_) => "uint",
        ScalarValue::F64(_) => "float",
        ScalarValue::Counter(_) => "counter",
        ScalarValue::Timestamp(_) => "timestamp",
        ScalarValue::Boolean(_) => "boolean",
        ScalarValue::Unknown { .. } => "value of unknown type",
        ScalarValue::Null => "null",
    }
}

/// Reads an integer leniently from Int, Uint, Counter or a whole F64.
pub(crate) fn int_from_value(value: &Value<'_>) -> Result<i64, HydrateError> {
    let Value::Scalar(s) = value else {
        return Err(HydrateError::unexpected("an integer", "an object".into()));
    };
    match s.as_ref() {
        ScalarValue::Int(i) => Ok(*i),
        ScalarValue::Uint(u) => i64::try_from(*u)
            .map_err(|_| HydrateError::unexpected("an integer", format!("{u}, too large"))),
        ScalarValue::Counter(c) => Ok(i64::from(c)),
        ScalarValue::F64(f) => {
            // 2^63 is exactly representable; anything at or beyond it does not fit.
            if f.fract() == 0.0 && *f >= -9.223_372_036_854_776e18 && *f < 9.223_372_036_854_776e18
            {
                Ok(*f as i64)
            } else {
                Err(HydrateError::unexpected(
                    "an integer",
                    format!("the number {f}"),
                ))
            }
        }
        other => Err(HydrateError::unexpected(
            "an integer",
            format!("a {}", scalar_kind(other)),
        )),
    }
}

fn float_from_value(value: &Value<'_>) -> Result<f64, HydrateError> {
    let Value::Scalar(s) = value else {
        return Err(HydrateError::unexpected("a number", "an object".into()));
    };
    match s.as_ref() {
        ScalarValue::F64(f) => Ok(*f),
        ScalarValue::Int(i) => Ok(*i as f64),
        ScalarValue::Uint(u) => Ok(*u as f64),
        ScalarValue::Counter(c) => Ok(i64::from(c) as f64),
        other => Err(HydrateError::unexpected(
            "a number",
            format!("a {}", scalar_kind(other)),
        )),
    }
}

fn is_null(value: &Value<'_>) -> bool {
    matches!(value, Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Null))
}

/// A string written as one scalar Str, the atomic value of its key (see the module docs). Its
/// reconcile key is the string itself, read from a Text object or a Str alike, so that a list
/// of them is diffed by value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Atomic<'a>(pub &'a str);

impl Reconcile for Atomic<'_> {
    type Key<'k> = Cow<'k, str>;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        reconciler.str(self.0)
    }

    fn hydrate_key<'k, D: ReadDoc>(
        doc: &D,
        obj: &ObjId,
        prop: Prop<'_>,
    ) -> Result<LoadKey<Self::Key<'k>>, autosurgeon::ReconcileError> {
        let found = match doc.get(obj, &prop)? {
            Some((Value::Object(ObjType::Text), id)) => Some(doc.text(&id)?),
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            },
            _ => None,
        };
        Ok(match found {
            Some(s) => LoadKey::Found(Cow::Owned(s)),
            None => LoadKey::KeyNotFound,
        })
    }

    fn key(&self) -> LoadKey<Self::Key<'_>> {
        LoadKey::Found(Cow::Borrowed(self.0))
    }
}

/// Writes `value` at `key` as a scalar Str unless the key already holds an equal string, as
/// Text or Str: an unchanged field is never written again, so it cannot win a conflict against
/// a concurrent real edit made elsewhere.
pub(crate) fn write_str<M: MapReconciler>(
    map: &mut M,
    key: &str,
    value: &str,
) -> Result<(), M::Error> {
    if let LoadKey::Found(existing) = map.hydrate_entry_key::<Atomic<'_>, _>(key)?
        && existing == value
    {
        return Ok(());
    }
    map.put(key, Atomic(value))
}

/// A list of strings, each written as [`Atomic`]. The list is diffed by value, so adding or
/// removing one element leaves the others untouched and concurrent additions merge.
struct StrList<'a>(&'a [String]);

impl Reconcile for StrList<'_> {
    type Key<'k> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
        // autosurgeon's LCS diff for sequences, through `Vec<Atomic>`.
        let items: Vec<Atomic<'_>> = self.0.iter().map(|s| Atomic(s)).collect();
        items.reconcile(reconciler)
    }
}

/// A field of an entity: how it is read from and written to an automerge map.
pub(crate) trait Field: Sized {
    /// Reads the field from what its map holds at its key (`None`: the key is absent).
    /// `Ok(None)` means absent.
    fn from_found<D: ReadDoc>(
        doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError>;

    /// Reads the field at `key` of the map `obj`. `Ok(None)` means the key is absent.
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
        Self::from_found(doc, doc.get(obj, key)?)
    }

    /// Writes the field at `key` of the map being reconciled, unless it already holds an equal
    /// value.
    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error>;
}

impl Field for String {
    fn from_found<D: ReadDoc>(
        doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError> {
        match found {
            None => Ok(None),
            Some((value, id)) => string_from_value(doc, &value, &id).map(Some),
        }
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        write_str(map, key, self)
    }
}

impl Field for Vec<String> {
    /// Duplicates (two replicas adding the same id concurrently) are dropped, first kept.
    fn from_found<D: ReadDoc>(
        doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError> {
        let Some((value, list)) = found else {
            return Ok(None);
        };
        if !matches!(value, Value::Object(ObjType::List)) {
            return Err(HydrateError::unexpected(
                "a list of strings",
                format!("{value}"),
            ));
        }
        // One pass over the list: a lookup per index would search the document each time.
        let mut out: Vec<String> = Vec::new();
        for item in doc.list_range(&list, ..) {
            let id = item.id();
            let s = match item.value {
                automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => s.into_owned(),
                other => string_from_value(doc, &other.into_value(), &id)?,
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(Some(out))
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        map.put(key, StrList(self))
    }
}

macro_rules! int_field {
    ($($ty:ty),*) => {$(
        impl Field for $ty {
            fn from_found<D: ReadDoc>(
                _doc: &D,
                found: Option<(Value<'_>, ObjId)>,
            ) -> Result<Option<Self>, HydrateError> {
                let Some((value, _)) = found else { return Ok(None) };
                let wide = int_from_value(&value)?;
                <$ty>::try_from(wide).map(Some).map_err(|_| {
                    HydrateError::unexpected(
                        concat!("an integer that fits ", stringify!($ty)),
                        format!("{wide}"),
                    )
                })
            }

            fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
                let wide = i64::from(*self);
                if let Some(existing) = map.entry(key)
                    && int_from_value(&existing).ok() == Some(wide)
                {
                    return Ok(());
                }
                map.put(key, wide)
            }
        }
    )*};
}

int_field!(i64, i32, u32, u16);

impl Field for f64 {
    fn from_found<D: ReadDoc>(
        _doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError> {
        let Some((value, _)) = found else {
            return Ok(None);
        };
        float_from_value(&value).map(Some)
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        if let Some(existing) = map.entry(key)
            && float_from_value(&existing).ok() == Some(*self)
        {
            return Ok(());
        }
        map.put(key, *self)
    }
}

impl Field for bool {
    fn from_found<D: ReadDoc>(
        _doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError> {
        let Some((value, _)) = found else {
            return Ok(None);
        };
        match &value {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Boolean(b) => Ok(Some(*b)),
                other => Err(HydrateError::unexpected(
                    "a boolean",
                    format!("a {}", scalar_kind(other)),
                )),
            },
            Value::Object(_) => Err(HydrateError::unexpected("a boolean", "an object".into())),
        }
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        map.put(key, *self)
    }
}

impl<T: Field> Field for Option<T> {
    fn from_found<D: ReadDoc>(
        doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError> {
        match found {
            None => Ok(Some(None)),
            Some((value, _)) if is_null(&value) => Ok(Some(None)),
            found => Ok(Some(T::from_found(doc, found)?)),
        }
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        match self {
            Some(v) => v.write(map, key),
            None if map.entry(key).is_some() => map.delete(key),
            None => Ok(()),
        }
    }
}

/// The fields of one entity's map, read in one pass over the map (one lookup per field would
/// cost a search of the document each: for a directory of 100,000 credentials that pass is
/// most of the load time).
pub(crate) struct Fields(Vec<(String, Value<'static>, ObjId)>);

impl Fields {
    pub(crate) fn read<D: ReadDoc>(doc: &D, obj: &ObjId) -> Fields {
        Fields(
            doc.map_range(obj, ..)
                .map(|item| {
                    let id = item.id();
                    (item.key.into_owned(), item.value.into_value(), id)
                })
                .collect(),
        )
    }

    /// What the map holds at `key`, taken out (each key is read once).
    pub(crate) fn take(&mut self, key: &str) -> Option<(Value<'static>, ObjId)> {
        let at = self.0.iter().position(|(k, _, _)| k == key)?;
        let (_, value, id) = self.0.swap_remove(at);
        Some((value, id))
    }
}

/// Reads a field that must be present.
pub(crate) fn required<T: Field, D: ReadDoc>(
    doc: &D,
    fields: &mut Fields,
    key: &str,
) -> Result<T, HydrateError> {
    T::from_found(doc, fields.take(key))?
        .ok_or_else(|| HydrateError::unexpected(format!("a field {key:?}"), "nothing".into()))
}

/// Reads a field, or gives `default` when it is absent.
pub(crate) fn or_default<T: Field, D: ReadDoc>(
    doc: &D,
    fields: &mut Fields,
    key: &str,
    default: impl FnOnce() -> T,
) -> Result<T, HydrateError> {
    Ok(T::from_found(doc, fields.take(key))?.unwrap_or_else(default))
}

/// Declares an enum stored as one of a fixed set of lowercase strings (written as scalar Str).
/// An unknown string is a hydration error, so the entity holding it is rejected rather than
/// guessed at.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string stored in documents.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::compat::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(crate::compat::UnknownValue {
                        expected: stringify!($name),
                        found: s.to_string(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl crate::compat::Field for $name {
            fn from_found<D: autosurgeon::ReadDoc>(
                doc: &D,
                found: Option<(automerge::Value<'_>, automerge::ObjId)>,
            ) -> Result<Option<Self>, autosurgeon::HydrateError> {
                let Some(s) = <String as crate::compat::Field>::from_found(doc, found)? else {
                    return Ok(None);
                };
                s.parse().map(Some).map_err(|e: crate::compat::UnknownValue| {
                    autosurgeon::HydrateError::unexpected(
                        format!("one of {:?}", $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
                        format!("{:?}", e.found),
                    )
                })
            }

            fn write<M: autosurgeon::reconcile::MapReconciler>(
                &self,
                map: &mut M,
                key: &str,
            ) -> Result<(), M::Error> {
                crate::compat::write_str(map, key, self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {expected} {found:?}")]
pub struct UnknownValue {
    pub expected: &'static str,
    pub found: String,
}

/// Implements `autosurgeon`'s `Hydrate` and `Reconcile` for an entity struct whose fields all
/// implement [`Field`]. Fields listed as `key = default` read `default` when absent; the others
/// are required. Keys listed after `removed` are fields an entity no longer has: they are not
/// read, and writing the entity deletes them. The `id` field is not stored in the entity's map:
/// the map's key in its collection is the id, and [`crate::document::Entity::set_id`] restores
/// it after hydration.
macro_rules! entity_codec {
    (
        $ty:ident {
            $($field:ident : $key:literal $(= $default:expr)?),+ $(,)?
        } $(removed [$($gone:literal),+ $(,)?])?
    ) => {
        impl autosurgeon::Hydrate for $ty {
            fn hydrate_map<D: autosurgeon::ReadDoc>(
                doc: &D,
                obj: &automerge::ObjId,
            ) -> Result<Self, autosurgeon::HydrateError> {
                let mut fields = crate::compat::Fields::read(doc, obj);
                Ok($ty {
                    id: String::new(),
                    $($field: crate::compat::entity_codec!(@read doc, fields, $key $(, $default)?),)+
                })
            }
        }

        impl autosurgeon::Reconcile for $ty {
            type Key<'k> = autosurgeon::reconcile::NoKey;

            fn reconcile<R: autosurgeon::Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
                let mut map = reconciler.map()?;
                $(crate::compat::Field::write(&self.$field, &mut map, $key)?;)+
                $($(
                    if autosurgeon::reconcile::MapReconciler::entry(&map, $gone).is_some() {
                        autosurgeon::reconcile::MapReconciler::delete(&mut map, $gone)?;
                    }
                )+)?
                Ok(())
            }
        }
    };
    (@read $doc:ident, $fields:ident, $key:literal) => {
        crate::compat::required($doc, &mut $fields, $key)?
    };
    (@read $doc:ident, $fields:ident, $key:literal, $default:expr) => {
        crate::compat::or_default($doc, &mut $fields, $key, || $default)?
    };
}
pub(crate) use entity_codec;

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{AutoCommit, ROOT, transaction::Transactable};
    use autosurgeon::{Hydrate, hydrate_prop, reconcile_prop};

    #[derive(Debug, Clone, PartialEq)]
    struct Thing {
        id: String,
        name: String,
        tags: Vec<String>,
        count: i64,
        area: f64,
        until: Option<i64>,
        flag: bool,
    }

    entity_codec!(Thing {
        name: "name",
        tags: "tags" = Vec::new(),
        count: "count",
        area: "area" = 0.0,
        until: "until",
        flag: "flag" = false,
    });

    fn thing() -> Thing {
        Thing {
            id: String::new(),
            name: "gate".into(),
            tags: vec!["a".into(), "b".into()],
            count: 3,
            area: 12.5,
            until: Some(7),
            flag: true,
        }
    }

    #[test]
    fn strings_are_written_as_scalar_strings_and_read_back() {
        let mut doc = AutoCommit::new();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        let (_, obj) = doc.get(&ROOT, "t").unwrap().unwrap();
        let (value, _) = doc.get(&obj, "name").unwrap().unwrap();
        assert_eq!(value.as_str(), Some("gate"));
        let back: Thing = hydrate_prop(&doc, ROOT, "t").unwrap();
        assert_eq!(back, thing());
    }

    #[test]
    fn scalar_strings_and_other_numeric_types_hydrate_leniently() {
        let mut doc = AutoCommit::new();
        let obj = doc.put_object(ROOT, "t", ObjType::Map).unwrap();
        doc.put(&obj, "name", "gate").unwrap();
        doc.put(&obj, "count", ScalarValue::Uint(3)).unwrap();
        doc.put(&obj, "area", 12i64).unwrap();
        doc.put(&obj, "until", 7.0f64).unwrap();
        let back = Thing::hydrate(&doc, &ROOT, "t".into()).unwrap();
        assert_eq!(back.name, "gate");
        assert_eq!(back.count, 3);
        assert_eq!(back.area, 12.0);
        assert_eq!(back.until, Some(7));
        assert_eq!(back.tags, Vec::<String>::new());
        assert!(!back.flag);
    }

    #[test]
    fn a_fractional_number_in_an_integer_field_is_an_error() {
        let mut doc = AutoCommit::new();
        let obj = doc.put_object(ROOT, "t", ObjType::Map).unwrap();
        doc.put(&obj, "name", "gate").unwrap();
        doc.put(&obj, "count", 2.5f64).unwrap();
        let err = Thing::hydrate(&doc, &ROOT, "t".into()).unwrap_err();
        assert!(err.to_string().contains("2.5"), "{err}");
    }

    #[test]
    fn a_missing_required_field_is_an_error_naming_it() {
        let mut doc = AutoCommit::new();
        let obj = doc.put_object(ROOT, "t", ObjType::Map).unwrap();
        doc.put(&obj, "count", 1i64).unwrap();
        let err = Thing::hydrate(&doc, &ROOT, "t".into()).unwrap_err();
        assert!(err.to_string().contains("\"name\""), "{err}");
    }

    #[test]
    fn reconciling_an_unchanged_entity_writes_nothing() {
        let mut doc = AutoCommit::new();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        doc.commit();
        let heads = doc.get_heads();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        assert_eq!(doc.commit(), None);
        assert_eq!(doc.get_heads(), heads);
    }

    #[test]
    fn an_int_written_by_javascript_is_not_rewritten_when_unchanged() {
        let mut doc = AutoCommit::new();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        let (_, obj) = doc.get(&ROOT, "t").unwrap().unwrap();
        doc.put(&obj, "count", ScalarValue::F64(3.0)).unwrap();
        doc.commit();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        assert_eq!(doc.commit(), None);
    }

    #[test]
    fn concurrent_changes_of_a_string_keep_one_whole_value_not_an_interleaving() {
        let mut a = AutoCommit::new();
        reconcile_prop(&mut a, ROOT, "t", thing()).unwrap();
        let mut b = a.fork();
        let mut ta = thing();
        ta.name = "suspended".into();
        reconcile_prop(&mut a, ROOT, "t", ta).unwrap();
        let mut tb = thing();
        tb.name = "lost".into();
        reconcile_prop(&mut b, ROOT, "t", tb).unwrap();
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        let ma: Thing = hydrate_prop(&a, ROOT, "t").unwrap();
        let mb: Thing = hydrate_prop(&b, ROOT, "t").unwrap();
        assert!(ma.name == "suspended" || ma.name == "lost", "{}", ma.name);
        assert_eq!(ma, mb);
    }

    #[test]
    fn a_text_written_by_javascript_is_read_and_not_rewritten_when_unchanged() {
        let mut doc = AutoCommit::new();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        let (_, obj) = doc.get(&ROOT, "t").unwrap().unwrap();
        let text = doc.put_object(&obj, "name", ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, "gate").unwrap();
        doc.commit();
        let back: Thing = hydrate_prop(&doc, ROOT, "t").unwrap();
        assert_eq!(back, thing());
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        assert_eq!(doc.commit(), None);
        let mut renamed = thing();
        renamed.name = "barrier".into();
        reconcile_prop(&mut doc, ROOT, "t", renamed.clone()).unwrap();
        let back: Thing = hydrate_prop(&doc, ROOT, "t").unwrap();
        assert_eq!(back, renamed);
    }

    #[test]
    fn concurrent_list_additions_merge_and_duplicates_read_once() {
        let mut a = AutoCommit::new();
        reconcile_prop(&mut a, ROOT, "t", thing()).unwrap();
        let mut b = a.fork();
        let mut ta = thing();
        ta.tags.push("c".into());
        reconcile_prop(&mut a, ROOT, "t", ta).unwrap();
        let mut tb = thing();
        tb.tags.push("c".into());
        tb.tags.push("d".into());
        reconcile_prop(&mut b, ROOT, "t", tb).unwrap();
        a.merge(&mut b).unwrap();
        let m: Thing = hydrate_prop(&a, ROOT, "t").unwrap();
        let mut tags = m.tags.clone();
        tags.sort();
        assert_eq!(tags, ["a", "b", "c", "d"]);
    }

    #[test]
    fn writing_none_deletes_the_key_and_null_reads_as_none() {
        let mut doc = AutoCommit::new();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        let mut t = thing();
        t.until = None;
        reconcile_prop(&mut doc, ROOT, "t", t.clone()).unwrap();
        let (_, obj) = doc.get(&ROOT, "t").unwrap().unwrap();
        assert!(doc.get(&obj, "until").unwrap().is_none());
        doc.put(&obj, "until", ScalarValue::Null).unwrap();
        let back: Thing = hydrate_prop(&doc, ROOT, "t").unwrap();
        assert_eq!(back.until, None);
    }
}
