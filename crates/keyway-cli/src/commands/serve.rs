//! `keyway serve`: the gateway, on stdio or on a local HTTP listener.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use keyway::{
    Secret,
    gateway::{
        self, Gateway, UpstreamConfig,
        connect::{Connector, PerPersonServer},
        edge::EdgeLimits,
        http::Guard,
        inbound::{ProtectedResource, ResourceSettings, StartError, Verification},
        people::{Gateways, People},
    },
    mcp::wire::WireConfig,
    store::{Person, Store, tokens::StoredTokens},
};

use super::{store, testbed_signals::StopSignals};
use crate::{cli::ServeArgs, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(args: ServeArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let sign_in = args.sign_in.authorization_server.is_some();
    if let Some(addr) = args.listen
        && !addr.ip().is_loopback()
    {
        if sign_in && args.sign_in.public_url.is_none() {
            return Err(store::usage(format!(
                "listening on {addr}, beyond loopback, with --authorization-server needs --public-url (the URL clients use, which tokens are issued for)"
            )));
        }
        if !sign_in && args.token_file.is_none() {
            return Err(store::usage(format!(
                "listening on {addr}, beyond loopback, needs --token-file (a token you hand to the clients on purpose) or --authorization-server (people sign in)"
            )));
        }
    }
    if !args.cors_origin.is_empty() && args.listen.is_none() {
        return Err(store::usage(
            "--cors-origin is for the HTTP listener: add --listen ADDR".into(),
        ));
    }
    for o in &args.cors_origin {
        gateway::http::web_origin(o).map_err(|e| store::usage(format!("--cors-origin: {e}")))?;
    }
    if args.check_config {
        return check_config(&args, settings, printer).await;
    }
    let st = store::open(settings).await?;
    let http = args.deadlines.client()?;
    let mut upstreams = Vec::new();
    // The servers each person authorizes as themselves: (index in `upstreams`, id).
    let mut per_person = Vec::new();
    for s in st
        .servers()
        .await
        .map_err(store::store_error)?
        .into_iter()
        .filter(|s| s.enabled)
    {
        let url = store::saved_url(&s)?;
        // One server whose headers do not open is left out, named; the rest are served.
        let headers = match st.headers(&s.id).await {
            Ok(h) => store::header_names(h),
            Err(e @ keyway::store::StoreError::Unreadable { .. }) => {
                tracing::warn!(server = %s.name, "not served: {e}");
                eprintln!("warning: {} is not served: {e}", s.name);
                continue;
            }
            Err(e) => return Err(store::store_error(e)),
        };
        if s.per_person {
            if !sign_in || args.listen.is_none() {
                tracing::warn!(server = %s.name, "not served: it is per-person");
                eprintln!(
                    "warning: {} is not served: each person authorizes it as themselves, which needs --listen and --authorization-server (or `keyway edit {} --shared`)",
                    s.name, s.name
                );
                continue;
            }
            per_person.push((upstreams.len(), s.id.clone(), url.clone()));
        }
        let kind = store::wire_kind(s.transport);
        let tokens = StoredTokens::new(Arc::new(st.clone()), &s.id);
        tokens.counted_as(&s.name);
        upstreams.push(UpstreamConfig {
            name: s.name.clone(),
            wire: WireConfig {
                url,
                http: http.clone(),
                tokens,
                headers,
                kind,
                deadlines: args.deadlines.deadlines(),
                protocol: args.protocol.clone(),
                last_protocol: s.protocol.clone(),
            },
            liveness: Some(Arc::new(store::StillSaved {
                store: st.clone(),
                id: s.id.clone(),
            })),
            request_timeout: std::time::Duration::from_secs(args.request_timeout),
            ignore_tools: keyway::merge::ToolFilter::new(args.ignore_tool.iter().cloned()),
        });
    }
    if upstreams.is_empty() {
        tracing::warn!("no enabled servers: the gateway has nothing to offer (keyway add URL)");
    }
    let count = upstreams.len();
    let prefix = args.prefix;
    // Each person's own gateway is made when they first come (with --per-person
    // servers); otherwise one for everyone, connected now.
    let gw = match per_person.is_empty() {
        true => Some(Gateway::start_with(upstreams.clone(), prefix).await),
        false => None,
    };
    if let Some(gw) = &gw
        && prefix == keyway::gateway::PrefixMode::Never
    {
        for clash in gw.clashes().await {
            tracing::warn!("{clash}");
            eprintln!("warning: {clash} (--prefix never: the first server wins a name)");
        }
    }
    match args.listen {
        None => {
            let gw = match gw {
                Some(gw) => gw,
                None => Gateway::start_with(upstreams, prefix).await,
            };
            gateway::serve_stdio(gw, keyway::stdio::input(), keyway::stdio::output())
                .await
                .context("serving on stdio")?;
            Ok(())
        }
        Some(addr) => {
            let stop = StopSignals::install()?;
            // Always a token: any web page the user visits can send requests to a
            // loopback port; only a page that knows the token gets an answer. Either
            // the gateway's own, or a person's from the organisation's server (the
            // gateway's own then opens /metrics alone, for a scraper).
            let token_path = args
                .token_file
                .clone()
                .unwrap_or_else(|| settings.home.join(GATEWAY_TOKEN_FILE));
            let token = read_token(&token_path, args.token_file.is_none())?;
            let listener = gateway::edge::listen(addr).map_err(|e| {
                CliError::failure(anyhow!("cannot listen on {addr}: {e}"))
                    .with_hint("pick another port")
            })?;
            let local = listener
                .local_addr()
                .context("reading the listen address")?;
            let limits = EdgeLimits {
                max_connections: args.max_connections as usize,
                ..EdgeLimits::default()
            };
            let mut guard = Guard::for_addr(local, token.clone(), &args.allowed_host)
                .with_cors_origins(&args.cors_origin)
                .map_err(|e| store::usage(format!("--cors-origin: {e}")))?;
            let resource = match sign_in {
                true => Some(protected_resource(&args.sign_in, local).await?),
                false => None,
            };
            if let Some(r) = &resource {
                guard = guard.with_resource(r.clone()).with_metrics_token(token);
            }
            // On a shared database, replicas serve each other's sessions: their ids
            // are sealed with a key every replica derives from the store key.
            if matches!(st, keyway::store::AnyStore::Postgres(_)) {
                guard = guard.with_session_key(st.sealing_key("gateway session ids"));
            }
            // The probes, outside the guard: they carry no token.
            let mut open =
                gateway::health::routes(Arc::new(gateway::health::StoreAnswers(st.clone())));
            let gateways: Gateways = match (gw, &resource) {
                (Some(gw), _) => gw.into(),
                (None, Some(resource)) => {
                    let (people, routes) =
                        people(&st, resource.clone(), upstreams, &per_person, prefix).await?;
                    open = open.merge(routes);
                    people.into()
                }
                // Per-person servers are served with sign-in alone (see above).
                (None, None) => Gateway::start_with(upstreams, prefix).await.into(),
            };
            let app = gateway::http::app_with(gateways.clone(), guard, limits, open);
            eprintln!("keyway gateway on http://{local}/mcp for {count} server(s)");
            match &resource {
                Some(r) => {
                    eprintln!(
                        "people sign in at {} for {} (resource metadata at {})",
                        r.issuer(),
                        r.resource(),
                        r.metadata_location().1
                    );
                    eprintln!(
                        "/metrics takes Authorization: Bearer <the token in {}>",
                        token_path.display()
                    );
                }
                None => eprintln!(
                    "clients send Authorization: Bearer <the token in {}>",
                    token_path.display()
                ),
            }
            gateway::edge::serve(
                listener,
                app,
                limits,
                async move {
                    let _ = stop.wait().await;
                },
                DRAIN,
            )
            .await
            .context("serving HTTP")?;
            match gateways {
                Gateways::One(gw) => gw.close().await,
                Gateways::People(p) => p.close().await,
            }
            Ok(())
        }
    }
}

/// Each person's gateway: `upstreams` with, for the `per_person` ones, the
/// person's own tokens; and the pages where people authorize those.
async fn people(
    st: &keyway::store::AnyStore,
    resource: Arc<ProtectedResource>,
    upstreams: Vec<UpstreamConfig>,
    per_person: &[(usize, String, url::Url)],
    prefix: keyway::gateway::PrefixMode,
) -> Result<(Arc<People>, axum::Router), CliError> {
    let public = url::Url::parse(resource.resource()).context("the gateway's own URL")?;
    let servers = per_person
        .iter()
        .map(|(i, id, url)| PerPersonServer {
            id: id.clone(),
            name: upstreams[*i].name.clone(),
            url: url.clone(),
        })
        .collect();
    let options = keyway::auth::AuthOptions {
        client_name: "keyway gateway".into(),
        ..Default::default()
    };
    let store: Arc<dyn Store> = Arc::new(st.clone());
    let connector = Connector::start(store.clone(), resource, public, servers, options)
        .await
        .map_err(|e| {
            CliError::failure(anyhow!("{e}"))
                .with_hint("people sign in at --authorization-server to authorize per-person servers: check that it answers")
        })?;
    let routes = connector.routes();
    let per_person: Arc<Vec<(usize, String)>> = Arc::new(
        per_person
            .iter()
            .map(|(i, id, _)| (*i, id.clone()))
            .collect(),
    );
    let upstreams = Arc::new(upstreams);
    let build: keyway::gateway::people::Build = Arc::new(move |who| {
        let (store, connector, upstreams, per_person) = (
            store.clone(),
            connector.clone(),
            upstreams.clone(),
            per_person.clone(),
        );
        Box::pin(async move {
            let person = Person {
                issuer: who.issuer,
                subject: who.subject,
            };
            let mut configs = (*upstreams).clone();
            for (i, id) in per_person.iter() {
                let tokens = StoredTokens::for_person(
                    store.clone(),
                    id,
                    person.clone(),
                    connector.registrations(),
                    Arc::new(std::time::SystemTime::now),
                );
                tokens.counted_as(&configs[*i].name);
                configs[*i].wire.tokens = tokens;
            }
            let links = connector.for_person(person);
            Gateway::start_for(configs, prefix, Some(links)).await
        })
    });
    Ok((People::new(build), routes))
}

/// The gateway as a protected resource of the organisation's authorization server
/// (`--authorization-server`), listening at `local`.
async fn protected_resource(
    args: &crate::cli::SignInArgs,
    local: std::net::SocketAddr,
) -> Result<Arc<ProtectedResource>, CliError> {
    let Some(issuer) = &args.authorization_server else {
        return Err(store::usage("--authorization-server is needed".into()));
    };
    let resource = match &args.public_url {
        Some(u) => u.clone(),
        None => url::Url::parse(&format!("http://{local}/mcp")).context("the gateway's own URL")?,
    };
    let mut settings = ResourceSettings::new(resource, issuer);
    settings.required_scopes = args.require_scope.clone();
    if let Some(client_id) = &args.introspection_client {
        let secret = match &args.introspection_secret_file {
            Some(path) => read_private(path, "introspection secret", 1)?,
            None => match std::env::var("KEYWAY_INTROSPECTION_SECRET") {
                Ok(s) if !s.is_empty() => Secret::new(s),
                _ => {
                    return Err(store::usage(
                        "--introspection-client needs its secret: --introspection-secret-file FILE or KEYWAY_INTROSPECTION_SECRET".into(),
                    ));
                }
            },
        };
        settings.verification = Verification::Introspection {
            client_id: client_id.clone(),
            secret,
        };
    }
    let r = ProtectedResource::start(settings).await.map_err(|e| {
        let hint = match e {
            StartError::Resource(_) | StartError::Scope(_) => {
                "check --public-url and --require-scope"
            }
            _ => "check --authorization-server, and that the server answers",
        };
        CliError::failure(anyhow!("{e}")).with_hint(hint)
    })?;
    Ok(Arc::new(r))
}

/// The shortest gateway token keyway accepts.
const MIN_TOKEN_LEN: usize = 16;

/// The token file `keyway serve --listen` makes in the home when none is given.
pub const GATEWAY_TOKEN_FILE: &str = "gateway.token";

/// How long requests under way may take to finish once the gateway is told to stop.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway's token: from `path`, made there first when keyway owns the file.
/// Either way it must be readable by its owner only.
fn read_token(path: &std::path::Path, ours: bool) -> Result<Secret, CliError> {
    if ours {
        std::fs::create_dir_all(path.parent().unwrap_or(path))
            .with_context(|| format!("creating {}", path.display()))?;
        let token = keyway::store::private_token_file(path).map_err(store::store_error)?;
        if token.expose().len() < MIN_TOKEN_LEN {
            return Err(CliError::failure(anyhow!(
                "the gateway's token file {} is empty or cut short",
                path.display()
            ))
            .with_hint("delete it: keyway makes a new one at the next start"));
        }
        return Ok(token);
    }
    read_private(path, "token", MIN_TOKEN_LEN)
}

/// A secret (`what`) from a file you were handed: at least `min_len` characters,
/// which others cannot change.
fn read_private(path: &std::path::Path, what: &str, min_len: usize) -> Result<Secret, CliError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    let token = text.trim();
    if token.len() < min_len {
        return Err(store::usage(format!(
            "the {what} in {} is shorter than {min_len} characters",
            path.display()
        )));
    }
    // A file you were handed (a container's secret mount is often root's, 0444) is
    // fine to read; one that others could change is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?;
        let me = rustix::process::getuid().as_raw();
        if meta.mode() & 0o022 != 0 || (meta.uid() != me && meta.uid() != 0) {
            return Err(store::usage(format!(
                "the {what} file {} can be changed by other users (mode {:03o}, owner {}); `chmod 600` it",
                path.display(),
                meta.mode() & 0o777,
                meta.uid()
            )));
        }
        if meta.mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "the {what} file is readable by every user of this machine");
        }
    }
    Ok(Secret::new(token.to_owned()))
}

