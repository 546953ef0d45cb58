//! Answers in the order the query asked for them (GraphQL §7.2.2, "Serialized
//! Map Ordering"). async-graphql resolves a query's fields side by side and
//! keeps each object's fields in the order they finished, so a field that
//! waits for a service (`host`, `payment`) came last, and one racing another
//! came first on one call and second on the next.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Positioned, Value, Variables};
use indexmap::IndexMap;

/// Fragments spread inside fragments, at most: validation refuses a cycle
/// before anything runs, this only bounds the walk if one got through.
const MOST_SPREADS: usize = 32;

/// Puts `data`'s fields in the order the operation `operation_name` of
/// `doc` selects them, at every level, leaving out what `@skip` and
/// `@include` left out (by `variables`). Keys the selections do not name
/// (none, unless the executor added some) keep their place after the rest.
///
/// Fragments are merged whatever type they are on: where two members of a
/// union select the same keys in different orders, an object follows the
/// first one's.
pub fn in_query_order(
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    data: &mut Value,
) {
    if let Some(operation) = operation(doc, operation_name) {
        let walk = Walk {
            doc,
            operation,
            variables,
        };
        walk.arrange(&[&operation.selection_set.node], data);
    }
}

/// The operation that runs: the one named, or the only one.
pub fn operation<'a>(
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

/// One answer's walk.
struct Walk<'a> {
    doc: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    variables: &'a Variables,
}

impl<'a> Walk<'a> {
    /// Orders `value` (an object, or a list of them at any depth) by the
    /// merged selection `sets` of the fields it answers.
    fn arrange(&self, sets: &[&'a SelectionSet], value: &mut Value) {
        if matches!(value, Value::Object(_) | Value::List(_)) {
            let mut keys = IndexMap::new();
            for set in sets {
                self.collect(set, &mut keys, 0);
            }
            self.apply(&keys, value);
        }
    }

    /// The response keys of `set`, in order, each with the selection sets
    /// of the fields answered under it (fields of one key are merged,
    /// fragments spread in place).
    fn collect(
        &self,
        set: &'a SelectionSet,
        keys: &mut IndexMap<&'a str, Vec<&'a SelectionSet>>,
        spreads: usize,
    ) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) if self.runs(&field.node.directives) => {
                    let under = keys
                        .entry(field.node.response_key().node.as_str())
                        .or_default();
                    if !field.node.selection_set.node.items.is_empty() {
                        under.push(&field.node.selection_set.node);
                    }
                }
                Selection::FragmentSpread(spread)
                    if spreads < MOST_SPREADS && self.runs(&spread.node.directives) =>
                {
                    if let Some(fragment) = self.doc.fragments.get(&spread.node.fragment_name.node)
                    {
                        self.collect(&fragment.node.selection_set.node, keys, spreads + 1);
                    }
                }
                Selection::InlineFragment(inline) if self.runs(&inline.node.directives) => {
                    self.collect(&inline.node.selection_set.node, keys, spreads);
                }
                _ => {}
            }
        }
    }

    /// Whether a selection with `directives` runs: not `@skip(if: true)`
    /// nor `@include(if: false)`.
    fn runs(&self, directives: &[Positioned<async_graphql::parser::types::Directive>]) -> bool {
        directives.iter().all(|directive| {
            let condition = directive
                .node
                .get_argument("if")
                .and_then(|written| {
                    written
                        .node
                        .clone()
                        .into_const_with(|name| self.variable(&name).ok_or(()))
                        .ok()
                })
                .and_then(|value| match value {
                    Value::Boolean(b) => Some(b),
                    _ => None,
                });
            match directive.node.name.node.as_str() {
                "skip" => condition != Some(true),
                "include" => condition != Some(false),
                _ => true,
            }
        })
    }

    /// A variable's value, or its default.
    fn variable(&self, name: &str) -> Option<Value> {
        self.variables.get(name).cloned().or_else(|| {
            self.operation
                .variable_definitions
                .iter()
                .find(|d| d.node.name.node == name)
                .and_then(|d| d.node.default_value().cloned())
        })
    }

    fn apply(&self, keys: &IndexMap<&'a str, Vec<&'a SelectionSet>>, value: &mut Value) {
        match value {
            Value::List(items) => {
                for item in items {
                    self.apply(keys, item);
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
                        self.arrange(sets, field);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_query_order;
    use async_graphql::{Name, Value, Variables};

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
        in_query_order(
            &doc,
            Some("Q"),
            &async_graphql::Variables::default(),
            &mut data,
        );
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

    #[test]
    fn what_skip_and_include_leave_out_does_not_decide_the_order() {
        let doc = async_graphql::parser::parse_query(
            "query Q($full: Boolean!, $no: Boolean = false) {
                booking { ...Full @include(if: $full) a @skip(if: $no) id status }
             }
             fragment Full on Booking { status total }",
        )
        .expect("parses");
        let answer = |names: &[&str]| {
            let fields: Vec<(&str, Value)> = names.iter().map(|k| (*k, Value::Null)).collect();
            object(&[("booking", object(&fields))])
        };
        let booking_keys = |data: &Value| match data {
            Value::Object(top) => keys(&top["booking"]),
            _ => Vec::new(),
        };
        let mut variables = Variables::default();
        variables.insert(Name::new("full"), Value::Boolean(false));
        let mut data = answer(&["status", "id", "a"]);
        in_query_order(&doc, Some("Q"), &variables, &mut data);
        assert_eq!(booking_keys(&data), ["a", "id", "status"]);
        variables.insert(Name::new("full"), Value::Boolean(true));
        let mut data = answer(&["a", "id", "total", "status"]);
        in_query_order(&doc, Some("Q"), &variables, &mut data);
        assert_eq!(booking_keys(&data), ["status", "total", "a", "id"]);
    }
}
