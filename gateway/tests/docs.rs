//! Every GraphQL example in README.md and docs/ is one a client can send:
//! it parses and passes the schema's validation and limits. The examples run
//! here against the schema with no services behind it, so a resolver fails
//! at its field (an error with a path, which is fine); a request error —
//! syntax, an unknown field, argument or enum value, a literal of the wrong
//! type, a limit — fails this test.

use duikou_gateway::build_schema;
use futures::StreamExt;
use std::path::Path;

/// The ```graphql blocks of the README and of every page in docs/.
fn blocks() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut found = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("a page");
        let name = page
            .strip_prefix(&root)
            .unwrap_or(&page)
            .display()
            .to_string();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```graphql\n") {
            rest = &rest[start + "```graphql\n".len()..];
            let end = rest.find("```").expect("a closed block");
            found.push((name.clone(), rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    found
}

/// A block's operations, one per top-level `{ … }` with what precedes it
/// (`mutation`, a name, variables); `#` comments and strings are skipped
/// when counting braces.
fn operations(block: &str) -> Vec<String> {
    let mut ops = Vec::new();
    let (mut depth, mut in_string, mut in_comment, mut escaped) = (0u32, false, false, false);
    let mut current = String::new();
    for c in block.chars() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                current.push(c);
            }
            continue;
        }
        current.push(c);
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => {
                current.pop();
                in_comment = true;
            }
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    ops.push(current.trim().to_owned());
                    current.clear();
                }
            }
            _ => {}
        }
    }
    assert!(
        current.trim().is_empty(),
        "text after the last operation: {current}"
    );
    ops
}

#[test]
fn operations_are_split_at_top_level_braces_outside_strings_and_comments() {
    let block = "# a { comment\n{ a(s: \"}{\\\"\") { b } }\nmutation M($x: ID!) { c(id: $x) }\n";
    assert_eq!(
        operations(block),
        vec![
            "{ a(s: \"}{\\\"\") { b } }".to_owned(),
            "mutation M($x: ID!) { c(id: $x) }".to_owned()
        ]
    );
}

/// A request error: no path (syntax, validation, limits), or an argument's
/// literal refused at its field (a date that does not exist).
fn refused_request(e: &async_graphql::ServerError) -> bool {
    e.path.is_empty()
        || [
            "Failed to parse \"",
            "Expected input type \"",
            "Invalid value for argument",
        ]
        .iter()
        .any(|prefix| e.message.starts_with(prefix))
}

#[tokio::test]
async fn every_graphql_example_in_the_docs_is_valid_against_the_schema() {
    let schema = build_schema(None, None, None);
    let (mut checked, mut refused) = (0, Vec::new());
    for (page, block) in blocks() {
        for op in operations(&block) {
            checked += 1;
            let response = if op.starts_with("subscription") {
                let mut stream = schema.execute_stream(op.as_str());
                stream.next().await.unwrap_or_default()
            } else {
                schema.execute(op.as_str()).await
            };
            for e in response.errors.iter().filter(|e| refused_request(e)) {
                refused.push(format!("{page}: {op}\n    → {}", e.message));
            }
        }
    }
    assert!(checked >= 50, "only {checked} examples found");
    assert!(
        refused.is_empty(),
        "{} of {checked} examples are refused:\n{}",
        refused.len(),
        refused.join("\n")
    );
}