/// `keyway serve --check-config`: what the gateway would start with, checked without
/// contacting a server or listening. Problems (what would fail) exit 1; warnings
/// (what would start but not work yet, such as a server needing authorization) do not.
async fn check_config(
    args: &ServeArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    if !args.cors_origin.is_empty() {
        lines.push(format!("cors        {}", args.cors_origin.join(", ")));
    }
    let sign_in = &args.sign_in;
    match (args.listen, &args.token_file) {
        (None, _) => lines.push("listen      stdio".into()),
        (Some(addr), _) if sign_in.authorization_server.is_some() => {
            let resource = sign_in
                .public_url
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_else(|| format!("http://{addr}/mcp"));
            lines.push(format!("listen      http://{addr}/mcp"));
            lines.push(format!(
                "sign-in     {} (tokens for {resource}{})",
                sign_in.authorization_server.as_deref().unwrap_or_default(),
                if sign_in.require_scope.is_empty() {
                    String::new()
                } else {
                    format!(", scopes {}", sign_in.require_scope.join(" "))
                }
            ));
            match &args.token_file {
                Some(path) => match read_token(path, false) {
                    Ok(_) => lines.push(format!("metrics     token in {}", path.display())),
                    Err(e) => problems.push(format!("the token file: {}", e.message())),
                },
                None => lines.push(format!(
                    "metrics     token in {}",
                    settings.home.join(GATEWAY_TOKEN_FILE).display()
                )),
            }
            match (&sign_in.introspection_client, &sign_in.introspection_secret_file) {
                (None, _) => lines.push("tokens      JWTs, verified with the server's keys".into()),
                (Some(id), Some(path)) => match read_private(path, "introspection secret", 1) {
                    Ok(_) => lines.push(format!("tokens      introspection as {id} (secret in {})", path.display())),
                    Err(e) => problems.push(format!("the introspection secret: {}", e.message())),
                },
                (Some(id), None) => match std::env::var("KEYWAY_INTROSPECTION_SECRET") {
                    Ok(v) if !v.is_empty() => lines.push(format!("tokens      introspection as {id} (secret from KEYWAY_INTROSPECTION_SECRET)")),
                    _ => problems.push("--introspection-client needs its secret: --introspection-secret-file FILE or KEYWAY_INTROSPECTION_SECRET".into()),
                },
            }
        }
        (Some(addr), Some(path)) => {
            lines.push(format!("listen      http://{addr}/mcp"));
            match read_token(path, false) {
                Ok(_) => lines.push(format!(
                    "token       {} (readable, long enough)",
                    path.display()
                )),
                Err(e) => problems.push(format!("the token file: {}", e.message())),
            }
        }
        (Some(addr), None) => {
            lines.push(format!("listen      http://{addr}/mcp"));
            let path = settings.home.join(GATEWAY_TOKEN_FILE);
            lines.push(format!(
                "token       {} ({})",
                path.display(),
                if path.exists() {
                    "there"
                } else {
                    "made at the first start"
                }
            ));
        }
    }
    // A check that made a store (and a key) would change what it checks.
    if matches!(settings.store, Ok(keyway::store::StoreLocation::Home))
        && !settings.home.join("keyway.db").exists()
    {
        lines.push(format!(
            "store       none yet in {}",
            settings.home.display()
        ));
        warnings.push("no servers: the gateway would offer nothing (keyway add URL)".into());
        return report(printer, lines, problems, warnings);
    }
    let st = match store::open(settings).await {
        Ok(st) => st,
        Err(e) => {
            // Nothing else can be checked without the store.
            problems.push(format!("the store: {}", e.message()));
            return report(printer, lines, problems, warnings);
        }
    };
    let info = st.describe();
    lines.push(format!("store       {}", info.path.display()));
    lines.push(format!("key         {}", info.key_source));
    let servers = st.servers().await.map_err(store::store_error)?;
    let enabled: Vec<_> = servers.iter().filter(|s| s.enabled).collect();
    lines.push(format!(
        "servers     {} enabled of {}",
        enabled.len(),
        servers.len()
    ));
    if enabled.is_empty() {
        warnings
            .push("no enabled servers: the gateway would offer nothing (keyway add URL)".into());
    }
    for s in enabled {
        if let Err(e) = store::saved_url(s) {
            problems.push(format!("{}: {}", s.name, e.message()));
            continue;
        }
        if let Err(e) = st.headers(&s.id).await {
            problems.push(format!("{}: its headers: {e}", s.name));
        }
        match st.credential(&s.id).await {
            Ok(Some(_)) => {}
            Ok(None) if s.auth == keyway::store::AuthKind::None => {}
            Ok(None) => warnings.push(format!(
                "{} has no credential yet: its tools answer with an error until `keyway authorize {}`",
                s.name, s.name
            )),
            Err(e) => problems.push(format!("{}: {e}", s.name)),
        }
    }
    report(printer, lines, problems, warnings)
}

fn report(
    printer: &Printer,
    lines: Vec<String>,
    problems: Vec<String>,
    warnings: Vec<String>,
) -> Result<(), CliError> {
    if printer.json_mode() {
        printer.json(&serde_json::json!({
            "ok": problems.is_empty(),
            "checked": lines,
            "problems": problems,
            "warnings": warnings,
        }))?;
    } else {
        for l in &lines {
            printer.result(l);
        }
        for w in &warnings {
            printer.result(format!("warning     {w}"));
        }
        for p in &problems {
            printer.result(format!("problem     {p}"));
        }
        if problems.is_empty() {
            printer.result("config      ok: the gateway would start");
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(
        CliError::failure(anyhow!("{} problem(s) found", problems.len()))
            .with_hint("each is listed above with what to do"),
    )
}
