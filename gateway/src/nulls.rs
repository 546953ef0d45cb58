//! Field errors answered as GraphQL §6.4.4 ("Handling Field Errors") says:
//! the field that failed is null, with its error in `errors`; a field that
//! may not be null passes its null to its parent, up to the first that may
//! be (or to `data` itself).
//!
//! async-graphql (7.2) instead leaves a failed field's key out of its
//! object, whatever its type, and keeps the object: `{ booking(id: …) { id }
//! welfareFund { … } }` without a login answered `data` without `booking`,
//! and a `Booking!` whose required field failed answered a booking missing
//! it. Clients generated from the schema take a missing key for a broken
//! answer.
//!
//! A failed field that may be null is answered null where it fails. One
//! that may not be is recorded, with the types of the fields above it as
//! they finish, and the null is put where it lands once the whole answer is
//! merged (a key selected twice — by two fragments — is resolved twice and
//! merged after, and a null in one copy would be lost in the merge).
//!
//! Root mutations run one after another: once one has nulled `data`, the
//! rest do not run (their answers could not be shown), as graphql-js stops.
//!
//! Queries and mutations only: a subscription's events keep async-graphql's
//! way (no execute hook runs for them, so nothing here would add the errors
//! back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextResolve, ResolveInfo,
};
use async_graphql::{Name, QueryPathSegment, Response, ServerError, ServerResult, Value};

/// The schema's extension (`crate::schema::build_schema`).
pub struct FieldErrorsAsNull;

impl ExtensionFactory for FieldErrorsAsNull {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Nulls::default())
    }
}

/// A path in the answer: response keys, and list indexes as numbers.
type Path = Vec<String>;

/// One request's.
#[derive(Default)]
struct Nulls {
    /// Set by the execute hook: a query or a mutation runs.
    active: AtomicBool,
    /// A field that may not be null failed: the types of the fields that
    /// finish from then on are recorded.
    failed: AtomicBool,
    state: Mutex<State>,
}

/// Whether a field may be null, and the items of a list field.
#[derive(Debug, Clone, Copy)]
struct Kind {
    nullable: bool,
    items_nullable: Option<bool>,
}

#[derive(Default)]
struct State {
    /// Errors of fields answered null here, for the response (the executor
    /// no longer sees them).
    errors: Vec<ServerError>,
    /// Where a field that may not be null failed.
    failures: Vec<Path>,
    /// The fields that finished after a failure (those above it among them).
    kinds: HashMap<Path, Kind>,
}

impl State {
    /// Where the null of a required field failed at `failure` lands: the
    /// nearest field or list item above it that may be null, or `data`
    /// (None).
    fn lands(&self, failure: &Path) -> Option<Path> {
        let mut at = failure.clone();
        at.pop();
        while let Some(last) = at.last() {
            if last.parse::<usize>().is_ok() {
                // A list item: the list's type says.
                let list = &at[..at.len() - 1];
                if self.kinds.get(list).and_then(|k| k.items_nullable) != Some(false) {
                    return Some(at);
                }
                at.pop();
                continue;
            }
            match self.kinds.get(&at) {
                Some(kind) if !kind.nullable => {
                    at.pop();
                }
                _ => return Some(at),
            }
        }
        None
    }

    /// Whether a failure so far nulls `data`.
    fn data_null(&self) -> bool {
        self.failures.iter().any(|f| self.lands(f).is_none())
    }
}

