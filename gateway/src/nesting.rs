//! How deeply a query's text may nest brackets — lists, input objects,
//! selection sets and argument lists — checked on the text before any
//! parsing: the GraphQL parser and the input conversion recurse once per
//! level, and a few hundred nested `[` in a 700-byte anonymous request
//! would otherwise overflow a worker's stack and abort the process.
//! And how many names and values it may hold, for the time and memory its
//! parsing takes.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};
use std::sync::Arc;

/// The deepest nesting of `[`, `{` and `(` a query may have. Selections
/// are limited to 16 levels by the schema; 64 leaves inputs room.
pub const MAX_NESTING: usize = 64;

/// The most parts a query's text may hold — names (of fields, arguments,
/// types, variables, fragments, enum values) and values (numbers, strings,
/// lists, input objects) — as many as the fields a query may run. Each
/// weighs some tens to hundreds of bytes parsed and takes its time: a
/// 256 KiB body of one-letter fields parsed to some 40 MB before any check
/// could look, and one of empty lists (`[][]…`, no name at all) took
/// seconds of a worker and 50 MB. Large inputs go in variables, which are
/// JSON and not counted here.
pub const MAX_PARTS: usize = crate::http::MAX_FIELDS_RUN;

/// Why `query` is refused, if it nests deeper than [`MAX_NESTING`] or
/// holds more than [`MAX_PARTS`] names and values. What is in strings,
/// block strings and comments does not count (a string is one value).
pub fn refusal(query: &str) -> Option<String> {
    let scan = scan(query);
    if scan.deepest > MAX_NESTING {
        return Some(format!(
            "the query nests lists, objects or selections more than {MAX_NESTING} deep; \
             send flatter input"
        ));
    }
    (scan.parts > MAX_PARTS).then(|| {
        format!(
            "the query is too long: more than {MAX_PARTS} names and values; send a smaller \
             query, large inputs as variables"
        )
    })
}

/// How many names and values `query` holds, counted up to one past
/// [`MAX_PARTS`].
pub fn parts(query: &str) -> usize {
    scan(query).parts
}

/// What [`scan`] finds of a query's text.
struct Scan {
    /// The deepest bracket nesting, up to one past [`MAX_NESTING`].
    deepest: usize,
    /// Names and values, up to one past [`MAX_PARTS`].
    parts: usize,
}

/// Reads `query` once, lexically (it may not parse), until it is seen to
/// be refused.
fn scan(query: &str) -> Scan {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut parts, mut i) = (0usize, 0usize, 0usize, 0usize);
    while i < bytes.len() && deepest <= MAX_NESTING && parts <= MAX_PARTS {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                parts += 1;
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
                parts += 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                // A list or an object is a value; a selection set or an
                // argument list is a part of what holds it, counted too.
                parts += 1;
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                parts += 1;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9')
                {
                    i += 1;
                }
            }
            // A number is one value (its exponent's `e` no name).
            b'0'..=b'9' | b'-' => {
                parts += 1;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Scan { deepest, parts }
}

/// The deepest bracket nesting of `query`, counted up to one past the limit.
#[cfg(test)]
fn deepest(query: &str) -> usize {
    scan(query).deepest
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
        let socket = ctx.data_opt::<crate::socket::OverWebSocket>().is_some();
        // A subscribe counts against the account's rate limit as a request
        // over HTTP does (api.md), before any of the work it asks for:
        // refused, parsed or not, it still counts.
        if socket
            && let Some(viewer) = ctx.data_opt::<shared::auth::Principal>()
            && let Some(limiter) = ctx.data_opt::<crate::limits::Limiter>()
            && let Err(wait) = limiter
                .check(&format!("account:{}", viewer.account_id))
                .await
        {
            return Err(crate::error::refused_as(
                shared::ErrorCode::RateLimited,
                crate::limits::too_many(wait),
            ));
        }
        if let Some(message) = refusal(query) {
            return Err(crate::error::refused(message));
        }
        // HTTP counted the fields of the document it parsed; a subscription
        // over the socket is parsed here first for the same count, before
        // async-graphql's own walks of it (`http::too_many_fields`).
        if socket
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

    #[test]
    fn names_and_values_count_outside_strings_and_comments() {
        // query Q ( v Int { a ( b 1e5 c v { __typename: not the comment's.
        assert_eq!(
            parts("query Q($v: Int) { a(b: 1e5, c: $v) { __typename } } # d e f"),
            14
        );
        // { a ( b "…" f """…""" i -1.5E-3: a string is one value.
        assert_eq!(parts(r#"{ a(b: "c d e", f: """ g h """, i: -1.5E-3) }"#), 9);
        let long = format!("{{ {} }}", "a ".repeat(MAX_PARTS));
        assert!(
            refusal(&long).is_some_and(|m| m.contains("names and values")),
            "{:?}",
            refusal(&long)
        );
        let fine = format!("{{ {} }}", "a ".repeat(MAX_PARTS - 1));
        assert!(refusal(&fine).is_none());
        // Values without a name: empty lists, numbers, strings.
        for value in ["[]", "1 ", "\"x\"", "{}"] {
            let many = format!("{{ a(b: [{}]) }}", value.repeat(MAX_PARTS));
            assert!(refusal(&many).is_some(), "{value}");
        }
    }
}
