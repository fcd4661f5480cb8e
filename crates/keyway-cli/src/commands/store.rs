//! Opening the store and finding servers in it, with errors that say what to do.

use anyhow::anyhow;
use keyway::{
    Secret,
    store::{AnyStore, OpenOptions, ServerRecord, Store, StoreError},
};

use crate::{
    cli::CredentialArgs,
    exit::{CliError, ExitStatus},
    settings::Settings,
};

pub async fn open(settings: &Settings) -> Result<AnyStore, CliError> {
    let location = settings
        .store
        .clone()
        .map_err(|e| CliError::failure(e).with_status(ExitStatus::Usage))?;
    AnyStore::open(
        &location,
        &settings.home,
        OpenOptions {
            use_keychain: settings.use_keychain,
        },
    )
    .await
    .map_err(store_error)
}

pub fn store_error(e: StoreError) -> CliError {
    let hint = match &e {
        StoreError::NameTaken(_) => Some("pick another --name, or `keyway remove` the old one"),
        StoreError::NoSuchServer(_) => Some("`keyway list` shows the saved servers"),
        StoreError::KeyMissing { .. } | StoreError::WrongKey { .. } => {
            Some("`keyway doctor` shows where keyway looks for the key")
        }
        _ => None,
    };
    let err = CliError::failure(e);
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// The names of the saved servers (to pick a new one that is not taken).
pub async fn names(store: &AnyStore) -> Result<Vec<String>, CliError> {
    Ok(store
        .servers()
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|s| s.name)
        .collect())
}

/// The servers `names` names (by name or id), or every enabled one when it is empty.
pub async fn chosen(store: &AnyStore, names: &[String]) -> Result<Vec<ServerRecord>, CliError> {
    if names.is_empty() {
        return Ok(store
            .servers()
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|s| s.enabled)
            .collect());
    }
    let mut out = Vec::new();
    for n in names {
        out.push(find(store, n).await?);
    }
    Ok(out)
}

/// Headers as a new server stores them.
pub fn header_pairs(headers: &[(http::HeaderName, Secret)]) -> Vec<(String, Secret)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
        .collect()
}

/// A saved server by name or id.
pub async fn find(store: &AnyStore, name: &str) -> Result<ServerRecord, CliError> {
    store
        .server(name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| store_error(StoreError::NoSuchServer(name.to_owned())))
}

/// `@FILE` reads a secret from a file (a trailing newline dropped).
pub fn secret_value(v: &str, what: &str) -> Result<Secret, CliError> {
    match v.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("reading {what} from {path}: {e}"))?;
            Ok(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        None => Ok(Secret::new(v.to_owned())),
    }
}

/// The static token: --token, or (as mcp-remote takes it) an `Authorization: Bearer
/// ...` header.
pub fn token(c: &CredentialArgs) -> Result<Option<Secret>, CliError> {
    // `${VAR}` is read from the environment, as mcp-remote does with its arguments
    // (a client config can then name the variable, not hold the token).
    let given = c
        .token
        .as_deref()
        .map(|t| {
            let t = if t.contains("${") {
                expand_env(t, "--token")?
            } else {
                t.to_owned()
            };
            secret_value(&t, "the token")
        })
        .transpose()?;
    let mut from_header = None;
    for h in &c.headers {
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("authorization") {
            continue;
        }
        let what = "--header Authorization";
        let value = value.trim();
        let value = match value.strip_prefix('@') {
            Some(_) => secret_value(value, "the value of --header Authorization")?,
            None => Secret::new(expand_env(value, what)?),
        };
        let token = value
            .expose()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                usage(format!(
                    "{what}: keyway sends tokens as 'Authorization: Bearer TOKEN'; other schemes are not supported (the value is not shown)"
                ))
            })?;
        from_header = Some(Secret::new(token));
    }
    match (given, from_header) {
        (Some(_), Some(_)) => Err(usage(
            "give the token once: --token or --header 'Authorization: Bearer ...', not both".into(),
        )),
        (t, h) => Ok(t.or(h)),
    }
}

