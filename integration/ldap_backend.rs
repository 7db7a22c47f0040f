//! The LDAP backend (`registry_gate::authn::ldap`) against a real slapd with
//! the example directory (see harness/slapd.rs).

use std::path::Path;
use std::time::{Duration, Instant};

use registry_gate::authn::cache::LoginCache;
use registry_gate::authn::ldap::{LdapAuthenticator, LdapConfig};
use registry_gate::authn::{AuthnError, Backend, Identity};
use registry_gate::secret::Secret;

use crate::harness::slapd::{PASSWORD, SERVICE_DN, Slapd, SlapdOptions};

const MOZART_DN: &str = "uid=mozart,ou=musicians,dc=example,dc=com";

fn pw(s: &str) -> Secret {
    Secret::new(s)
}

/// The documented example section, pointed at `url`, plus `extra` lines.
fn config(url: &str, extra: &str) -> LdapConfig {
    let text = format!(
        r#"
url = "{url}"
bind_dn = "uid=serviceaccount,ou=it,dc=example,dc=com"
bind_password_file = "config/ldap_password.txt"
base = "ou=musicians,dc=example,dc=com"
filter = "(&(uid=${{account}})(objectClass=person))"
timeout = "2s"
{extra}
"#
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn authenticator(cfg: &LdapConfig) -> LdapAuthenticator {
    LdapAuthenticator::new(
        cfg.resolve(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("resolve [ldap]"),
    )
}

const GROUP_SEARCH: &str = r#"group_search = { base = "ou=groups,dc=example,dc=com", filter = "(member=${dn})", label = "groups" }"#;

#[tokio::test]
async fn ldap_mozart_logs_in_with_groups_from_group_search() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let ldap = authenticator(&config(&slapd.url(), GROUP_SEARCH));
    let id = ldap
        .authenticate("mozart", &pw(PASSWORD))
        .await
        .unwrap()
        .expect("mozart logs in");
    assert_eq!(id.account, "mozart");
    assert_eq!(id.backend, Backend::Ldap);
    assert_eq!(id.labels.get("groups"), Some(&vec!["pushers".to_string()]));
    assert_eq!(slapd.bind_count(MOZART_DN), 1);

    // bach is in no group.
    let id = ldap
        .authenticate("bach", &pw(PASSWORD))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id.labels.get("groups"), None);

    // The service connection is re-used: one service bind for everything.
    ldap.authenticate("mozart", &pw(PASSWORD))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slapd.bind_count(SERVICE_DN), 1);
}

#[tokio::test]
async fn ldap_labels_from_attributes_reduce_dns() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    // memberOf is computed by slapd's dynlist overlay from the groups.
    let ldap = authenticator(&config(
        &slapd.url(),
        r#"labels = { groups = "memberOf", mail = "mail" }"#,
    ));
    let id = ldap
        .authenticate("mozart", &pw(PASSWORD))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id.labels.get("groups"), Some(&vec!["pushers".to_string()]));
    assert_eq!(
        id.labels.get("mail"),
        Some(&vec!["mozart@example.com".to_string()])
    );
    // Both sources into one label: values merged, not repeated.
    let ldap = authenticator(&config(
        &slapd.url(),
        &format!("labels = {{ groups = \"memberOf\" }}\n{GROUP_SEARCH}"),
    ));
    let id = ldap.lookup("mozart").await.unwrap().unwrap();
    assert_eq!(id.labels.get("groups"), Some(&vec!["pushers".to_string()]));
}

