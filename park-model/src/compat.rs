//! How the documents' values are typed in automerge, so that Rust and a JavaScript web app
//! using `@automerge/automerge` 3.x read and write the same documents.
//!
//! The facts this follows (checked with `@automerge/automerge` 3.5.0, see `tests/compat/`):
//!
//! - JavaScript writes every string as an automerge **Text** object, and reads a Text object
//!   back as a plain JavaScript `string`. A scalar **Str** (what `autosurgeon`'s `String` writes)
//!   comes back to JavaScript as an `ImmutableString` object, on which `status === "active"` is
//!   false. So Rust writes every string as Text, and reads either form.
//! - A string is replaced, never spliced: a changed value is written as a *new* Text object at
//!   its key, which is what JavaScript's `obj.status = "suspended"` does too. Two replicas that
//!   change the same field concurrently therefore conflict at the key and automerge keeps one
//!   whole value (the same one on every replica), instead of interleaving the characters of both
//!   into something like `"suspendedlost"`.
//! - JavaScript writes whole numbers as **Int** and other numbers as **F64**. Integer fields are
//!   written as Int and read from Int, Uint, Counter, or an F64 without a fraction; a fractional
//!   or out-of-range number is an error. Float fields are written as F64 and read from any of them.
//! - An optional value is absent (key deleted) or `null`; both read as `None`. Writing `None`
//!   deletes the key.
//! - A value that is unchanged is not written again (not even as another numeric type), so
//!   reconciling an entity whose value JavaScript wrote as Int does not create churn.
//!
//! Costs: Text is heavier than a scalar string (about 2.5 times the build time, 4 times the saved
//! size and 3.5 times the memory for a credential map, measured with automerge 0.12). That is the
//! price of plain strings in JavaScript; keep decision indexes separate from documents.
//!
//! This module does not define document layout (see `document`); it only encodes field values.

use std::borrow::Cow;

use automerge::{ObjId, ObjType, ScalarValue, Value};
use autosurgeon::{
    HydrateError, Prop, ReadDoc, Reconcile, Reconciler,
    reconcile::{LoadKey, MapReconciler, TextReconciler},
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

/// A string written as a Text object that is replaced whole when it changes (see the module
/// docs). Reconciling it where an equal string already is (Text, or a scalar Str) writes nothing
/// new except to turn a scalar Str into Text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsText<'a>(pub &'a str);

impl Reconcile for AsText<'_> {
    type Key<'k> = Cow<'k, str>;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        // Reached when the key (the current string) equals ours, or when a new object is being
        // built: `update` is then a no-op diff or the initial content.
        let mut text = reconciler.text()?;
        text.update(self.0)
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

/// A list of strings, each written as [`AsText`]. The list is diffed by value, so adding or
/// removing one element leaves the others untouched and concurrent additions merge.
struct TextList<'a>(&'a [String]);

impl Reconcile for TextList<'_> {
    type Key<'k> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
        // autosurgeon's LCS diff for sequences, through `Vec<AsText>`.
        let items: Vec<AsText<'_>> = self.0.iter().map(|s| AsText(s)).collect();
        items.reconcile(reconciler)
    }
}

/// A field of an entity: how it is read from and written to an automerge map.
pub(crate) trait Field: Sized {
    /// Reads the field at `key` of the map `obj`. `Ok(None)` means the key is absent.
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError>;

    /// Writes the field at `key` of the map being reconciled, unless it already holds an equal
    /// value.
    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error>;
}

impl Field for String {
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
        match doc.get(obj, key)? {
            None => Ok(None),
            Some((value, id)) => string_from_value(doc, &value, &id).map(Some),
        }
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        map.put(key, AsText(self))
    }
}