/// `Name: value` headers; the values are secrets, so no error shows one. A value
/// `@FILE` is read from FILE; `${VAR}` in a value is replaced by the environment
/// variable VAR (as mcp-remote does), so a secret need not be on the command line,
/// where other users of the machine can read it.
pub fn headers(c: &CredentialArgs) -> Result<Vec<(http::HeaderName, Secret)>, CliError> {
    c.headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let which = format!("--header number {}", i + 1);
            let (name, value) = h.split_once(':').ok_or_else(|| {
                usage(format!(
                    "{which} is not 'Name: value' (it has no ':'); its text is not shown, as it may be a secret"
                ))
            })?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                usage(format!("{which}: the part before ':' is not a header name"))
            })?;
            let what = format!("--header {name}");
            let raw = value.trim();
            let value = if let Some(literal) = raw.strip_prefix("@@") {
                // `@@...` is a value that starts with `@`.
                Secret::new(format!("@{}", expand_env(literal, &what)?))
            } else if let Some(path) = raw.strip_prefix('@') {
                secret_value(raw, &format!("the value of {what} (from the file {path})"))?
            } else {
                Secret::new(expand_env(raw, &what)?)
            };
            if http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(usage(format!(
                    "{what}: the value has characters a header cannot carry"
                )));
            }
            Ok((name, value))
        })
        // Authorization is the token ([`token`]), never a stored header.
        .filter(|h| {
            !matches!(h, Ok((name, _)) if name == http::header::AUTHORIZATION)
        })
        .collect()
}

/// `${VAR}` in `value` replaced by the environment variable VAR (`$${` is a literal
/// `${`); a missing one is an error naming it (never the value).
fn expand_env(value: &str, what: &str) -> Result<String, CliError> {
    let done = substitute(value, &|var| std::env::var(var).ok());
    if done.unclosed {
        return Err(usage(format!("{what}: an unclosed ${{ in the value")));
    }
    match done.missing.first() {
        Some(var) => Err(usage(format!(
            "{what}: the environment variable {var} is not set"
        ))),
        None => Ok(done.text),
    }
}

/// What [`substitute`] made of a value.
pub struct Substituted {
    /// The value with what `lookup` knew filled in; the rest left as written.
    pub text: String,
    /// The names inside `${...}` that `lookup` did not know, in order.
    pub missing: Vec<String>,
    /// A `${` without its `}` (kept as written).
    pub unclosed: bool,
}

/// `${NAME}` in `value` replaced by `lookup(NAME)` (`$${` is a literal `${`); what
/// `lookup` does not know stays as written and is listed. The one place keyway fills
/// variables in: command-line values ([`expand_env`]) and imported configs.
pub fn substitute(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Substituted {
    let mut done = Substituted {
        text: String::with_capacity(value.len()),
        missing: Vec::new(),
        unclosed: false,
    };
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            done.text.push_str(&rest[..start]);
            done.text.push('{');
            rest = &rest[start + 2..];
            continue;
        }
        done.text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            done.unclosed = true;
            done.text.push_str(&rest[start..]);
            return done;
        };
        let name = &after[..end];
        match lookup(name) {
            Some(v) => done.text.push_str(&v),
            None => {
                done.text.push_str(&rest[start..start + 2 + end + 1]);
                done.missing.push(name.to_owned());
            }
        }
        rest = &after[end + 1..];
    }
    done.text.push_str(rest);
    done
}

/// Headers to send: names checked, values secret.
pub type Headers = Vec<(http::HeaderName, Secret)>;

/// The token and headers of `c`, once they are known to be allowed to go to `url`
/// ([`check_secrets_destination`]).
pub fn secrets_for(
    c: &CredentialArgs,
    url: &url::Url,
    allow_http: bool,
) -> Result<(Option<Secret>, Headers), CliError> {
    let token = token(c)?;
    let headers = headers(c)?;
    check_secrets_destination(url, token.is_some() || !headers.is_empty(), allow_http)?;
    Ok((token, headers))
}

