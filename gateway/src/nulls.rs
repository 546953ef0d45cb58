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
//! Queries and mutations only: a subscription's events keep async-graphql's
//! way (no execute hook runs for them, so nothing here would add the errors
//! back).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextResolve, ResolveInfo,
};
use async_graphql::{QueryPathNode, QueryPathSegment, Response, ServerError, ServerResult, Value};

/// The schema's extension (`crate::schema::build_schema`).
pub struct FieldErrorsAsNull;

impl ExtensionFactory for FieldErrorsAsNull {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Nulls::default())
    }
}

/// One request's.
#[derive(Default)]
struct Nulls {
    /// Set by the execute hook: a query or a mutation runs.
    active: AtomicBool,
    /// A field that may not be null failed: its parent is to be null.
    failed: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Errors of fields answered null here, for the response (the executor
    /// no longer sees them).
    errors: Vec<ServerError>,
    /// Paths (response keys and list indexes) of objects a required field
    /// of failed under: each is null, or passes it on if it may not be.
    null_here: HashSet<Vec<String>>,
    /// A required root field failed: `data` is null.
    data_null: bool,
}

impl Nulls {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object holding the field at `path` is null (the field may not be).
    fn fail_parent(&self, state: &mut State, path: &QueryPathNode<'_>) {
        match path.parent {
            Some(parent) => {
                state.null_here.insert(parent.to_string_vec());
            }
            None => state.data_null = true,
        }
        self.failed.store(true, Ordering::Release);
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
        response.errors.extend(state.errors);
        if state.data_null {
            response.data = Value::Null;
        }
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
        let path = info.path_node;
        let ty = info.return_type;
        match next.run(ctx, info).await {
            Err(error) if nullable(ty) => {
                self.state().errors.push(error);
                Ok(Some(Value::Null))
            }
            Err(error) => {
                self.fail_parent(&mut self.state(), path);
                Err(error)
            }
            Ok(value) if !self.failed.load(Ordering::Acquire) => Ok(value),
            Ok(mut value) => {
                let here = path.to_string_vec();
                let mut state = self.state();
                let mut null = state.null_here.remove(&here);
                // Items of this list a required field failed under.
                if let (Some(Value::List(items)), Some(item)) = (&mut value, item_type(ty)) {
                    let failed: Vec<Vec<String>> = state
                        .null_here
                        .iter()
                        .filter(|p| p.len() == here.len() + 1 && p.starts_with(&here))
                        .cloned()
                        .collect();
                    for p in failed {
                        state.null_here.remove(&p);
                        let index = p.last().and_then(|i| i.parse::<usize>().ok());
                        match index.and_then(|i| items.get_mut(i)) {
                            Some(slot) if nullable(item) => *slot = Value::Null,
                            _ => null = true,
                        }
                    }
                }
                if !null {
                    return Ok(value);
                }
                if !nullable(ty) {
                    self.fail_parent(&mut state, path);
                }
                Ok(Some(Value::Null))
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
