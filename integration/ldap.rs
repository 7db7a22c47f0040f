//! LDAP through the gate: the gate as a process, a throwaway slapd with the
//! example directory (config/ldap/example.ldif), a real docker-registry
//! upstream and skopeo as the client. The backend itself is tested more
//! finely in ldap_backend.rs; here it is what users and operators see:
//! status codes, pushes and pulls, the cache, outages and `ldap-check`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::harness::gate::{self, example_config, example_config_path};
use crate::harness::http::{SERVICE, bearer, jwt_parts, post_token, request_token, token};
use crate::harness::image::{OciImage, Skopeo};
use crate::harness::slapd::{PASSWORD, SERVICE_DN, Slapd, SlapdOptions};
use crate::harness::{Gate, Registry, Stack, cpu_time, repo_root};

const MOZART: (&str, &str) = ("mozart", PASSWORD);
const BACH: (&str, &str) = ("bach", PASSWORD);
const KANT: (&str, &str) = ("kant", PASSWORD);
const ADMIN: (&str, &str) = ("admin", "badmin");
const MOZART_DN: &str = "uid=mozart,ou=musicians,dc=example,dc=com";
const BACH_DN: &str = "uid=bach,ou=musicians,dc=example,dc=com";
const SCOPE: &str = "repository:team/app:pull,push";

fn combined_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The actions the token grants on repository `name`, sorted.
fn granted(token: &str, name: &str) -> Vec<String> {
    let claims = jwt_parts(token).1;
    let mut actions: Vec<String> = claims["access"]
        .as_array()
        .unwrap_or_else(|| panic!("no access array in {claims}"))
        .iter()
        .filter(|a| a["type"] == "repository" && a["name"] == name)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().expect("action").to_string())
        .collect();
    actions.sort();
    actions
}