#[tokio::test]
async fn ldap_refusals_are_ok_none() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let ldap = authenticator(&config(&slapd.url(), GROUP_SEARCH));

    // A philosopher exists, but outside the base: not searched, not bound.
    assert_eq!(
        ldap.authenticate("kant", &pw(PASSWORD)).await.unwrap(),
        None
    );
    assert_eq!(slapd.bind_count("uid=kant"), 0);
    assert_eq!(
        ldap.authenticate("nobody", &pw(PASSWORD)).await.unwrap(),
        None
    );

    // Wrong password: LDAP says 49, we say Ok(None).
    assert_eq!(
        ldap.authenticate("mozart", &pw("wrong")).await.unwrap(),
        None
    );
    assert_eq!(slapd.bind_count(MOZART_DN), 1);
    assert_eq!(slapd.wait_for_bind_results(49, 1).await, 1);

    // Empty password: refused before LDAP is asked (it would be an
    // anonymous bind that "succeeds").
    let binds_before = slapd.bind_count("");
    assert_eq!(ldap.authenticate("mozart", &pw("")).await.unwrap(), None);
    assert_eq!(slapd.bind_count(""), binds_before);

    // Filter injection: the account is escaped, nothing matches, no bind.
    for account in [
        "*",
        "mozart)(uid=*",
        "*)(objectClass=*",
        "mo*",
        "mozart\\",
        "(uid=mozart)",
    ] {
        assert_eq!(
            ldap.authenticate(account, &pw(PASSWORD)).await.unwrap(),
            None,
            "{account}"
        );
    }
    // Control characters and overlong names never reach LDAP.
    assert_eq!(
        ldap.authenticate("mozart\0", &pw(PASSWORD)).await.unwrap(),
        None
    );
    assert_eq!(
        ldap.authenticate("mozart\n", &pw(PASSWORD)).await.unwrap(),
        None
    );
    assert_eq!(
        ldap.authenticate(&"m".repeat(300), &pw(PASSWORD))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        slapd.bind_count(MOZART_DN),
        1,
        "only the wrong-password bind"
    );
    // The server saw the injected characters as literal values.
    let log = slapd.log();
    assert!(
        log.contains(r#"filter="(&(uid=mozart\29\28uid=\2A)(objectClass=person))""#),
        "{log}"
    );
    assert!(!log.contains(&"m".repeat(300)), "overlong account searched");

    // The right password still works after all that.
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn ldap_ambiguous_account_is_refused() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    // A filter that matches every person whatever the account.
    let mut cfg = config(&slapd.url(), "");
    cfg.base = "dc=example,dc=com".into();
    cfg.filter = "(|(uid=${account})(objectClass=inetOrgPerson))".into();
    let ldap = authenticator(&cfg);
    assert_eq!(
        ldap.authenticate("mozart", &pw(PASSWORD)).await.unwrap(),
        None
    );
    assert_eq!(ldap.lookup("mozart").await.unwrap(), None);
    assert_eq!(slapd.bind_count(MOZART_DN), 0);
}

#[tokio::test]
async fn ldap_lookup_finds_accounts_without_password() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let ldap = authenticator(&config(&slapd.url(), GROUP_SEARCH));
    let id = ldap.lookup("mozart").await.unwrap().unwrap();
    assert_eq!(id.labels.get("groups"), Some(&vec!["pushers".to_string()]));
    assert_eq!(ldap.lookup("kant").await.unwrap(), None);
    assert_eq!(ldap.lookup("*").await.unwrap(), None);
    assert_eq!(slapd.bind_count(MOZART_DN), 0);
}

#[tokio::test]
async fn ldap_wrong_service_password_is_an_error_not_a_refusal() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let mut cfg = config(&slapd.url(), "");
    cfg.bind_password_file = None;
    cfg.bind_password = Some(pw("not-the-password"));
    let ldap = authenticator(&cfg);
    let e = ldap
        .authenticate("mozart", &pw(PASSWORD))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthnError::Backend(_)), "{e}");
    assert!(e.to_string().contains("service account"), "{e}");
}

