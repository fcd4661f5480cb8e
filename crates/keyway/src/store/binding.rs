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

/// One sealed value to reseal: the key of its row, its schema-1 and schema-2
/// associated data, the value, and what it is (for the report).
struct ToReseal {
    key: String,
    old_aad: String,
    new_aad: String,
    sealed: Vec<u8>,
    what: String,
}

/// Reseal every schema-1 value of the store under its binding, in `tx`.
pub(crate) fn bind_all(tx: &Transaction<'_>, cipher: &Cipher) -> Result<Rebound, StoreError> {
    let mut out = Rebound::default();
    reseal_rows(
        tx,
        cipher,
        &mut out,
        "SELECT c.server_id, c.kind, c.secret, c.issuer, c.token_endpoint, c.client_id,
                c.resource, c.as_metadata, s.url
         FROM credentials c JOIN servers s ON s.id = c.server_id",
        "UPDATE credentials SET secret = ?2 WHERE server_id = ?1",
        |r| {
            let (id, kind, url): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(8)?);
            let text = |i| r.get::<_, Option<String>>(i);
            Ok(ToReseal {
                old_aad: format!("credentials.secret:{id}"),
                new_aad: credential(
                    &id,
                    &url,
                    &kind,
                    text(3)?.as_deref(),
                    text(4)?.as_deref(),
                    text(5)?.as_deref(),
                    text(6)?.as_deref(),
                    text(7)?.as_deref(),
                ),
                sealed: r.get(2)?,
                what: format!("credential of server {id}"),
                key: id,
            })
        },
    )?;
    reseal_rows(
        tx,
        cipher,
        &mut out,
        "SELECT id, url, headers FROM servers WHERE headers IS NOT NULL",
        "UPDATE servers SET headers = ?2 WHERE id = ?1",
        |r| {
            let (id, url): (String, String) = (r.get(0)?, r.get(1)?);
            Ok(ToReseal {
                old_aad: format!("servers.headers:{id}"),
                new_aad: headers(&id, &url),
                sealed: r.get(2)?,
                what: format!("headers of server {id}"),
                key: id,
            })
        },
    )?;
    reseal_rows(
        tx,
        cipher,
        &mut out,
        "SELECT issuer, client_id, auth_method, kind, redirect_uris, secret
         FROM registrations WHERE secret IS NOT NULL",
        "UPDATE registrations SET secret = ?2 WHERE issuer = ?1",
        |r| {
            let issuer: String = r.get(0)?;
            let (client_id, method, kind, redirects): (String, String, String, String) =
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            Ok(ToReseal {
                old_aad: format!("registrations.secret:{issuer}"),
                new_aad: registration(&issuer, &client_id, &method, &kind, &redirects),
                sealed: r.get(5)?,
                what: format!("registration at {issuer}"),
                key: issuer,
            })
        },
    )?;
    Ok(out)
}

/// Reseal the value of every row `select` yields (`row` says what it is), writing
/// it back with `update` (`?1` the row's key, `?2` the value). A value that does not
/// open is left as it is and reported.
fn reseal_rows(
    tx: &Transaction<'_>,
    cipher: &Cipher,
    out: &mut Rebound,
    select: &str,
    update: &str,
    row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<ToReseal>,
) -> Result<(), StoreError> {
    let rows: Vec<ToReseal> = tx
        .prepare(select)?
        .query_map([], row)?
        .collect::<Result<_, _>>()?;
    for r in rows {
        match cipher.open(&r.old_aad, &r.sealed) {
            Ok(plain) => {
                let new = cipher.seal(&r.new_aad, &plain);
                tx.execute(update, params![r.key, new])?;
                out.sealed += 1;
            }
            Err(_) => out.unreadable.push(r.what),
        }
    }
    Ok(())
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
    /// column changes them: one changed, a value moved to the next column, or one
    /// left out.
    #[test]
    fn every_column_is_in_the_binding() {
        let columns = [
            "id",
            "https://a/mcp",
            "oauth",
            "https://as",
            "https://as/token",
            "c",
            "https://a/mcp",
            "{}",
        ];
        let form = |c: [Option<&str>; 8]| {
            let text = |i: usize| c[i].unwrap_or("");
            credential(text(0), text(1), text(2), c[3], c[4], c[5], c[6], c[7])
        };
        let base = columns.map(Some);
        assert_eq!(form(base), form(base));
        for i in 0..columns.len() {
            let mut changed = base;
            changed[i] = Some("other");
            assert_ne!(form(changed), form(base), "column {i} changed");
            if i + 1 < columns.len() {
                let mut moved = base;
                moved.swap(i, i + 1);
                if moved != base {
                    assert_ne!(form(moved), form(base), "columns {i} and {} swapped", i + 1);
                }
            }
            if i >= 3 {
                let mut absent = base;
                absent[i] = None;
                assert_ne!(form(absent), form(base), "column {i} left out");
            }
        }
        assert_ne!(headers("a", "https://x"), headers("a", "https://y"));
        assert_ne!(
            registration("i", "c", "none", "dynamic", "[]"),
            registration("i", "c2", "none", "dynamic", "[]")
        );
    }
}