/// Refuse to send a static token or configured headers to `url` over plain http to
/// a host that is not this machine, unless `allow_http` (development).
pub fn check_secrets_destination(
    url: &url::Url,
    has_secrets: bool,
    allow_http: bool,
) -> Result<(), CliError> {
    if !has_secrets {
        return Ok(());
    }
    keyway::auth::urls::may_carry_secrets(url, allow_http).map_err(|e| {
        usage(format!("not sending the token or headers: {e}")).with_hint(
            "use the server's https URL; --allow-http sends them anyway (development only)",
        )
    })
}

/// Saved `(name, value)` headers as they are sent: names were checked when saved, so
/// one that no longer parses (a store written by hand) is skipped.
pub fn header_names(
    saved: impl IntoIterator<Item = (String, Secret)>,
) -> Vec<(http::HeaderName, Secret)> {
    keyway::manage::header_names(saved)
}

/// A saved server's extra headers, ready to send.
pub async fn saved_headers(
    store: &AnyStore,
    server: &ServerRecord,
) -> Result<Vec<(http::HeaderName, Secret)>, CliError> {
    Ok(header_names(
        store.headers(&server.id).await.map_err(store_error)?,
    ))
}

/// A saved server's URL.
pub fn saved_url(server: &ServerRecord) -> Result<url::Url, CliError> {
    url::Url::parse(&server.url)
        .map_err(|e| CliError::failure(anyhow!("the saved URL {} is not a URL: {e}", server.url)))
}

/// Refuse a disabled server, naming the command that enables it.
pub fn ensure_enabled(server: &ServerRecord) -> Result<(), CliError> {
    if server.enabled {
        return Ok(());
    }
    Err(CliError::failure(anyhow!("{} is disabled", server.name))
        .with_hint(format!("keyway enable {}", server.name)))
}

/// The raw wire's transport for a saved server.
pub fn wire_kind(t: keyway::store::Transport) -> keyway::mcp::wire::WireKind {
    match t {
        keyway::store::Transport::Http => keyway::mcp::wire::WireKind::StreamableHttp,
        keyway::store::Transport::Sse => keyway::mcp::wire::WireKind::LegacySse,
    }
}

pub fn usage(msg: String) -> CliError {
    CliError::failure(anyhow!(msg)).with_status(ExitStatus::Usage)
}

/// A fresh server id: 16 random hex digits.
pub fn new_id() -> String {
    keyway::manage::new_id()
}

/// "in 5 min", "3 h ago" for a unix time.
pub fn relative(at: u64, now: u64) -> String {
    let (d, future) = if at >= now {
        (at - now, true)
    } else {
        (now - at, false)
    };
    let text = match d {
        0..=89 => format!("{d} s"),
        90..=5399 => format!("{} min", (d + 30) / 60),
        5400..=129_599 => format!("{} h", (d + 1800) / 3600),
        _ => format!("{} days", (d + 43_200) / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// The connection transport for a saved server.
pub fn choice(t: keyway::store::Transport) -> keyway::mcp::TransportChoice {
    keyway::manage::transport_choice(t)
}

/// Whether a saved server is still there and enabled (asked before reconnecting).
pub struct StillSaved {
    pub store: AnyStore,
    pub id: String,
}

impl StillSaved {
    pub async fn check(&self) -> bool {
        matches!(self.store.server(&self.id).await, Ok(Some(s)) if s.enabled)
    }
}

impl keyway::gateway::Liveness for StillSaved {
    fn alive(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(self.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_fills_what_it_knows_and_lists_the_rest() {
        let lookup = |v: &str| (v == "A").then(|| "1".to_owned());
        let d = substitute("x${A}y${B}z$${A}", &lookup);
        assert_eq!(d.text, "x1y${B}z${A}");
        assert_eq!(d.missing, ["B"]);
        assert!(!d.unclosed);
        let d = substitute("a${A", &lookup);
        assert_eq!((d.text.as_str(), d.unclosed), ("a${A", true));
        assert_eq!(substitute("plain", &lookup).text, "plain");
    }
}
