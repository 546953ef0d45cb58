//! The committed SDL (`gateway/schema.graphql`) is the public contract: this
//! fails when the code's schema drifts from it. To accept a change on
//! purpose: `UPDATE_SCHEMA=1 cargo test -p duikou-gateway --test schema`.

use duikou_gateway::build_schema;

#[test]
fn the_committed_sdl_matches_the_schema_in_the_code() {
    let sdl = build_schema(None, None, None).sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    if std::env::var("UPDATE_SCHEMA").is_ok() {
        std::fs::write(path, &sdl).expect("write schema.graphql");
        return;
    }
    let committed = std::fs::read_to_string(path).expect("gateway/schema.graphql exists");
    assert!(
        committed == sdl,
        "gateway/schema.graphql is out of date; review the change and run \
         UPDATE_SCHEMA=1 cargo test -p duikou-gateway --test schema"
    );
}

#[tokio::test]
async fn graphiql_introspection_passes_the_depth_and_complexity_limits() {
    let query = include_str!("introspection.graphql");
    let response = build_schema(None, None, None).execute(query).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
}
