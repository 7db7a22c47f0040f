//! The audit trail: one JSON line per decision, so an operator can answer
//! "who pushed `team/app:1.4`, and when" with `grep` and `jq`.
//!
//! Events: `token_issued`, `login_failed`, `login_throttled`, `ui_login`,
//! `request_denied`, `tag_immutable_refused`, and
//! `upstream_write` for every push, delete, mount and tag change that reached
//! the upstream, with its outcome. Never a password or a token.
//! Depends on nothing of the HTTP layer; the handlers call [`Audit::record`].
//!
//! Whatever the sink (even `off`), the last [`RECENT_WRITES`] upstream writes
//! are also kept in memory for the web UI's activity page
//! ([`Audit::recent_writes`]); a reload hands them to the next `Audit`.

use std::collections::VecDeque;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::store::Store;
use crate::store::activity::ActivityRow;

/// Where events go: `output = "stdout"` (the default: logs go to stderr, so
/// stdout carries only audit lines), `"off"`, or a file path (appended to).
pub enum Sink {
    Off,
    Stdout,
    /// Where the command-line tools write it when the config says stdout
    /// (their stdout carries their own answer, e.g. a new secret).
    Stderr,
    File(Mutex<std::fs::File>),
}

/// One audited decision.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    TokenIssued {
        account: String,
        backend: &'static str,
        client: IpAddr,
        requested: Vec<String>,
        granted: Vec<String>,
        /// The robot account's or personal access token's id, when the
        /// login used one (directly or through a refresh token bound to it).
        #[serde(skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    /// A robot credential or personal access token was made.
    CredentialCreated {
        id: String,
        /// `robot` or `personal`.
        kind: &'static str,
        /// `robot+NAME`, or the personal token's owner.
        account: String,
        name: String,
        scopes: Vec<String>,
        expires_at: i64,
        /// Who made it (an account, or `cli` for the command line).
        by: String,
    },
    CredentialRevoked {
        id: String,
        account: String,
        by: String,
    },
    /// Every refresh token and UI session of `account` issued before now
    /// stopped working.
    LoggedOutEverywhere { account: String, by: String },
    LoginFailed {
        account: String,
        client: IpAddr,
        reason: &'static str,
    },
    /// A login refused unchecked: too many recent failures (see `ratelimit`).
    LoginThrottled {
        account: String,
        client: IpAddr,
        /// `address` or `account`: which counter is backing off.
        limited: &'static str,
        retry_after_ms: u64,
    },
    /// A login through OpenID Connect: a workload JWT at the realm
    /// (`kind` trust) or a person in the UI (`kind` provider).
    OidcLogin {
        kind: &'static str,
        /// The `[[oidc.trust]]` or `[[oidc.providers]]` entry's name.
        entry: String,
        account: String,
        client: IpAddr,
    },
    /// An OpenID login refused; `reason` as in the `oidc_logins` metric.
    OidcLoginFailed {
        kind: &'static str,
        entry: String,
        client: IpAddr,
        reason: &'static str,
    },
    /// A browser login to the web UI.
    UiLogin {
        account: String,
        backend: &'static str,
        client: IpAddr,
    },
    RequestDenied {
        account: String,
        client: IpAddr,
        method: String,
        repository: Option<String>,
        /// The scopes the token lacked (`repository:team/app:push`...).
        missing: Vec<String>,
        reason: &'static str,
    },
    /// A push or delete refused because it would change an immutable tag
    /// (`[[immutable]]`, `crate::immutable`); nothing reached the upstream.
    TagImmutableRefused {
        account: String,
        client: IpAddr,
        /// `overwrite` or `delete`.
        action: &'static str,
        repository: String,
        tag: String,
        /// The digest pushed, or deleted by digest.
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        /// What the tag points to upstream, for a refused overwrite.
        #[serde(skip_serializing_if = "Option::is_none")]
        existing: Option<String>,
        /// `immutable[0] (name = "team/*")`.
        rule: String,
        /// `registry` (`/v2/`) or `ui`.
        via: &'static str,
    },
    UpstreamWrite {
        account: String,
        client: IpAddr,
        /// `push_manifest`, `push_blob`, `mount_blob`, `delete_manifest`, `delete_blob`.
        action: &'static str,
        repository: String,
        /// The tag or digest from the path, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// `Docker-Content-Digest` of the upstream's answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        status: u16,
        outcome: &'static str,
    },
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What identifies a write in the store and in memory alike (times in ms).
fn write_key(w: &RecentWrite) -> (i64, String, &'static str, String, Option<String>, u16) {
    (
        millis(w.at),
        w.account.clone(),
        w.action,
        w.repository.clone(),
        w.reference.clone(),
        w.status,
    )
}

