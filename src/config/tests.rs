//! Loading and resolving, with files made inside the tests.

use std::io::Write;

use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

const HASH: &str = "$2y$10$BbjHSBR07iNZhnzmPGLb1OV/Mp8kjkcepRhg.xD01t06FYg6rOVYa";

#[test]
fn defaults_apply_when_keys_are_absent() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "gate.toml", "");
    let cfg = load(&path, true).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:5000");
    assert_eq!(cfg.upstream.url, "http://127.0.0.1:5001");
    assert_eq!(cfg.token.service, "Docker registry");
    assert_eq!(cfg.token.lifetime.as_secs(), 300);
    assert_eq!(cfg.server.worker_threads, 0);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(cfg.server.workers(), cpus);
}

#[test]
fn worker_threads_are_taken_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "gate.toml", "[server]\nworker_threads = 3");
    assert_eq!(load(&path, true).unwrap().server.workers(), 3);
}

#[test]
fn the_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
    let cfg = load(&path, true).unwrap();
    assert!(cfg.users.contains_key("admin") && cfg.users.contains_key("test"));
}

#[test]
fn local_file_overrides_the_main_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "gate.toml",
        "[upstream]\nurl = \"http://10.0.0.1:5000\"\n",
    );
    write(
        &dir,
        "gate.local.toml",
        "[upstream]\nurl = \"http://127.0.0.1:6000\"\n",
    );
    assert_eq!(
        load(&path, true).unwrap().upstream.url,
        "http://127.0.0.1:6000"
    );
}

#[test]
fn errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[server]\nlistn = \"0.0.0.0:1\"", "server.listn"),
        ("[upstream]\nurl = \"ftp://x\"", "upstream.url"),
        ("[upstream]\nurl = \"http://x:1/prefix\"", "upstream.url"),
        (
            "[server]\npublic_url = \"gate.example.com\"",
            "server.public_url",
        ),
        ("[token]\nlifetime = \"5 parsecs\"", "token.lifetime"),
        ("[token]\nlifetime = \"2s\"", "token.lifetime"),
        ("[token]\nservice = \"\"", "token.service"),
        (
            "[users.bob]\npassword = \"plaintext\"",
            "users.bob.password",
        ),
        ("[users.\"b b\"]\npassword = \"HASH\"", "users.b b"),
        ("[users.bob]\npasword = \"x\"", "users.bob.pasword"),
        (
            "[[acl]]\nmatch = { acount = \"x\" }\nactions = []",
            "acl.0.match.acount",
        ),
        ("bogus = 1", "bogus"),
        (
            "[limits]\nheader_read_timeout = \"0s\"",
            "limits.header_read_timeout",
        ),
        ("[limits]\nidle_timeout = \"0s\"", "limits.idle_timeout"),
        (
            "[limits]\nmax_header_bytes = 100",
            "limits.max_header_bytes",
        ),
        ("[limits]\nmax_headers = 0", "limits.max_headers"),
        (
            "[limits]\nmax_manifest_bytes = 10",
            "limits.max_manifest_bytes",
        ),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        (
            "[limits]\nbody_stall_timeout = \"0s\"",
            "limits.body_stall_timeout",
        ),
        ("[limits]\nheader_timeout = \"1s\"", "limits.header_timeout"),
        ("[ratelimit]\nbackoff = \"0s\"", "ratelimit.backoff"),
        (
            "[ratelimit]\nbackoff = \"10s\"\nmax_backoff = \"1s\"",
            "ratelimit.max_backoff",
        ),
        ("[ratelimit]\ncapacity = 0", "ratelimit.capacity"),
        ("[ratelimit]\nfailures = 3", "ratelimit.failures"),
        (
            "[upstream]\nconnect_timeout = \"0s\"",
            "upstream.connect_timeout",
        ),
        (
            "[upstream]\nresponse_header_timeout = \"soon\"",
            "upstream.response_header_timeout",
        ),
        (
            "[server.tls]\ncert = \"c\"\nkey = \"k\"\nreload_interval = \"1ms\"",
            "server.tls.reload_interval",
        ),
        ("[server]\nworker_threads = 1025", "server.worker_threads"),
        ("[server]\nworker_threads = -1", "server.worker_threads"),
    ];
    for (text, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "gate.toml", &text.replace("HASH", HASH));
        let errs = load(&path, true).expect_err(text);
        assert!(
            errs.0.iter().any(|e| e.key == *key),
            "{text}: want key {key}, got {errs}"
        );
    }
}

#[test]
fn a_named_file_must_exist() {
    let errs = load(Path::new("/nonexistent/gate.toml"), true).unwrap_err();
    assert_eq!(errs.0[0].key, "config");
}

#[test]
fn recognises_bcrypt_hashes() {
    assert_eq!(resolve::bcrypt_cost(HASH), Some(10));
    assert_eq!(resolve::bcrypt_cost("$2y$10$short"), None);
    assert_eq!(resolve::bcrypt_cost("badmin"), None);
    assert_eq!(resolve::bcrypt_cost(&HASH.replace("$10$", "$99$")), None);
}

