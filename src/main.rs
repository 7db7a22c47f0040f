//! The `registry-gate` command: serve (the default), hash-password, gen-key,
//! check-config, ldap-check. Exit codes: 0 success, 1 runtime failure, 2 bad
//! config or usage, 3 `ldap-check ACCOUNT`: that account would not log in.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use registry_gate::app::App;
use registry_gate::config::{self, Config};
use registry_gate::logformat::LineFormat;
use registry_gate::reload::Live;
use registry_gate::{server, token, tokens};

#[derive(Parser)]
#[command(
    name = "registry-gate",
    version,
    about = "Authentication and authorization in front of an open Docker/OCI registry"
)]
struct Cli {
    /// The config file (also: REGISTRY_GATE_CONFIG); default config/registry-gate.toml.
    #[arg(long, global = true, env = "REGISTRY_GATE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json (default: `[log] format`, else text).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gate (the default).
    Serve,
    /// Read a password from stdin (or a prompt) and print its bcrypt hash.
    HashPassword {
        /// bcrypt cost.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Write a new ES256 (P-256) signing key as PKCS#8 PEM.
    GenKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Load and validate the config; print it with secrets redacted.
    CheckConfig,
    /// Check the [ldap] settings: bind with the service account, show what the
    /// search base and filter find and, with an ACCOUNT, whether it would log
    /// in (asking for its password on stdin when --password-stdin is given;
    /// exit status 3 when it would not).
    LdapCheck {
        account: Option<String>,
        /// Read the account's password from stdin and try a real login.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Check an [[oidc.providers]] or [[oidc.trust]] entry: fetch its
    /// discovery document and keys and, with --token-stdin, verify a token
    /// and show its claims, the mapped account and labels, and which
    /// `require` failed (exit status 3 when it would not log in).
    OidcCheck {
        name: String,
        /// Read a JWT from stdin and check it against the entry.
        #[arg(long)]
        token_stdin: bool,
    },
    /// Apply the store's schema migrations (the gate also does at start).
    Migrate,
    /// Robot accounts and personal access tokens (docs/tokens.md).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// End every refresh token and UI session of ACCOUNT issued until now.
    LogoutAll { account: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a robot credential (--robot) or a personal access token
    /// (--owner, --name); prints the secret alone on the last line of stdout.
    Create {
        /// The robot's name: its account is robot+NAME.
        #[arg(long, conflicts_with = "owner")]
        robot: Option<String>,
        /// The personal token's owner (a static or LDAP account).
        #[arg(long, requires = "name")]
        owner: Option<String>,
        /// The personal token's name.
        #[arg(long)]
        name: Option<String>,
        /// repository:PATTERN:ACTIONS, registry:catalog:*, registry:credentials:*.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// KEY=VALUE, for ACL rules and placeholders (robots only).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Lifetime, e.g. 30d (default and maximum: [tokens]).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List credentials (all, or one owner's).
    List {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential by id.
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, explicit) = path_of(&cli);
    // `[log] format` is in the config, so peek at it before logging starts;
    // a config that does not load is reported later, as plain lines.
    let log_format = cli.log_format.clone().or_else(|| {
        config::load_raw(&path, explicit)
            .ok()
            .map(|raw| raw.log.format)
    });
    // Kept to the end of main: dropping it writes out what is still queued.
    let _log_guard = init_logging(log_format.as_deref().unwrap_or("text"));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(path, explicit),
        Command::HashPassword { cost } => hash_password(cost),
        Command::GenKey { out } => gen_key(&out),
        Command::CheckConfig => check_config(path, explicit),
        Command::LdapCheck {
            account,
            password_stdin,
        } => ldap_check(path, explicit, account, password_stdin),
        Command::OidcCheck { name, token_stdin } => oidc_check(path, explicit, &name, token_stdin),
        Command::Migrate => with_store(path, explicit, |app| Box::pin(tokens::cli::migrate(app))),
        Command::Token { command } => match command {
            TokenCommand::Create {
                robot,
                owner,
                name,
                scopes,
                labels,
                expires,
                description,
            } => {
                let args = tokens::cli::CreateArgs {
                    robot,
                    owner,
                    name,
                    scopes,
                    labels,
                    expires,
                    description,
                };
                with_store(path, explicit, move |app| {
                    Box::pin(tokens::cli::create(app, args))
                })
            }
            TokenCommand::List { owner, json } => with_store(path, explicit, move |app| {
                Box::pin(tokens::cli::list(app, owner, json))
            }),
            TokenCommand::Revoke { id } => with_store(path, explicit, move |app| {
                Box::pin(async move { tokens::cli::revoke(app, &id).await })
            }),
        },
        Command::LogoutAll { account } => with_store(path, explicit, move |app| {
            Box::pin(async move { tokens::cli::logout_all(app, &account).await })
        }),
    }
}

/// Runs a store command with the app the config describes (no port bound).
fn with_store(
    path: PathBuf,
    explicit: bool,
    f: impl for<'a> FnOnce(
        &'a App,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ExitCode> + 'a>>,
) -> ExitCode {
    let config = match load(path, explicit) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // These commands sign nothing: an ephemeral key keeps the gate's
    // warning about one out of their output.
    let carried = match token::SigningKey::ephemeral() {
        Ok(key) => registry_gate::app::Carried {
            ephemeral_key: Some(Arc::new(key)),
            ..Default::default()
        },
        Err(_) => Default::default(),
    };
    runtime.block_on(async {
        let app = match App::build_with(config, carried) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("registry-gate: {e}");
                return ExitCode::from(2);
            }
        };
        f(&app).await
    })
}

fn path_of(cli: &Cli) -> (PathBuf, bool) {
    match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    }
}

