//! What each sealed value is bound to. A secret is sealed with, as the AEAD's
//! associated data, a canonical form of the plaintext columns that decide where it
//! goes: a credential with its server's URL, its kind, issuer, token endpoint, client
//! id, resource and authorization server metadata; a server's headers with its URL;
//! a registration's secret with its issuer, client id, method, kind and redirect
//! URIs. Editing any of them outside keyway (say, pointing the URL or the token
//! endpoint elsewhere) makes the value fail to open, so it is never sent anywhere.
//!
//! Schema 1 bound values to their row only; [`bind_all`] reseals a schema-1 store.
//! No I/O besides the transaction it is handed.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{StoreError, crypto::Cipher};

/// The associated data of a credential.
#[allow(clippy::too_many_arguments)]
pub(crate) fn credential(
    server_id: &str,
    server_url: &str,
    kind: &str,
    issuer: Option<&str>,
    token_endpoint: Option<&str>,
    client_id: Option<&str>,
    resource: Option<&str>,
    as_metadata: Option<&str>,
) -> String {
    serde_json::json!([
        "keyway/credential/2",
        server_id,
        server_url,
        kind,
        issuer,
        token_endpoint,
        client_id,
        resource,
        as_metadata,
    ])
    .to_string()
}

/// The associated data of a server's extra headers.
pub(crate) fn headers(server_id: &str, server_url: &str) -> String {
    serde_json::json!(["keyway/headers/2", server_id, server_url]).to_string()
}

/// The associated data of a registration's client secret.
pub(crate) fn registration(
    issuer: &str,
    client_id: &str,
    auth_method: &str,
    kind: &str,
    redirect_uris: &str,
) -> String {
    serde_json::json!([
        "keyway/registration/2",
        issuer,
        client_id,
        auth_method,
        kind,
        redirect_uris
    ])
    .to_string()
}

/// What [`bind_all`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rebound {
    pub sealed: usize,
    /// Values that did not open under their schema-1 binding either (damaged, or
    /// sealed with another key): left as they are, reported as unreadable on use.
    pub unreadable: Vec<String>,
}

/// Reseal every schema-1 value of the store under its binding, in `tx`.
pub(crate) fn bind_all(tx: &Transaction<'_>, cipher: &Cipher) -> Result<Rebound, StoreError> {
    let mut out = Rebound::default();
    let mut reseal = |old_aad: String, new_aad: String, sealed: Vec<u8>, what: String| match cipher
        .open(&old_aad, &sealed)
    {
        Ok(plain) => {
            out.sealed += 1;
            Some(cipher.seal(&new_aad, &plain))
        }
        Err(_) => {
            out.unreadable.push(what);
            None
        }
    };

    type CredRow = (
        String,
        String,
        Vec<u8>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<CredRow> = tx
        .prepare(
            "SELECT c.server_id, c.kind, c.secret, c.issuer, c.token_endpoint, c.client_id,
                    c.resource, c.as_metadata, s.url
             FROM credentials c JOIN servers s ON s.id = c.server_id",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (id, kind, sealed, issuer, te, client, resource, meta, url) in rows {
        let aad = credential(
            &id,
            &url,
            &kind,
            issuer.as_deref(),
            te.as_deref(),
            client.as_deref(),
            resource.as_deref(),
            meta.as_deref(),
        );
        if let Some(new) = reseal(
            format!("credentials.secret:{id}"),
            aad,
            sealed,
            format!("credential of server {id}"),
        ) {
            tx.execute(
                "UPDATE credentials SET secret = ?2 WHERE server_id = ?1",
                params![id, new],
            )?;
        }
    }

    let rows: Vec<(String, String, Vec<u8>)> = tx
        .prepare("SELECT id, url, headers FROM servers WHERE headers IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, url, sealed) in rows {
        if let Some(new) = reseal(
            format!("servers.headers:{id}"),
            headers(&id, &url),
            sealed,
            format!("headers of server {id}"),
        ) {
            tx.execute(
                "UPDATE servers SET headers = ?2 WHERE id = ?1",
                params![id, new],
            )?;
        }
    }

    let rows: Vec<(String, String, String, String, String, Vec<u8>)> = tx
        .prepare(
            "SELECT issuer, client_id, auth_method, kind, redirect_uris, secret
             FROM registrations WHERE secret IS NOT NULL",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (issuer, client_id, method, kind, redirects, sealed) in rows {
        if let Some(new) = reseal(
            format!("registrations.secret:{issuer}"),
            registration(&issuer, &client_id, &method, &kind, &redirects),
            sealed,
            format!("registration at {issuer}"),
        ) {
            tx.execute(
                "UPDATE registrations SET secret = ?2 WHERE issuer = ?1",
                params![issuer, new],
            )?;
        }
    }
    Ok(out)
}

/// The URL of a live server, for binding its values.
pub(crate) fn server_url(tx: &rusqlite::Connection, id: &str) -> Result<String, StoreError> {
    tx.query_row("SELECT url FROM servers WHERE id = ?1", params![id], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| StoreError::NoSuchServer(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forms are canonical (the same columns give the same bytes) and every
    /// column changes them, including a value moving between two columns.
    #[test]
    fn every_column_is_in_the_binding() {
        let base = || {
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://as"),
                Some("https://as/token"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            )
        };
        assert_eq!(base(), base());
        let variants = [
            credential(
                "id2",
                "https://a/mcp",
                "oauth",
                Some("https://as"),
                Some("https://as/token"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://b/mcp",
                "oauth",
                Some("https://as"),
                Some("https://as/token"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://a/mcp",
                "bearer",
                Some("https://as"),
                Some("https://as/token"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://evil"),
                Some("https://as/token"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://as"),
                Some("https://evil/token"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://as"),
                Some("https://as/token"),
                Some("d"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://as"),
                Some("https://as/token"),
                Some("c"),
                Some("https://b/mcp"),
                Some("{}"),
            ),
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://as"),
                Some("https://as/token"),
                Some("c"),
                Some("https://a/mcp"),
                None,
            ),
            credential(
                "id",
                "https://a/mcp",
                "oauth",
                Some("https://as/token"),
                Some("https://as"),
                Some("c"),
                Some("https://a/mcp"),
                Some("{}"),
            ),
        ];
        for v in variants {
            assert_ne!(v, base());
        }
        assert_ne!(headers("a", "https://x"), headers("a", "https://y"));
        assert_ne!(
            registration("i", "c", "none", "dynamic", "[]"),
            registration("i", "c2", "none", "dynamic", "[]")
        );
    }
}
