//! How deeply a query's text may nest brackets — lists, input objects,
//! selection sets and argument lists — checked on the text before any
//! parsing: the GraphQL parser and the input conversion recurse once per
//! level, and a few hundred nested `[` in a 700-byte anonymous request
//! would otherwise overflow a worker's stack and abort the process.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};
use std::sync::Arc;

/// The deepest nesting of `[`, `{` and `(` a query may have. Selections
/// are limited to 16 levels by the schema; 64 leaves inputs room.
pub const MAX_NESTING: usize = 64;

/// Why `query` is refused, if it nests deeper than [`MAX_NESTING`].
/// Brackets in strings, block strings and comments do not count.
pub fn refusal(query: &str) -> Option<String> {
    (deepest(query) > MAX_NESTING).then(|| {
        format!(
            "the query nests lists, objects or selections more than {MAX_NESTING} deep; \
             send flatter input"
        )
    })
}

/// The deepest bracket nesting of `query`, counted up to one past the limit.
fn deepest(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() && deepest <= MAX_NESTING {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped delimiter inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The same check for every request the schema executes, WebSocket
/// subscriptions included (HTTP checks before its own parse, too), and on
/// the socket the count of fields HTTP makes of what it parsed.
pub struct NestingLimit;

impl ExtensionFactory for NestingLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NestingLimitExtension)
    }
}

struct NestingLimitExtension;

#[async_trait::async_trait]
impl Extension for NestingLimitExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(message) = refusal(query) {
            return Err(crate::error::refused(message));
        }
        // HTTP counted the fields of the document it parsed; a subscription
        // over the socket is parsed here first for the same count, before
        // async-graphql's own walks of it (`http::too_many_fields`).
        if ctx.data_opt::<crate::socket::OverWebSocket>().is_some()
            && let Ok(doc) = async_graphql::parser::parse_query(query)
            && let Some(message) = crate::http::too_many_fields(&doc)
        {
            return Err(crate::error::refused(message));
        }
        next.run(ctx, query, variables).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_count_outside_strings_and_comments_only() {
        assert_eq!(deepest("{ a(b: [[1]]) { c } }"), 4);
        assert_eq!(deepest(r#"{ a(b: "[[[[\"[[") }"#), 2);
        assert_eq!(deepest("{ a # [[[[[[\n }"), 1);
        assert_eq!(deepest(r#"{ a(b: """ [[[ \""" [[[ """) }"#), 2);
        let deep = format!(
            "{{ regions(parentCode: {}\"1\"{}) {{ code }} }}",
            "[".repeat(330),
            "]".repeat(330)
        );
        assert!(refusal(&deep).is_some());
        let fine = format!("{{ a(b: {}1{}) }}", "[".repeat(60), "]".repeat(60));
        assert!(refusal(&fine).is_none());
        // An unterminated string or block string ends the scan, no panic.
        assert_eq!(deepest("{ a(b: \"[[["), 2);
        assert_eq!(deepest("{ a(b: \"\"\"[[["), 2);
    }
}