/// The console log, written off the request path: tracing-appender's
/// non-blocking writer hands lines to a thread that writes stderr (which is
/// unbuffered: one write(2) per line otherwise). Not lossy: when its queue is
/// full, logging waits rather than drop lines. The guard, held by `main`,
/// flushes what is queued at exit.
fn init_logging(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGISTRY_GATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    if format == "json" {
        builder.json().init();
    } else {
        builder.event_format(LineFormat::default()).init();
    }
    guard
}

fn load(path: PathBuf, explicit: bool) -> Result<Config, ExitCode> {
    config::load(&path, explicit).map_err(|errors| {
        eprintln!("registry-gate: invalid configuration ({}):", path.display());
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(2)
    })
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("registry-gate: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

fn serve(path: PathBuf, explicit: bool) -> ExitCode {
    let config = match load(path.clone(), explicit) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // One worker: tokio's single-threaded scheduler, measured cheaper per
    // request than the work-stealing one with one worker (docs/benchmarks.md).
    let builder = match config.server.workers() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = match runtime(builder) {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(run(config, path, explicit))
}

async fn run(config: Config, path: PathBuf, explicit: bool) -> ExitCode {
    let tls = match &config.server.tls {
        Some(t) => match registry_gate::tls::acceptor(t) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("registry-gate: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let app = match App::build(config) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("registry-gate: {e}");
            return ExitCode::from(2);
        }
    };
    for account in registry_gate::authn::static_users::with_example_passwords(&app.config.users) {
        tracing::warn!(
            account,
            "static user {account} still has the example configuration's password (README): \
             anyone can log in as {account}. Fix: `registry-gate hash-password`, and put the \
             hash in [users.{account}] password (or remove the user)"
        );
    }
    if app.config.raw.store.url.0 == registry_gate::store::config::DEFAULT_URL {
        let here = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
        tracing::info!(
            "store: no [store] url set, so robot accounts, personal access tokens and shared \
             state live in the default SQLite file data/registry-gate.db under {here}. Fine for \
             one instance; for several, or another place, set [store] url (sqlite://PATH or \
             postgres://...; docs/tokens.md)"
        );
    }
    let listen = app.config.server.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("registry-gate: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let realm = app.config.server.public_url.as_ref().map_or_else(
        || format!("{scheme}://<Host of each request>/auth"),
        |u| format!("{u}/auth"),
    );
    tracing::info!(
        listen = %format!("{scheme}://{addr}"),
        upstream = %app.config.upstream.url,
        realm = %realm,
        service = %app.config.token.service,
        signing_key = %format!("{} (kid {})", app.key_source, app.key_id),
        workers = app.config.server.workers(),
        store = %app.store.shown(),
        "registry-gate listening"
    );
    // Migrations run beside serving: a store that is down must not stop
    // the gate (static and LDAP logins do not need it); the first store
    // query after it comes back applies them.
    let migrating = app.clone();
    tokio::spawn(async move {
        match migrating.store.migrate().await {
            Ok(()) => tracing::info!(store = %migrating.store.shown(), "store ready"),
            Err(e) => tracing::error!(
                store = %migrating.store.shown(),
                error = %e,
                "store unavailable: robot and personal-token logins answer 503 until it is back"
            ),
        }
    });
    let live = Arc::new(Live::new(app, path, explicit));
    tokio::spawn(prune_store(live.clone()));
    if let Some(addr) = &live.current().config.raw.metrics.listen {
        match tokio::net::TcpListener::bind(addr.as_str()).await {
            Ok(l) => {
                tracing::info!(listen = %addr, "metrics at /metrics");
                tokio::spawn(server::serve_metrics(l, live.clone()));
            }
            Err(e) => {
                eprintln!("registry-gate: cannot listen on {addr} (metrics.listen): {e}");
                return ExitCode::from(1);
            }
        }
    }
    tokio::spawn(reload_on_sighup(live.clone()));
    server::serve(listener, live.clone(), tls, shutdown_signal()).await;
    // Activity rows and logouts still on their way to the store.
    live.current()
        .store
        .settle(std::time::Duration::from_secs(5))
        .await;
    ExitCode::SUCCESS
}

/// Once an hour, drops activity older than `[store] activity_retention`,
/// ended UI sessions past their expiry, and login-throttle rows nobody has
/// failed on for `forget_after` past the longest back-off (and expired
/// trusted addresses). Every instance may do it: deleting
/// what another already deleted is harmless.
async fn prune_store(live: Arc<Live>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        let app = live.current();
        let retention = app.config.raw.store.activity_retention;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before_ms = now.saturating_sub(retention).as_millis() as i64;
        let r = &app.config.ratelimit;
        let quiet_ms = now
            .saturating_sub(r.forget_after.saturating_add(r.max_backoff))
            .as_millis() as i64;
        let pruned = async {
            let n = app.store.prune(before_ms, now.as_secs() as i64).await?;
            Ok::<_, registry_gate::store::StoreError>(n + app.store.throttle_prune(quiet_ms).await?)
        };
        match pruned.await {
            Ok(n) => tracing::debug!(rows = n, "store pruned"),
            Err(e) => tracing::warn!(error = %e, "store: pruning old rows failed"),
        }
    }
}

/// SIGHUP re-reads the configuration; a bad one is refused and logged, and
/// the old one stays in force.
async fn reload_on_sighup(live: Arc<Live>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP: live reload is off");
            return;
        };
        while hup.recv().await.is_some() {
            let l = live.clone();
            // Reading files and hashing keys: off the async workers.
            match tokio::task::spawn_blocking(move || l.reload()).await {
                Ok(Ok(r)) => {
                    let app = live.current();
                    tracing::info!(
                        signing_key = %format!("{} (kid {})", app.key_source, app.key_id),
                        "configuration reloaded: new requests use it"
                    );
                    for key in r.need_restart {
                        tracing::warn!(key, "changed, but takes effect only after a restart");
                    }
                }
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "configuration reload refused; the previous configuration stays in force"
                ),
                Err(e) => tracing::error!(error = %e, "configuration reload failed"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = live;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}

fn hash_password(cost: u32) -> ExitCode {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        // A person at a terminal: a hidden prompt, asked twice (a typo
        // would otherwise lock the account out unnoticed).
        match prompt_twice() {
            Ok(p) => p,
            Err(code) => return code,
        }
    } else {
        let mut line = String::new();
        if let Err(e) = stdin.lock().read_line(&mut line) {
            eprintln!("registry-gate: cannot read the password: {e}");
            return ExitCode::from(1);
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("registry-gate: empty password");
        return ExitCode::from(2);
    }
    match bcrypt::hash(&password, cost) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registry-gate: {e}");
            ExitCode::from(2)
        }
    }
}

/// The password from the terminal, typed twice without echo.
fn prompt_twice() -> Result<String, ExitCode> {
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            eprintln!("registry-gate: cannot read the password: {e}");
            ExitCode::from(1)
        })
    };
    let first = read("Password: ")?;
    let again = read("Password again: ")?;
    if first != again {
        eprintln!("registry-gate: the passwords differ; nothing hashed");
        return Err(ExitCode::from(2));
    }
    Ok(first)
}