impl Nulls {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a value of the type named `ty` (`Booking!`, `[Edge!]!`) may be
/// null.
fn nullable(ty: &str) -> bool {
    !ty.ends_with('!')
}

/// A list type's item type (`[Edge!]!` → `Edge!`), if it is a list.
fn item_type(ty: &str) -> Option<&str> {
    ty.trim_end_matches('!')
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
}

/// Puts null at `path` in `data`, if every step to it is there.
fn null_at(data: &mut Value, path: &[String]) {
    let Some((last, above)) = path.split_last() else {
        *data = Value::Null;
        return;
    };
    let mut at = data;
    for step in above {
        at = match at {
            Value::Object(fields) => match fields.get_mut(step.as_str()) {
                Some(next) => next,
                None => return,
            },
            Value::List(items) => match step.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    match at {
        Value::Object(fields) => {
            fields.insert(Name::new(last), Value::Null);
        }
        Value::List(items) => {
            if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}

#[async_trait::async_trait]
impl Extension for Nulls {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.active.store(true, Ordering::Release);
        let mut response = next.run(ctx, operation_name).await;
        let state = std::mem::take(&mut *self.state());
        for failure in &state.failures {
            match state.lands(failure) {
                Some(path) => null_at(&mut response.data, &path),
                None => {
                    response.data = Value::Null;
                    break;
                }
            }
        }
        response.errors.extend(state.errors);
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // A list's items pass here too, each typed `T!` whatever the list
        // says: the list's field decides for them (`[T]` or `[T!]`).
        if !self.active.load(Ordering::Acquire)
            || info.is_for_introspection
            || matches!(info.path_node.segment, QueryPathSegment::Index(_))
        {
            return next.run(ctx, info).await;
        }
        if info.path_node.parent.is_none()
            && info.parent_type == "Mutation"
            && self.failed.load(Ordering::Acquire)
            && self.state().data_null()
        {
            return Ok(Some(Value::Null));
        }
        let path = info.path_node;
        let ty = info.return_type;
        match next.run(ctx, info).await {
            Err(error) if nullable(ty) => {
                self.state().errors.push(error);
                Ok(Some(Value::Null))
            }
            Err(error) => {
                self.state().failures.push(path.to_string_vec());
                self.failed.store(true, Ordering::Release);
                Err(error)
            }
            Ok(value) => {
                if self.failed.load(Ordering::Acquire) {
                    let kind = Kind {
                        nullable: nullable(ty),
                        items_nullable: item_type(ty).map(nullable),
                    };
                    self.state().kinds.insert(path.to_string_vec(), kind);
                }
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use serde_json::json;

    struct Query;

    #[Object]
    impl Query {
        async fn ok(&self) -> i32 {
            1
        }
        async fn fails(&self) -> async_graphql::Result<Option<i32>> {
            Err("away".into())
        }
        async fn required_fails(&self) -> async_graphql::Result<i32> {
            Err("away".into())
        }
        async fn holder(&self) -> Option<Item> {
            Some(Item(1))
        }
        /// `[Item!]!`
        async fn items(&self) -> Vec<Item> {
            vec![Item(1), Item(2)]
        }
        /// `[Item]!`
        async fn maybe_items(&self) -> Vec<Option<Item>> {
            vec![Some(Item(1)), Some(Item(2))]
        }
    }

    struct Item(i32);

    #[Object]
    impl Item {
        async fn n(&self) -> i32 {
            self.0
        }
        /// Fails for odd numbers.
        async fn even(&self) -> async_graphql::Result<i32> {
            if self.0 % 2 == 1 {
                Err("odd".into())
            } else {
                Ok(self.0)
            }
        }
        async fn maybe_even(&self) -> async_graphql::Result<Option<i32>> {
            Err("odd".into())
        }
    }

    struct Mutation;

    #[Object]
    impl Mutation {
        async fn count(&self, ctx: &async_graphql::Context<'_>) -> usize {
            let runs = ctx.data_unchecked::<Arc<std::sync::atomic::AtomicUsize>>();
            runs.fetch_add(1, Ordering::SeqCst) + 1
        }
        async fn required_fails(&self) -> async_graphql::Result<i32> {
            Err("refused".into())
        }
        async fn fails(&self) -> async_graphql::Result<Option<i32>> {
            Err("refused".into())
        }
    }

    #[tokio::test]
    async fn mutations_after_one_that_nulled_data_do_not_run() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let schema = Schema::build(Query, Mutation, EmptySubscription)
            .extension(FieldErrorsAsNull)
            .data(runs.clone())
            .finish();
        let response = schema
            .execute("mutation { a: count b: requiredFails c: count }")
            .await;
        assert_eq!(response.data, Value::Null);
        assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "c ran after data was null");
        // A failure that may be null stops nothing.
        let response = schema
            .execute("mutation { a: count b: fails c: count }")
            .await;
        let data = response.data.into_json().unwrap_or_default();
        assert_eq!(data, json!({ "a": 2, "b": null, "c": 3 }));
    }

    /// `query`'s data and its errors' paths.
    async fn run(query: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(FieldErrorsAsNull)
            .finish();
        let response = schema.execute(query).await;
        let paths = response
            .errors
            .iter()
            .map(|e| serde_json::to_value(&e.path).unwrap_or_default())
            .collect();
        let data = response.data.into_json().unwrap_or_default();
        (data, paths)
    }

    #[tokio::test]
    async fn a_failed_field_is_null_and_a_required_one_nulls_its_parent() {
        // async-graphql left `fails` out of `data`.
        assert_eq!(
            run("{ fails ok }").await,
            (json!({ "fails": null, "ok": 1 }), vec![json!(["fails"])])
        );
        assert_eq!(
            run("{ requiredFails ok }").await,
            (json!(null), vec![json!(["requiredFails"])])
        );
        // It answered `holder: { n: 1 }`, `even` left out.
        assert_eq!(
            run("{ holder { n even } ok }").await,
            (
                json!({ "holder": null, "ok": 1 }),
                vec![json!(["holder", "even"])]
            )
        );
        assert_eq!(
            run("{ holder { n maybeEven } }").await,
            (
                json!({ "holder": { "n": 1, "maybeEven": null } }),
                vec![json!(["holder", "maybeEven"])]
            )
        );
        // An item of `[Item]!` is null; one of `[Item!]!` nulls the list,
        // which may not be null either: so `data` is.
        assert_eq!(
            run("{ maybeItems { n even } ok }").await,
            (
                json!({ "maybeItems": [null, { "n": 2, "even": 2 }], "ok": 1 }),
                vec![json!(["maybeItems", 0, "even"])]
            )
        );
        assert_eq!(
            run("{ items { n even } ok }").await,
            (json!(null), vec![json!(["items", 0, "even"])])
        );
        // A key selected twice is resolved twice and merged: the null of
        // the copy that failed is not lost to the other's object.
        assert_eq!(
            run("{ holder { n } ...F } fragment F on Query { holder { even } }").await,
            (json!({ "holder": null }), vec![json!(["holder", "even"])])
        );
        assert_eq!(
            run("{ maybeItems { n } maybeItems { even } }").await,
            (
                json!({ "maybeItems": [null, { "n": 2, "even": 2 }] }),
                vec![json!(["maybeItems", 0, "even"])]
            )
        );
        // Aliases are the keys.
        assert_eq!(
            run("{ a: holder { n } b: holder { n even } }").await,
            (
                json!({ "a": { "n": 1 }, "b": null }),
                vec![json!(["b", "even"])]
            )
        );
    }

    #[test]
    fn types_say_what_may_be_null() {
        assert!(nullable("Booking"));
        assert!(!nullable("Booking!"));
        assert_eq!(item_type("[Edge!]!"), Some("Edge!"));
        assert_eq!(item_type("[String]"), Some("String"));
        assert_eq!(item_type("Money!"), None);
    }
}