/// `GET /auth` with Basic credentials for [`SCOPE`]: (status, JSON body).
async fn auth(gate: &Gate, creds: (&str, &str)) -> (u16, Value) {
    let resp = request_token(gate, Some(creds), SERVICE, &[SCOPE], &[]).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Asserts the realm refused `creds` as wrong credentials: 401 with the
/// registry's UNAUTHORIZED error (not 503: LDAP answered).
async fn assert_refused(gate: &Gate, creds: (&str, &str)) {
    let (status, body) = auth(gate, creds).await;
    assert_eq!(status, 401, "{creds:?}: {body}");
    assert_eq!(
        body["errors"][0]["code"], "UNAUTHORIZED",
        "{creds:?}: {body}"
    );
    assert!(body.get("token").is_none(), "{body}");
}

/// Asserts the realm said "cannot decide now": 503 with the registry's
/// UNAVAILABLE error, not a 401 (which would blame the password).
async fn assert_unavailable(gate: &Gate, creds: (&str, &str)) {
    let started = Instant::now();
    let (status, body) = auth(gate, creds).await;
    assert_eq!(status, 503, "{creds:?}: {body}");
    assert_eq!(
        body["errors"][0]["code"], "UNAVAILABLE",
        "{creds:?}: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{creds:?}: the 503 took {:?}",
        started.elapsed()
    );
}

/// The example config without its `bind_password_file` line (for the
/// `REGISTRY_GATE_LDAP__BIND_PASSWORD` override: exactly one of the two).
fn example_config_without_password_file() -> String {
    let config = example_config();
    let kept: Vec<&str> = config
        .lines()
        .filter(|l| !l.starts_with("bind_password_file"))
        .collect();
    assert_eq!(kept.len() + 1, config.lines().count(), "one line removed");
    kept.join("\n") + "\n"
}

/// The example config with its ACL replaced: members of the `pushers`
/// group (label `groups`) push and pull, every other account only pulls.
fn group_acl_config(ldap_labels_line: &str) -> String {
    let example = example_config();
    let head = example
        .split("\n[[acl]]")
        .next()
        .expect("example config has [[acl]] rules");
    let labels_line = "labels = { groups = \"memberOf\" }";
    assert!(head.contains(labels_line), "{head}");
    format!(
        r#"{head}
[[acl]]
match = {{ account = "admin" }}
actions = ["*"]

[[acl]]
match = {{ labels = {{ groups = "pushers" }} }}
actions = ["pull", "push"]
comment = "members of cn=pushers,ou=groups push"

[[acl]]
match = {{ account = "/.+/" }}
actions = ["pull"]
comment = "everybody else pulls"
"#,
        head = head.replace(labels_line, ldap_labels_line)
    )
}

#[tokio::test]
async fn ldap_musician_pushes_and_pulls_with_skopeo() {
    let stack = Stack::start().await;
    let skopeo = Skopeo::new();
    let image = OciImage::generate();
    let reference = format!("{}/mozart/requiem:k626", stack.gate.addr);

    let out = skopeo.push(&image, &reference, Some(MOZART)).await;
    assert!(out.status.success(), "push: {}", combined_output(&out));
    assert!(stack.registry.has_repository("mozart/requiem"));

    let (out, pulled) = skopeo.pull(&reference, Some(MOZART)).await;
    assert!(out.status.success(), "pull: {}", combined_output(&out));
    assert_eq!(pulled.digest(), image.manifest_digest);
    // The other musician pulls it too (the example ACL: any account pushes
    // and pulls).
    assert_eq!(
        skopeo.inspect_digest(&reference, Some(BACH)).await,
        image.manifest_digest
    );

    // The token is mozart's, issued on LDAP's word.
    let token = token(&stack.gate, Some(MOZART), &[SCOPE]).await;
    assert_eq!(jwt_parts(&token).1["sub"], "mozart");
    assert_eq!(granted(&token, "team/app"), ["pull", "push"]);
}

#[tokio::test]
async fn ldap_philosophers_and_bad_credentials_are_refused() {
    let stack = Stack::start().await;
    let slapd = stack.slapd.as_ref().expect("slapd");

    // kant exists and his password is right, but outside ou=musicians.
    assert_refused(&stack.gate, KANT).await;
    assert_refused(&stack.gate, ("schopenhauer", PASSWORD)).await;
    assert_eq!(slapd.bind_count("uid=kant"), 0, "kant was never bound");
    // With skopeo: the push fails as unauthorized and writes nothing.
    let skopeo = Skopeo::new();
    let out = skopeo
        .push(
            &OciImage::generate(),
            &format!("{}/kant/critique:1781", stack.gate.addr),
            Some(KANT),
        )
        .await;
    let said = combined_output(&out).to_lowercase();
    assert!(!out.status.success(), "kant pushed: {said}");
    assert!(
        ["unauthorized", "401", "authentication required"]
            .iter()
            .any(|w| said.contains(w)),
        "skopeo failed for another reason: {said}"
    );
    assert!(!stack.registry.has_repository("kant/critique"));

    // Wrong and empty passwords; the empty one never reaches LDAP (an empty
    // simple bind is an anonymous "success" on many servers).
    let wrong = "Wr0ng-not-the-password";
    assert_refused(&stack.gate, ("mozart", wrong)).await;
    assert_eq!(slapd.bind_count(MOZART_DN), 1);
    assert_eq!(slapd.wait_for_bind_results(49, 1).await, 1);
    // The form flavour says the same.
    let form = [
        ("grant_type", "password"),
        ("username", "mozart"),
        ("password", wrong),
        ("service", SERVICE),
        ("scope", SCOPE),
        ("client_id", "integration"),
    ];
    assert_eq!(post_token(&stack.gate, &form).await.status(), 401);
    let binds = slapd.bind_count("");
    assert_refused(&stack.gate, ("mozart", "")).await;
    assert_refused(&stack.gate, ("nobody", PASSWORD)).await;

    // Injection: the account is escaped in the filter, so these match
    // nothing and nobody is bound.
    for account in ["*", "mozart)(uid=*", "mozart*", "*)(objectClass=*", "m*t"] {
        assert_refused(&stack.gate, (account, PASSWORD)).await;
    }
    assert_eq!(
        slapd.bind_count(""),
        binds,
        "empty password or injected account reached a bind"
    );
    assert!(
        slapd
            .log()
            .contains(r#"filter="(&(uid=mozart\29\28uid=\2A)(objectClass=person))""#),
        "the injected account was not escaped:\n{}",
        slapd.log()
    );
    // An account with a password that is right for another account.
    assert_refused(&stack.gate, ("bach", "badmin")).await;

    // Nothing of the passwords in the gate's log.
    let log = stack.gate.log();
    assert!(!log.contains(wrong), "a password in the gate log:\n{log}");

    // And the right password still works after all that.
    let (status, body) = auth(&stack.gate, MOZART).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn ldap_group_label_drives_the_acl() {
    // memberOf, computed by the example directory's dynlist overlay.
    let config = group_acl_config("labels = { groups = \"memberOf\" }");
    let stack = Stack::with_config(&config).await;
    let skopeo = Skopeo::new();

    let mozart = token(&stack.gate, Some(MOZART), &[SCOPE]).await;
    assert_eq!(granted(&mozart, "team/app"), ["pull", "push"]);
    let bach = token(&stack.gate, Some(BACH), &[SCOPE]).await;
    assert_eq!(granted(&bach, "team/app"), ["pull"]);

    let image = OciImage::generate();
    let reference = format!("{}/team/app:1.0", stack.gate.addr);
    let out = skopeo.push(&image, &reference, Some(BACH)).await;
    assert!(
        !out.status.success(),
        "bach pushed: {}",
        combined_output(&out)
    );
    assert!(!stack.registry.has_repository("team/app"));
    let out = skopeo.push(&image, &reference, Some(MOZART)).await;
    assert!(out.status.success(), "push: {}", combined_output(&out));
    let (out, pulled) = skopeo.pull(&reference, Some(BACH)).await;
    assert!(out.status.success(), "pull: {}", combined_output(&out));
    assert_eq!(pulled.digest(), image.manifest_digest);

    // The same rules with the groups from a group search, on a second gate
    // in front of the same directory and registry.
    let slapd = stack.slapd.as_ref().expect("slapd");
    let config = group_acl_config(
        r#"group_search = { base = "ou=groups,dc=example,dc=com", filter = "(member=${dn})", label = "groups" }"#,
    );
    let env = [("REGISTRY_GATE_LDAP__URL", slapd.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let second = Gate::start_with_config(&config, &stack.registry.url(), &env).await;
    let mozart = token(&second, Some(MOZART), &[SCOPE]).await;
    assert_eq!(granted(&mozart, "team/app"), ["pull", "push"]);
    let bach = token(&second, Some(BACH), &[SCOPE]).await;
    assert_eq!(granted(&bach, "team/app"), ["pull"]);
    let resp = bearer(
        Method::GET,
        &format!("{}/v2/team/app/tags/list", second.url()),
        &bach,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn ldap_cache_spares_binds() {
    let stack = Stack::start().await;
    let slapd = stack.slapd.as_ref().expect("slapd");
    assert_eq!(slapd.bind_count(MOZART_DN), 0);

    // Two token requests (docker asks again and again), one bind.
    let first = token(&stack.gate, Some(MOZART), &[SCOPE]).await;
    assert_eq!(slapd.bind_count(MOZART_DN), 1);
    let second = token(&stack.gate, Some(MOZART), &[SCOPE]).await;
    assert_eq!(
        slapd.bind_count(MOZART_DN),
        1,
        "the second token request bound again"
    );
    assert_eq!(granted(&first, "team/app"), granted(&second, "team/app"));

    // A wrong password is not answered from the cached success: LDAP is
    // asked (and says no); the same wrong password again is remembered.
    assert_refused(&stack.gate, ("mozart", "wrong")).await;
    assert_eq!(slapd.bind_count(MOZART_DN), 2);
    assert_refused(&stack.gate, ("mozart", "wrong")).await;
    assert_eq!(slapd.bind_count(MOZART_DN), 2, "negative cache");
    token(&stack.gate, Some(MOZART), &[SCOPE]).await;
    assert_eq!(slapd.bind_count(MOZART_DN), 2);

    // Another user is a separate entry; the service account bound once for
    // all of it (its connection is re-used).
    token(&stack.gate, Some(BACH), &[SCOPE]).await;
    token(&stack.gate, Some(BACH), &[SCOPE]).await;
    assert_eq!(slapd.bind_count(BACH_DN), 1);
    assert_eq!(slapd.bind_count(SERVICE_DN), 1);
}

#[tokio::test]
async fn ldap_outage_cached_users_keep_working_others_get_503() {
    let mut stack = Stack::start().await;
    let skopeo = Skopeo::new();
    let image = OciImage::generate();
    let reference = format!("{}/mozart/outage:1", stack.gate.addr);
    let gate_pid = stack.gate.pid();

    // mozart logs in while the directory is up: now cached.
    let (status, body) = auth(&stack.gate, MOZART).await;
    assert_eq!(status, 200, "{body}");

    stack.slapd.as_mut().expect("slapd").stop();

    // The cached user still gets tokens, and pushes.
    let (status, body) = auth(&stack.gate, MOZART).await;
    assert_eq!(status, 200, "{body}");
    let out = skopeo.push(&image, &reference, Some(MOZART)).await;
    assert!(
        out.status.success(),
        "push during the outage: {}",
        combined_output(&out)
    );
    // Everyone LDAP would have to ask gets 503, not 401: an uncached user,
    // a philosopher (is he in the base? LDAP cannot say), and mozart with
    // another password (never answered from his cached success).
    assert_unavailable(&stack.gate, BACH).await;
    assert_unavailable(&stack.gate, KANT).await;
    assert_unavailable(&stack.gate, ("mozart", "other")).await;
    // Static users do not depend on LDAP.
    let (status, body) = auth(&stack.gate, ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let out = skopeo.inspect_raw(&reference, Some(ADMIN)).await;
    assert_eq!(out, image.manifest);
    // The body names no server, DN or password.
    let (_, body) = auth(&stack.gate, BACH).await;
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("dc=example") && !text.contains(PASSWORD),
        "{text}"
    );

    // The directory is back: everyone works again, same gate process.
    stack.slapd.as_mut().expect("slapd").restart().await;
    let (status, body) = auth(&stack.gate, BACH).await;
    assert_eq!(status, 200, "{body}");
    assert_refused(&stack.gate, KANT).await;
    assert_refused(&stack.gate, ("mozart", "other")).await;
    assert_eq!(
        skopeo.inspect_digest(&reference, Some(BACH)).await,
        image.manifest_digest
    );
    assert_eq!(stack.gate.pid(), gate_pid);
    // The outage is in the gate log (written off the request path).
    stack
        .gate
        .wait_log("authentication backend could not decide", 1)
        .await;
}

#[tokio::test]
async fn ldap_check_cli_reports_and_fails_on_a_bad_service_account() {
    let mut slapd = Slapd::start(SlapdOptions::default()).await;
    let config = example_config_path();
    let config = config.to_str().expect("utf-8 path");
    let url = slapd.url();
    let env = [("REGISTRY_GATE_LDAP__URL", url.as_str())];
    let root = repo_root();

    // What the base and filter find: the musicians, not the philosophers.
    let out = gate::cli(&["ldap-check", "--config", config], &env, "", &root).await;
    let text = combined_output(&out);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("connected to {url}")), "{stdout}");
    assert!(
        stdout.contains(&format!("bound as service account {SERVICE_DN}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "2 entries under ou=musicians,dc=example,dc=com match (&(uid=*)(objectClass=person))"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(MOZART_DN) && stdout.contains(BACH_DN),
        "{stdout}"
    );
    assert!(!stdout.contains("kant"), "{stdout}");

    // mozart would log in, with his group as a label.
    let args = [
        "ldap-check",
        "--config",
        config,
        "mozart",
        "--password-stdin",
    ];
    let out = gate::cli(&args, &env, "password\n", &root).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", combined_output(&out));
    assert!(
        stdout.contains(&format!("mozart is {MOZART_DN}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("account name (from uid, used by ACL rules): mozart"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"groups = ["pushers"]"#), "{stdout}");
    assert!(
        stdout.contains("password accepted: would log in as mozart"),
        "{stdout}"
    );
    let out = gate::cli(&args, &env, "Wr0ng-pass\r\n", &root).await;
    let text = combined_output(&out);
    assert!(text.contains("would NOT log in"), "{text}");
    assert!(!text.contains("Wr0ng-pass"), "{text}");
    // Would not log in: exit status 3, for scripts and CI.
    assert_eq!(out.status.code(), Some(3), "{text}");
    // Without a password: the entry and labels, no bind.
    let binds = slapd.bind_count(MOZART_DN);
    let out = gate::cli(&["ldap-check", "--config", config, "bach"], &env, "", &root).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("bach is {BACH_DN}")), "{stdout}");
    assert!(stdout.contains("labels: none"), "{stdout}");
    assert!(stdout.contains("the bind was not tried"), "{stdout}");
    assert!(out.status.success(), "{}", combined_output(&out));
    assert_eq!(slapd.bind_count(MOZART_DN), binds);
    let out = gate::cli(&["ldap-check", "--config", config, "kant"], &env, "", &root).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kant cannot log in"), "{stdout}");
    assert_eq!(out.status.code(), Some(3), "{}", combined_output(&out));
    let out = gate::cli(&args, &env, "\n", &root).await;
    assert!(
        combined_output(&out).contains("empty password"),
        "{}",
        combined_output(&out)
    );
    assert_eq!(out.status.code(), Some(3), "{}", combined_output(&out));

    // A wrong service account password: a clear error, a non-zero exit,
    // and the password is not printed.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = "Not-the-service-password";
    let env_bad = [
        ("REGISTRY_GATE_LDAP__URL", url.as_str()),
        ("REGISTRY_GATE_LDAP__BIND_PASSWORD", bad),
    ];
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, example_config_without_password_file()).expect("write config");
    let path = path.to_str().expect("utf-8 path");
    let out = gate::cli(&["ldap-check", "--config", path], &env_bad, "", &root).await;
    let text = combined_output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(SERVICE_DN) && text.contains("invalid credentials"),
        "{text}"
    );
    assert!(!text.contains(bad), "{text}");
    // The right one through the same override works.
    let env_good = [
        ("REGISTRY_GATE_LDAP__URL", url.as_str()),
        ("REGISTRY_GATE_LDAP__BIND_PASSWORD", PASSWORD),
    ];
    let out = gate::cli(&["ldap-check", "--config", path], &env_good, "", &root).await;
    assert!(out.status.success(), "{}", combined_output(&out));

    // LDAP down: non-zero, and it says so.
    slapd.stop();
    let out = gate::cli(&["ldap-check", "--config", config], &env, "", &root).await;
    let text = combined_output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("no LDAP server reachable"), "{text}");
}

/// The environment is the last layer: `REGISTRY_GATE_LDAP__BIND_PASSWORD`
/// replaces the file's `bind_password_file` (README: later layers override),
/// rather than being refused as "both".
#[tokio::test]
async fn env_bind_password_overrides_the_files_password_file() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let config = example_config_path();
    let config = config.to_str().expect("utf-8 path");
    let url = slapd.url();
    let root = repo_root();
    // The example's file holds the right password: a wrong one from the
    // environment must be the one tried.
    let bad = "Not-the-service-password";
    let env = [
        ("REGISTRY_GATE_LDAP__URL", url.as_str()),
        ("REGISTRY_GATE_LDAP__BIND_PASSWORD", bad),
    ];
    let out = gate::cli(&["ldap-check", "--config", config], &env, "", &root).await;
    let text = combined_output(&out);
    assert!(text.contains("invalid credentials"), "{text}");
    assert!(!text.contains(bad), "{text}");
    // A file with a wrong password, the right one from the environment.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pw.txt"), "wrong\n").expect("write");
    let path = dir.path().join("gate.toml");
    let with_wrong_file = example_config().replace(
        "config/ldap_password.txt",
        &dir.path().join("pw.txt").display().to_string(),
    );
    assert_ne!(
        with_wrong_file,
        example_config(),
        "the example names its password file"
    );
    std::fs::write(&path, with_wrong_file).expect("write config");
    let env = [
        ("REGISTRY_GATE_LDAP__URL", url.as_str()),
        ("REGISTRY_GATE_LDAP__BIND_PASSWORD", PASSWORD),
    ];
    let path = path.to_str().expect("utf-8 path");
    let out = gate::cli(&["ldap-check", "--config", path], &env, "", &root).await;
    let text = combined_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("bound as service account {SERVICE_DN}")),
        "{text}"
    );
}

/// `REGISTRY_GATE_LDAP__BIND_PASSWORD` with passwords figment would read
/// as numbers: `123` and `0123` must reach LDAP exactly as written.
#[tokio::test]
async fn ldap_service_password_from_env_keeps_numeric_passwords() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let registry = Registry::start().await;
    let config = example_config_without_password_file();
    let url = slapd.url();
    let gate_with = |password: &'static str| {
        let (config, url, upstream) = (config.clone(), url.clone(), registry.url());
        async move {
            let env = [
                ("REGISTRY_GATE_LDAP__URL", url.as_str()),
                ("REGISTRY_GATE_LDAP__BIND_PASSWORD", password),
            ];
            Gate::start_with_config(&config, &upstream, &env).await
        }
    };

    slapd.set_password(SERVICE_DN, "123").await;
    let gate = gate_with("123").await;
    let (status, body) = auth(&gate, MOZART).await;
    assert_eq!(status, 200, "{body}\n{}", gate.log());

    slapd.set_password(SERVICE_DN, "0123").await;
    let gate = gate_with("0123").await;
    let (status, body) = auth(&gate, MOZART).await;
    assert_eq!(status, 200, "{body}\n{}", gate.log());
    // Had 0123 been read as the number 123, this would be the same login.
    let wrong = gate_with("123").await;
    let (status, body) = auth(&wrong, MOZART).await;
    assert_eq!(status, 503, "{body}");
    // The log is written off the request path: wait for the line.
    wrong.wait_log("invalid credentials", 1).await;
}