fn gen_key(out: &std::path::Path) -> ExitCode {
    let pem = match token::keys::generate_es256_pem() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("registry-gate: {e}");
            return ExitCode::from(1);
        }
    };
    if out.exists() {
        eprintln!(
            "registry-gate: {} exists; not overwriting a key",
            out.display()
        );
        return ExitCode::from(2);
    }
    let written = {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(out).and_then(|mut f| f.write_all(pem.as_bytes()))
    };
    match written {
        Ok(()) => {
            eprintln!("wrote an ES256 signing key to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registry-gate: cannot write {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}

fn check_config(path: PathBuf, explicit: bool) -> ExitCode {
    let config = match load(path.clone(), explicit) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = App::build(config.clone()) {
        eprintln!("registry-gate: {e}");
        return ExitCode::from(2);
    }
    match toml::to_string_pretty(&config.raw) {
        Ok(text) => {
            println!(
                "# effective configuration of {} (secrets redacted)\n{text}",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registry-gate: cannot print the config: {e}");
            ExitCode::from(1)
        }
    }
}

fn oidc_check(path: PathBuf, explicit: bool, name: &str, token_stdin: bool) -> ExitCode {
    use registry_gate::authn::oidc::{self, check};
    let config = match load(path, explicit) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let token = if token_stdin {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text) {
            eprintln!("registry-gate: cannot read the token: {e}");
            return ExitCode::from(1);
        }
        Some(text.trim().to_owned())
    } else {
        None
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let oidc = match oidc::Oidc::new(config.oidc, std::sync::Arc::new(|_: &str, _| {})) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("registry-gate: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(check::check(&oidc, name, token.as_deref())) {
        Ok(report) => {
            print!("{}", report.text);
            if report.refused {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ check::CheckError::Unknown(_)) => {
            eprintln!("registry-gate: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("registry-gate: {e}");
            ExitCode::from(1)
        }
    }
}

fn ldap_check(
    path: PathBuf,
    explicit: bool,
    account: Option<String>,
    password_stdin: bool,
) -> ExitCode {
    let config = match load(path, explicit) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(ldap) = config.ldap else {
        eprintln!("registry-gate: no [ldap] section in the configuration");
        return ExitCode::from(2);
    };
    let password = if password_stdin {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("registry-gate: cannot read the password: {e}");
            return ExitCode::from(1);
        }
        Some(registry_gate::secret::Secret::new(
            line.trim_end_matches(['\r', '\n']),
        ))
    } else {
        None
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let authenticator = registry_gate::authn::LdapAuthenticator::new(ldap);
    match runtime.block_on(authenticator.check(account.as_deref(), password.as_ref())) {
        Ok(report) => {
            print!("{}", report.text);
            if report.refused {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("registry-gate: {e}");
            ExitCode::from(1)
        }
    }
}