impl Field for Vec<String> {
    /// Duplicates (two replicas adding the same id concurrently) are dropped, first kept.
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
        let Some((value, list)) = doc.get(obj, key)? else {
            return Ok(None);
        };
        if !matches!(value, Value::Object(ObjType::List)) {
            return Err(HydrateError::unexpected(
                "a list of strings",
                format!("{value}"),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(doc.length(&list));
        for index in 0..doc.length(&list) {
            let Some((item, id)) = doc.get(&list, index)? else {
                continue;
            };
            let s = string_from_value(doc, &item, &id)?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(Some(out))
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        map.put(key, TextList(self))
    }
}

macro_rules! int_field {
    ($($ty:ty),*) => {$(
        impl Field for $ty {
            fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
                let Some((value, _)) = doc.get(obj, key)? else { return Ok(None) };
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
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
        let Some((value, _)) = doc.get(obj, key)? else {
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
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
        let Some((value, _)) = doc.get(obj, key)? else {
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
    fn read<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<Self>, HydrateError> {
        match doc.get(obj, key)? {
            None => Ok(Some(None)),
            Some((value, _)) if is_null(&value) => Ok(Some(None)),
            Some(_) => Ok(Some(T::read(doc, obj, key)?)),
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

/// Reads a field that must be present.
pub(crate) fn required<T: Field, D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
) -> Result<T, HydrateError> {
    T::read(doc, obj, key)?
        .ok_or_else(|| HydrateError::unexpected(format!("a field {key:?}"), "nothing".into()))
}

/// Reads a field, or gives `default` when it is absent.
pub(crate) fn or_default<T: Field, D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    default: impl FnOnce() -> T,
) -> Result<T, HydrateError> {
    Ok(T::read(doc, obj, key)?.unwrap_or_else(default))
}

/// Declares an enum stored as one of a fixed set of lowercase strings (written as Text).
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

        impl crate::compat::Field for $name {
            fn read<D: autosurgeon::ReadDoc>(
                doc: &D,
                obj: &automerge::ObjId,
                key: &str,
            ) -> Result<Option<Self>, autosurgeon::HydrateError> {
                let Some(s) = <String as crate::compat::Field>::read(doc, obj, key)? else {
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
                map.put(key, crate::compat::AsText(self.as_str()))
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
/// are required. The `id` field is not stored in the entity's map: the map's key in its
/// collection is the id, and [`crate::document::Entity::set_id`] restores it after hydration.
macro_rules! entity_codec {
    (
        $ty:ident {
            $($field:ident : $key:literal $(= $default:expr)?),+ $(,)?
        }
    ) => {
        impl autosurgeon::Hydrate for $ty {
            fn hydrate_map<D: autosurgeon::ReadDoc>(
                doc: &D,
                obj: &automerge::ObjId,
            ) -> Result<Self, autosurgeon::HydrateError> {
                Ok($ty {
                    id: String::new(),
                    $($field: crate::compat::entity_codec!(@read doc, obj, $key $(, $default)?),)+
                })
            }
        }

        impl autosurgeon::Reconcile for $ty {
            type Key<'k> = autosurgeon::reconcile::NoKey;

            fn reconcile<R: autosurgeon::Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
                let mut map = reconciler.map()?;
                $(crate::compat::Field::write(&self.$field, &mut map, $key)?;)+
                Ok(())
            }
        }
    };
    (@read $doc:ident, $obj:ident, $key:literal) => {
        crate::compat::required($doc, $obj, $key)?
    };
    (@read $doc:ident, $obj:ident, $key:literal, $default:expr) => {
        crate::compat::or_default($doc, $obj, $key, || $default)?
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
    fn strings_are_written_as_text_and_read_back() {
        let mut doc = AutoCommit::new();
        reconcile_prop(&mut doc, ROOT, "t", thing()).unwrap();
        let (_, obj) = doc.get(&ROOT, "t").unwrap().unwrap();
        let (value, _) = doc.get(&obj, "name").unwrap().unwrap();
        assert!(matches!(value, Value::Object(ObjType::Text)));
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
    fn a_changed_string_is_a_new_text_object_so_concurrent_changes_do_not_interleave() {
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