/// Issue 17, finding 6: the throttle keyed accounts by lower case only,
/// while LDAP finds `bach` for `" bach"`, `"bach "` and full-width
/// `ｂａｃｈ`: with `bach` locked, `" bach"` and the right password got a
/// token. Failures in any spelling count for the one account, and its
/// lockout holds for every spelling.
#[tokio::test]
async fn ldap_throttle_holds_for_every_spelling_of_an_account() {
    let stack = Stack::start().await;
    // The example allows 5 failures per account.
    for spelling in ["bach", " bach", "bach ", "ｂａｃｈ", "BACH"] {
        assert_refused(&stack.gate, (spelling, "wrong")).await;
    }
    for spelling in ["bach", " bach", "bach ", "ｂａｃｈ", " Bach"] {
        let (status, body) = auth(&stack.gate, (spelling, PASSWORD)).await;
        assert_eq!(status, 429, "{spelling:?}: {body}");
        assert!(body.get("token").is_none(), "{body}");
    }
    // Another account is not affected.
    let (status, body) = auth(&stack.gate, MOZART).await;
    assert_eq!(status, 200, "{body}");
}

/// Issue 17, finding 7: with LDAP configured, a wrong password cost a
/// bcrypt check for the static accounts (`admin`, `test`) and an LDAP
/// search alone for unknown names: static accounts could be told apart by
/// timing, while the docs said unknown accounts cost the same bcrypt. The
/// gate's CPU work per rejected login is now the same either way (measured
/// as CPU time, which a busy machine does not inflate as it does wall time).
#[tokio::test]
async fn ldap_rejections_cost_the_same_bcrypt_as_static_ones() {
    let env = [("REGISTRY_GATE_RATELIMIT__ENABLED", "false")];
    let stack = Stack::with_config_env(&example_config(), &env).await;
    let pid = stack.gate.pid();
    let rounds = 3;
    // A different wrong password each time: no login cache answers.
    let spent = |accounts: [&'static str; 2]| {
        let gate = &stack.gate;
        async move {
            let before = cpu_time(pid);
            for i in 0..rounds {
                for account in accounts {
                    assert_refused(gate, (account, &format!("wrong-{account}-{i}"))).await;
                }
            }
            cpu_time(pid) - before
        }
    };
    let known = spent(["admin", "test"]).await;
    let unknown = spent(["nobody", "bach"]).await;
    assert!(
        known >= Duration::from_millis(20),
        "bcrypt cost too little to compare: {known:?}"
    );
    assert!(
        unknown * 2 >= known,
        "unknown and LDAP accounts cost {unknown:?}, static ones {known:?}"
    );
}