#[tokio::test]
async fn ldap_failover_to_the_next_url() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(&slapd.url(), "");
    cfg.url = vec![format!("ldap://127.0.0.1:{dead}"), slapd.url()];
    let ldap = authenticator(&cfg);
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn ldap_starttls_and_ldaps_trust_the_ca_dir_only() {
    let slapd = Slapd::start(SlapdOptions::tls()).await;
    let ca_dir = slapd.ca_dir();
    let ca_line = format!("ca_dir = {:?}", ca_dir.display().to_string());

    // StartTLS with the CA: works; the bind went over TLS (ssf > 0).
    let ldap = authenticator(&config(
        &slapd.url(),
        &format!("start_tls = true\n{ca_line}"),
    ));
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        slapd.log().contains("STARTTLS"),
        "StartTLS was used:\n{}",
        slapd.log()
    );
    // LDAPS with the CA: works.
    let ldap = authenticator(&config(&slapd.ldaps_url(), &ca_line));
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );
    // ... and with `localhost` in the URL (the certificate names both).
    let ldaps_localhost = slapd.ldaps_url().replace("127.0.0.1", "localhost");
    let ldap = authenticator(&config(&ldaps_localhost, &ca_line));
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );

    // Without the CA the certificate is not trusted: an error, never Ok(None).
    let binds = slapd.bind_count(MOZART_DN);
    for cfg in [
        config(&slapd.url(), "start_tls = true"),
        config(&slapd.ldaps_url(), ""),
    ] {
        let ldap = authenticator(&cfg);
        let e = ldap
            .authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap_err();
        assert!(matches!(e, AuthnError::Unavailable(_)), "{e}");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    }
    // No password went over an untrusted connection.
    assert_eq!(slapd.bind_count(MOZART_DN), binds);

    // insecure_skip_verify accepts it (tests only; warned about).
    let ldap = authenticator(&config(&slapd.ldaps_url(), "insecure_skip_verify = true"));
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn ldap_outage_is_unavailable_and_recovers_with_cache_in_front() {
    let mut slapd = Slapd::start(SlapdOptions::default()).await;
    let cfg = config(&slapd.url(), GROUP_SEARCH);
    let resolved = cfg.resolve(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let cache: LoginCache = resolved.login_cache();
    let ldap = LdapAuthenticator::connect(resolved).await;
    let login = |account: &'static str, password: &'static str| {
        let (ldap, cache) = (&ldap, &cache);
        async move {
            let secret = pw(password);
            cache
                .authenticate(account, &secret, || ldap.authenticate(account, &secret))
                .await
        }
    };

    // Cache in front: the second login does not bind.
    let first: Identity = login("mozart", PASSWORD).await.unwrap().unwrap();
    assert_eq!(slapd.bind_count(MOZART_DN), 1);
    let second = login("mozart", PASSWORD).await.unwrap().unwrap();
    assert_eq!(second, first);
    assert_eq!(slapd.bind_count(MOZART_DN), 1, "served from the cache");
    assert_eq!(cache.stats().hits, 1);
    // A wrong password is not served from the cached success.
    assert_eq!(login("mozart", "wrong").await.unwrap(), None);
    assert_eq!(slapd.bind_count(MOZART_DN), 2);

    // slapd stops: uncached logins are Err(Unavailable), quickly.
    slapd.stop();
    let started = Instant::now();
    let e = login("bach", PASSWORD).await.unwrap_err();
    assert!(matches!(e, AuthnError::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(ldap.lookup("bach").await.is_err());
    // The cached success keeps working during the outage.
    assert_eq!(login("mozart", PASSWORD).await.unwrap().unwrap(), first);

    // slapd is back: the same authenticator reconnects.
    slapd.restart().await;
    let id = login("bach", PASSWORD).await.unwrap().unwrap();
    assert_eq!(id.account, "bach");
    assert!(
        ldap.authenticate("mozart", &pw(PASSWORD))
            .await
            .unwrap()
            .is_some()
    );
    // The error was not cached either.
    assert!(cache.stats().errors >= 1);
}

#[tokio::test]
async fn ldap_hung_server_times_out_as_unavailable() {
    // A server that accepts TCP connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut cfg = config(&format!("ldap://127.0.0.1:{port}"), "");
    cfg.timeout = Duration::from_millis(500);
    let ldap = authenticator(&cfg);
    let started = Instant::now();
    let e = ldap
        .authenticate("mozart", &pw(PASSWORD))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthnError::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}

#[tokio::test]
async fn ldap_check_reports() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let ldap = authenticator(&config(&slapd.url(), GROUP_SEARCH));
    let report = ldap.check(None, None).await.unwrap().text;
    assert!(
        report.contains("bound as service account uid=serviceaccount"),
        "{report}"
    );
    assert!(report.contains("2 entries under ou=musicians"), "{report}");
    assert!(report.contains(MOZART_DN), "{report}");

    let report = ldap
        .check(Some("mozart"), Some(&pw(PASSWORD)))
        .await
        .unwrap()
        .text;
    assert!(report.contains(MOZART_DN), "{report}");
    assert!(report.contains("pushers"), "{report}");
    assert!(report.contains("password accepted"), "{report}");
    let report = ldap
        .check(Some("mozart"), Some(&pw("wrong")))
        .await
        .unwrap()
        .text;
    assert!(report.contains("password rejected"), "{report}");
    let report = ldap.check(Some("kant"), None).await.unwrap().text;
    assert!(report.contains("cannot log in"), "{report}");
    assert!(!report.contains(PASSWORD), "{report}");
}

#[tokio::test]
async fn ldap_identity_carries_the_canonical_account_name() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let ldap = authenticator(&config(&slapd.url(), GROUP_SEARCH));

    // The directory matches uid case- and space-insensitively; the identity
    // is named by the entry's uid, not by what was typed.
    for typed in ["MOZART", "Mozart", " mozart ", "mozart"] {
        let id = ldap
            .authenticate(typed, &pw(PASSWORD))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{typed:?} logs in"));
        assert_eq!(id.account, "mozart", "typed {typed:?}");
        assert_eq!(id.labels.get("groups"), Some(&vec!["pushers".to_string()]));
    }
    assert_eq!(slapd.bind_count(MOZART_DN), 4);
    // The wrong password is still wrong in any spelling.
    assert_eq!(
        ldap.authenticate("MOZART", &pw("wrong")).await.unwrap(),
        None
    );
    // The uid was asked for in the account search.
    let log = slapd.log();
    assert!(
        log.lines()
            .any(|l| l.contains(" SRCH attr=") && l.contains("uid")),
        "{log}"
    );

    // Refresh tokens carry the canonical name: lookup accepts it, and
    // refuses another spelling rather than renaming the token's subject.
    let id = ldap.lookup("mozart").await.unwrap().unwrap();
    assert_eq!(id.account, "mozart");
    assert_eq!(ldap.lookup("MOZART").await.unwrap(), None);
    assert_eq!(ldap.lookup(" mozart ").await.unwrap(), None);

    // ldap-check names the canonical account.
    let report = ldap
        .check(Some("MOZART"), Some(&pw(PASSWORD)))
        .await
        .unwrap()
        .text;
    assert!(
        report.contains("account name (from uid, used by ACL rules): mozart"),
        "{report}"
    );
    assert!(
        report.contains("password accepted: would log in as mozart"),
        "{report}"
    );
}

#[tokio::test]
async fn ldap_account_attribute_selects_the_name() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    let ldap = authenticator(&config(&slapd.url(), r#"account_attribute = "mail""#));
    let id = ldap
        .authenticate("MOZART", &pw(PASSWORD))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id.account, "mozart@example.com");
    // The filter must find the entry by that name for refresh tokens.
    assert_eq!(ldap.lookup("mozart@example.com").await.unwrap(), None);
    let mut cfg = config(&slapd.url(), r#"account_attribute = "mail""#);
    cfg.filter = "(|(uid=${account})(mail=${account}))".into();
    let ldap = authenticator(&cfg);
    let id = ldap.lookup("mozart@example.com").await.unwrap().unwrap();
    assert_eq!(id.account, "mozart@example.com");
}

#[tokio::test]
async fn ldap_entry_without_the_account_attribute_is_refused() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    // employeeNumber is in inetOrgPerson but not set; noSuchAttribute is
    // not in the schema at all (slapd ignores it in the request).
    for attr in ["employeeNumber", "noSuchAttribute"] {
        let ldap = authenticator(&config(
            &slapd.url(),
            &format!("account_attribute = \"{attr}\"\n{GROUP_SEARCH}"),
        ));
        assert_eq!(
            ldap.authenticate("mozart", &pw(PASSWORD)).await.unwrap(),
            None,
            "{attr}"
        );
        assert_eq!(ldap.lookup("mozart").await.unwrap(), None, "{attr}");
        let report = ldap
            .check(Some("mozart"), Some(&pw(PASSWORD)))
            .await
            .unwrap()
            .text;
        assert!(
            report.contains(&format!(
                "account_attribute {attr}: the entry has no value of it: mozart cannot log in"
            )),
            "{report}"
        );
        assert!(!report.contains(PASSWORD), "{report}");
    }
    // Refused before the password was sent anywhere.
    assert_eq!(slapd.bind_count(MOZART_DN), 0);
}

#[tokio::test]
async fn ldap_entry_with_several_account_attribute_values_is_refused() {
    let slapd = Slapd::start(SlapdOptions::default()).await;
    // dc=example,dc=com has three objectClass values and one dc value.
    let mut cfg = config(&slapd.url(), r#"account_attribute = "objectClass""#);
    cfg.base = "dc=example,dc=com".into();
    cfg.filter = "(&(dc=${account})(objectClass=dcObject))".into();
    let ldap = authenticator(&cfg);
    assert_eq!(ldap.lookup("example").await.unwrap(), None);
    let report = ldap.check(Some("example"), None).await.unwrap().text;
    assert!(
        report.contains("the entry has 3 values of it, not one"),
        "{report}"
    );
    cfg.account_attribute = "dc".into();
    let ldap = authenticator(&cfg);
    let id = ldap.lookup("example").await.unwrap().unwrap();
    assert_eq!(id.account, "example");
}