/// A stored write as the page shows it; rows with names this version does
/// not know are left out.
fn from_row(r: ActivityRow) -> Option<RecentWrite> {
    Some(RecentWrite {
        at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at_ms.max(0) as u64),
        account: r.account,
        action: ACTIONS.iter().find(|a| **a == r.action)?,
        repository: r.repository,
        reference: r.reference,
        digest: r.digest,
        status: u16::try_from(r.status).ok()?,
        outcome: OUTCOMES.iter().find(|o| **o == r.outcome)?,
    })
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    event: &'a Event,
}

/// How many upstream writes [`RecentWrites`] keeps.
pub const RECENT_WRITES: usize = 1000;

/// One upstream write as the activity page shows it: an
/// [`Event::UpstreamWrite`] with its time (the client address is left out:
/// the page shows writes to other users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentWrite {
    pub at: SystemTime,
    pub account: String,
    pub action: &'static str,
    pub repository: String,
    pub reference: Option<String>,
    pub digest: Option<String>,
    pub status: u16,
    pub outcome: &'static str,
}

/// The last [`RECENT_WRITES`] upstream writes, in memory (lost on restart,
/// kept across reloads).
#[derive(Default)]
pub struct RecentWrites(Mutex<VecDeque<RecentWrite>>);

impl RecentWrites {
    fn push(&self, w: RecentWrite) {
        // A panic elsewhere cannot leave a deque half-pushed: keep using it.
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= RECENT_WRITES {
            ring.pop_front();
        }
        ring.push_back(w);
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<RecentWrite> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// The audit trail of one gate.
pub struct Audit {
    sink: Sink,
    recent: Arc<RecentWrites>,
    /// Where upstream writes are also kept for the activity page, shared by
    /// every instance and kept across restarts (`[store]`).
    store: Option<Arc<Store>>,
}

/// The action and outcome names an upstream write may have, so that rows
/// read back from the store map to the same `&'static str`s.
const ACTIONS: &[&str] = &[
    "push_manifest",
    "push_blob",
    "mount_blob",
    "delete_manifest",
    "delete_blob",
];
const OUTCOMES: &[&str] = &["ok", "failed"];

/// The most writes the activity page reads from the store.
pub const STORED_WRITES: i64 = 10_000;

impl Audit {
    pub fn new(sink: Sink) -> Self {
        Audit {
            sink,
            recent: Arc::default(),
            store: None,
        }
    }

    /// The trail of a command-line tool: like the gate's, with stdout
    /// replaced by stderr.
    pub fn for_cli(output: &str) -> std::io::Result<Audit> {
        match output {
            "stdout" => Ok(Audit::new(Sink::Stderr)),
            other => Audit::open(other),
        }
    }

    /// Opens the sink named by the `[audit] output` setting.
    pub fn open(output: &str) -> std::io::Result<Audit> {
        Audit::open_with(output, Arc::default())
    }

    /// Like [`Audit::open`], continuing `recent` (the previous app's, on a reload).
    pub fn open_with(output: &str, recent: Arc<RecentWrites>) -> std::io::Result<Audit> {
        let sink = match output {
            "off" => Sink::Off,
            "stdout" => Sink::Stdout,
            path => Sink::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(path))?,
            )),
        };
        Ok(Audit {
            sink,
            recent,
            store: None,
        })
    }

    /// The kept upstream writes, to hand to the next `Audit` on a reload.
    pub fn recent(&self) -> Arc<RecentWrites> {
        self.recent.clone()
    }

    /// The last [`RECENT_WRITES`] upstream writes, newest first.
    pub fn recent_writes(&self) -> Vec<RecentWrite> {
        self.recent.newest_first()
    }

    /// Keeps upstream writes in `store` too (the activity page's history).
    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Upstream writes for the activity page, newest first: from the store
    /// (every instance's, the last `retention`), or, when it cannot answer,
    /// this process's own recent ones. The `bool` says which.
    pub async fn activity(&self, retention: std::time::Duration) -> (Vec<RecentWrite>, bool) {
        let Some(store) = &self.store else {
            return (self.recent_writes(), false);
        };
        let now_ms = millis(SystemTime::now());
        let since = now_ms.saturating_sub(retention.as_millis() as i64);
        match store.recent_activity(since, STORED_WRITES).await {
            Ok(rows) => {
                // This instance's own writes come from memory (at once, even
                // those whose row is still on its way to the store, and in
                // their exact order); the other instances' from the store.
                let mut all: Vec<RecentWrite> = self
                    .recent_writes()
                    .into_iter()
                    .filter(|w| millis(w.at) >= since)
                    .collect();
                let mine: std::collections::HashSet<_> = all.iter().map(write_key).collect();
                all.extend(
                    rows.into_iter()
                        .filter_map(from_row)
                        .filter(|w| !mine.contains(&write_key(w))),
                );
                // Stable: writes of the same millisecond keep memory's order.
                all.sort_by_key(|w| std::cmp::Reverse(millis(w.at)));
                (all, true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "activity: store unavailable, showing this instance's recent writes");
                (self.recent_writes(), false)
            }
        }
    }

    /// Writes one event as one line. A write failure is logged, never fatal:
    /// the gate keeps serving even when the audit disk is full.
    pub fn record(&self, event: Event) {
        let now = SystemTime::now();
        if let Event::UpstreamWrite {
            account,
            action,
            repository,
            reference,
            digest,
            status,
            outcome,
            ..
        } = &event
        {
            self.recent.push(RecentWrite {
                at: now,
                account: account.clone(),
                action,
                repository: repository.clone(),
                reference: reference.clone(),
                digest: digest.clone(),
                status: *status,
                outcome,
            });
            // Off the request's path: a registry request never waits on
            // the database.
            if let Some(store) = &self.store {
                let row = ActivityRow {
                    at_ms: millis(now),
                    account: account.clone(),
                    action: (*action).to_owned(),
                    repository: repository.clone(),
                    reference: reference.clone(),
                    digest: digest.clone(),
                    status: i32::from(*status),
                    outcome: (*outcome).to_owned(),
                };
                let s = store.clone();
                store.spawn_write(
                    "an activity row",
                    async move { s.record_activity(&row).await },
                );
            }
        }
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let line = Line {
            ts: humantime::format_rfc3339_millis(now).to_string(),
            event: &event,
        };
        let mut text = match serde_json::to_string(&line) {
            Ok(t) => t,
            Err(e) => return tracing::error!(error = %e, "audit event not serializable"),
        };
        text.push('\n');
        let written = match &self.sink {
            Sink::Off => Ok(()),
            Sink::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            // One write_all of a whole line under the lock: lines never interleave.
            Sink::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(text.as_bytes()),
                Err(_) => Err(std::io::Error::other("audit file lock poisoned")),
            },
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write the audit trail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(path.to_str().unwrap()).unwrap();
        audit.record(Event::LoginFailed {
            account: "mallory".into(),
            client: "10.0.0.1".parse().unwrap(),
            reason: "bad_credentials",
        });
        audit.record(Event::UpstreamWrite {
            account: "admin".into(),
            client: "10.0.0.2".parse().unwrap(),
            action: "push_manifest",
            repository: "team/app".into(),
            reference: Some("1.4".into()),
            digest: Some("sha256:abc".into()),
            status: 201,
            outcome: "ok",
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "login_failed");
        assert_eq!(lines[0]["account"], "mallory");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["event"], "upstream_write");
        assert_eq!(lines[1]["reference"], "1.4");
        assert_eq!(lines[1]["status"], 201);
    }

    fn write(repository: &str, reference: &str) -> Event {
        Event::UpstreamWrite {
            account: "admin".into(),
            client: "10.0.0.2".parse().unwrap(),
            action: "push_manifest",
            repository: repository.into(),
            reference: Some(reference.into()),
            digest: None,
            status: 201,
            outcome: "ok",
        }
    }

    #[test]
    fn recent_writes_are_kept_even_when_off_newest_first_and_bounded() {
        let audit = Audit::open("off").unwrap();
        audit.record(Event::LoginFailed {
            account: "a".into(),
            client: "::1".parse().unwrap(),
            reason: "bad_credentials",
        });
        assert!(audit.recent_writes().is_empty(), "only upstream writes");
        let before = SystemTime::now();
        audit.record(write("team/app", "1"));
        audit.record(write("team/app", "2"));
        let recent = audit.recent_writes();
        let refs: Vec<_> = recent.iter().map(|w| w.reference.as_deref()).collect();
        assert_eq!(refs, [Some("2"), Some("1")]);
        assert_eq!(recent[0].account, "admin");
        assert_eq!(recent[0].action, "push_manifest");
        assert_eq!((recent[0].status, recent[0].outcome), (201, "ok"));
        assert!(recent[1].at >= before && recent[0].at >= recent[1].at);

        for i in 0..RECENT_WRITES + 5 {
            audit.record(write("team/app", &format!("n{i}")));
        }
        let recent = audit.recent_writes();
        assert_eq!(recent.len(), RECENT_WRITES);
        assert_eq!(
            recent[0].reference.as_deref(),
            Some(format!("n{}", RECENT_WRITES + 4).as_str())
        );
        assert_eq!(recent[RECENT_WRITES - 1].reference.as_deref(), Some("n5"));

        // The next Audit (a reload) goes on with the same writes.
        let next = Audit::open_with("off", audit.recent()).unwrap();
        next.record(write("team/app", "after"));
        assert_eq!(next.recent_writes().len(), RECENT_WRITES);
        assert_eq!(next.recent_writes()[0].reference.as_deref(), Some("after"));
    }
}