#[test]
fn hardening_defaults_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "gate.toml", "");
    let cfg = load(&path, true).unwrap();
    let l = &cfg.limits;
    assert_eq!(l.max_manifest_bytes, 4 * 1024 * 1024);
    assert_eq!(l.header_read_timeout.as_secs(), 20);
    assert_eq!(l.max_connections, 1024);
    assert!(cfg.ratelimit.enabled);
    assert_eq!(cfg.ratelimit.failures_per_account, 5);
    assert_eq!(cfg.upstream.connect_timeout.as_secs(), 5);
    assert!(cfg.token.previous_keys.is_empty());

    let path = write(
        &dir,
        "other.toml",
        "[limits]\nheader_read_timeout = \"2s\"\nmax_connections = 10\n\
         [ratelimit]\nenabled = false\n\
         [token]\nprevious_keys = [\"old.pem\"]\n\
         [server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    );
    let cfg = load(&path, true).unwrap();
    assert_eq!(cfg.limits.header_read_timeout.as_secs(), 2);
    assert_eq!(cfg.limits.max_connections, 10);
    // Keys not given keep their defaults.
    assert_eq!(cfg.limits.idle_timeout.as_secs(), 90);
    assert!(!cfg.ratelimit.enabled);
    assert_eq!(cfg.token.previous_keys, vec![PathBuf::from("old.pem")]);
    assert_eq!(cfg.server.tls.unwrap().reload_interval.as_secs(), 10);
}

/// config/reference.toml, uncommented (`#key = value` and `#[table]` lines),
/// is a valid configuration, names every key the built-in defaults have,
/// and shows exactly those defaults.
#[test]
fn the_reference_documents_every_key_and_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/reference.toml")).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| l.starts_with('[') || l.starts_with(|c: char| c.is_ascii_lowercase()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "reference.toml", &settings.join("\n"));
    // Relative paths in it (config/ldap_password.txt) are the repository's.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(cwd, root, "tests run from the crate root");
    // Presence is judged on the text itself (loading fills in defaults, so
    // the loaded config has every key whether documented or not); values on
    // the loaded config, which normalizes them ("300s" and "5m").
    let written: toml::Value = toml::from_str(&settings.join("\n")).unwrap();
    let documented = load(&path, true).unwrap_or_else(|e| panic!("{e}"));
    let documented = toml::Value::try_from(&documented.raw).unwrap();
    let defaults = toml::Value::try_from(RawConfig::default()).unwrap();
    fn compare(
        path: &str,
        default: &toml::Value,
        written: Option<&toml::Value>,
        documented: Option<&toml::Value>,
    ) {
        let (Some(written), Some(documented)) = (written, documented) else {
            panic!("config/reference.toml does not document {path}");
        };
        match default {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    compare(&key, v, written.get(k), documented.get(k));
                }
            }
            // Example users and rules are documented; the defaults have none.
            toml::Value::Array(a) if a.is_empty() => {}
            v => assert_eq!(v, documented, "config/reference.toml: default of {path}"),
        }
    }
    compare("", &defaults, Some(&written), Some(&documented));
    // The optional tables are documented too.
    for key in [
        "server.public_url",
        "server.tls",
        "token.key",
        "token.previous_keys",
        "ldap",
        "users",
        "acl",
        "immutable",
    ] {
        let mut v = &documented;
        for part in key.split('.') {
            v = v
                .get(part)
                .unwrap_or_else(|| panic!("{key} not documented"));
        }
    }
}

/// Later layers override earlier ones for a secret too, whichever way each
/// gives it (inline or as a file); one layer giving both stays an error.
/// (The environment layer: `integration/ldap.rs`, which runs the binary, as
/// a unit test must not set process-wide variables.)
#[test]
fn a_later_layer_replaces_a_secret_given_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    let pw_file = write(&dir, "pw.txt", "from-the-file\n");
    let ldap = |secret: &str| {
        format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbase = \"dc=x\"\nbind_dn = \"cn=svc\"\n{secret}\n"
        )
    };
    let file_line = format!("bind_password_file = {:?}", pw_file.display().to_string());
    // (main file, local file, the password, or the key of the error)
    let cases: Vec<(String, Option<String>, Result<&str, &str>)> = vec![
        (
            ldap(&file_line),
            Some("[ldap]\nbind_password = \"local\"\n".into()),
            Ok("local"),
        ),
        (
            ldap("bind_password = \"inline\""),
            Some(format!("[ldap]\n{file_line}\n")),
            Ok("from-the-file"),
        ),
        (ldap(&file_line), None, Ok("from-the-file")),
        (ldap("bind_password = \"inline\""), None, Ok("inline")),
        (
            ldap(&format!("{file_line}\nbind_password = \"inline\"")),
            None,
            Err("ldap.bind_password"),
        ),
        (
            ldap(&file_line),
            Some(format!("[ldap]\n{file_line}\nbind_password = \"local\"\n")),
            Err("ldap.bind_password"),
        ),
    ];
    for (i, (main, local, want)) in cases.into_iter().enumerate() {
        let sub = dir.path().join(format!("case{i}"));
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("gate.toml");
        std::fs::write(&path, &main).unwrap();
        if let Some(local) = &local {
            std::fs::write(sub.join("gate.local.toml"), local).unwrap();
        }
        let got = load(&path, true)
            .map(|c| {
                let ldap = c.ldap.expect("[ldap]");
                let (_, pw) = ldap.service_account.expect("service account");
                pw.expose().to_owned()
            })
            .map_err(|e| e.0[0].key.clone());
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            want,
            "case {i}: {main} / {local:?}"
        );
    }
}
