//! Answers in the order the query asked for them (GraphQL §7.2.2, "Serialized
//! Map Ordering"). async-graphql resolves a query's fields side by side and
//! keeps each object's fields in the order they finished, so a field that
//! waits for a service (`host`, `payment`) came last, and one racing another
//! came first on one call and second on the next.

use async_graphql::Value;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use indexmap::IndexMap;

/// Fragments spread inside fragments, at most: validation refuses a cycle
/// before anything runs, this only bounds the walk if one got through.
const MOST_SPREADS: usize = 32;

/// Puts `data`'s fields in the order the operation `operation_name` of
/// `doc` selects them, at every level. Keys the selections do not name
/// (none, unless the executor added some) keep their place after the rest.
pub fn in_query_order(doc: &ExecutableDocument, operation_name: Option<&str>, data: &mut Value) {
    if let Some(operation) = operation(doc, operation_name) {
        arrange(doc, &[&operation.selection_set.node], data);
    }
}

/// The operation that ran.
fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Orders `value` (an object, or a list of them at any depth) by the
/// merged selection `sets` of the fields it answers.
fn arrange(doc: &ExecutableDocument, sets: &[&SelectionSet], value: &mut Value) {
    match value {
        Value::Object(_) | Value::List(_) => {
            let mut keys = IndexMap::new();
            for set in sets {
                collect(doc, set, &mut keys, 0);
            }
            apply(doc, &keys, value);
        }
        _ => {}
    }
}

/// The response keys of `set`, in order, each with the selection sets of
/// the fields answered under it (fields of one key are merged, fragments
/// spread in place).
fn collect<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    keys: &mut IndexMap<&'a str, Vec<&'a SelectionSet>>,
    spreads: usize,
) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => {
                let under = keys
                    .entry(field.node.response_key().node.as_str())
                    .or_default();
                if !field.node.selection_set.node.items.is_empty() {
                    under.push(&field.node.selection_set.node);
                }
            }
            Selection::FragmentSpread(spread) if spreads < MOST_SPREADS => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    collect(doc, &fragment.node.selection_set.node, keys, spreads + 1);
                }
            }
            Selection::FragmentSpread(_) => {}
            Selection::InlineFragment(inline) => {
                collect(doc, &inline.node.selection_set.node, keys, spreads);
            }
        }
    }
}

fn apply(doc: &ExecutableDocument, keys: &IndexMap<&str, Vec<&SelectionSet>>, value: &mut Value) {
    match value {
        Value::List(items) => {
            for item in items {
                apply(doc, keys, item);
            }
        }
        Value::Object(fields) => {
            let place = |key: &str| keys.get_index_of(key).unwrap_or(usize::MAX);
            if !fields.keys().map(|k| place(k.as_str())).is_sorted() {
                fields.sort_by_cached_key(|key, _| place(key.as_str()));
            }
            for (key, field) in fields.iter_mut() {
                if let Some(sets) = keys.get(key.as_str())
                    && !sets.is_empty()
                {
                    arrange(doc, sets, field);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::in_query_order;
    use async_graphql::{Name, Value};

    fn object(fields: &[(&str, Value)]) -> Value {
        Value::Object(
            fields
                .iter()
                .map(|(k, v)| (Name::new(k), v.clone()))
                .collect(),
        )
    }

    fn keys(value: &Value) -> Vec<String> {
        match value {
            Value::Object(fields) => fields.keys().map(|k| k.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn fields_aliases_fragments_and_lists_come_in_the_query_order() {
        let doc = async_graphql::parser::parse_query(
            "query Q { b: booking { status ...F payment { amount status } } list { y x } }
             fragment F on Booking { id ... on Booking { total } }",
        )
        .expect("parses");
        let booking = object(&[
            (
                "payment",
                object(&[("status", Value::Null), ("amount", Value::Null)]),
            ),
            ("total", Value::Null),
            ("id", Value::Null),
            ("status", Value::Null),
        ]);
        let item = object(&[("x", Value::Null), ("y", Value::Null)]);
        let mut data = object(&[
            ("list", Value::List(vec![item.clone(), item])),
            ("b", booking),
        ]);
        in_query_order(&doc, Some("Q"), &mut data);
        assert_eq!(keys(&data), ["b", "list"]);
        let Value::Object(top) = &data else {
            unreachable!()
        };
        assert_eq!(keys(&top["b"]), ["status", "id", "total", "payment"]);
        let Value::Object(b) = &top["b"] else {
            unreachable!()
        };
        assert_eq!(keys(&b["payment"]), ["amount", "status"]);
        let Value::List(items) = &top["list"] else {
            unreachable!()
        };
        assert!(items.iter().all(|item| keys(item) == ["y", "x"]));
    }
}
