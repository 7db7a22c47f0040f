//! `_catalog` through the gate: only what the caller may pull, with
//! pagination (`n`, `last`, `Link`) still working.

use serde_json::Value;

use crate::harness::Stack;
use crate::harness::gate::example_config;
use crate::harness::http::{client, token};

/// The example config with the `test` account limited to `public/*`: its
/// rule narrowed, and an explicit deny (`[]`) for the rest before the
/// catch-all rule can grant anything.
fn config() -> String {
    example_config().replace(
        "match = { account = \"test\" }\nactions = [\"pull\"]",
        "match = { account = \"test\", name = \"public/*\" }\nactions = [\"pull\"]\n\n\
         [[acl]]\nmatch = { account = \"test\", type = \"repository\" }\nactions = []",
    )
}

async fn catalog(stack: &Stack, creds: (&str, &str), query: &str) -> (Vec<String>, Option<String>) {
    let t = token(&stack.gate, Some(creds), &["registry:catalog:*"]).await;
    let resp = client()
        .get(format!("{}/v2/_catalog{query}", stack.gate.url()))
        .bearer_auth(t)
        .send()
        .await
        .expect("GET /v2/_catalog");
    assert_eq!(resp.status(), 200);
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().expect("ascii Link").to_owned());
    let body: Value = resp.json().await.expect("catalog JSON");
    let names = body["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|v| v.as_str().expect("name").to_owned())
        .collect();
    (names, link)
}

#[tokio::test]
async fn catalog_lists_only_pullable_repositories_and_paginates() {
    let stack = Stack::with_config(&config()).await;
    for repo in ["private/a", "public/a", "public/b", "secret/c", "public/c"] {
        stack.registry.seed(repo, "v1").await;
    }
    let (all, _) = catalog(&stack, ("admin", "badmin"), "").await;
    assert_eq!(
        all,
        ["private/a", "public/a", "public/b", "public/c", "secret/c"]
    );

    let (visible, link) = catalog(&stack, ("test", "123"), "").await;
    assert_eq!(visible, ["public/a", "public/b", "public/c"]);
    assert_eq!(link, None);

    // Page by page: the cursor skips what the caller may not see.
    let mut pages = Vec::new();
    let mut query = "?n=2".to_owned();
    loop {
        let (names, link) = catalog(&stack, ("test", "123"), &query).await;
        pages.push(names);
        let Some(link) = link else { break };
        let next = link
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(url, _)| url.to_owned())
            .unwrap_or_else(|| panic!("unexpected Link {link}"));
        query = next.trim_start_matches("/v2/_catalog").to_owned();
        assert!(pages.len() < 5, "pagination does not end: {pages:?}");
    }
    assert_eq!(pages, [vec!["public/a", "public/b"], vec!["public/c"]]);
}
