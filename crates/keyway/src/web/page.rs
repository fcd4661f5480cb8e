//! The page as HTML, rendered on the server: it reads without JavaScript, and the
//! script only replaces the cards with newer ones and drives the dialogs. Every value
//! from the store or a server is escaped.

use std::{collections::BTreeMap, fmt::Write};

use super::flows::FlowView;
use crate::{
    manage::Card,
    status::{Action, State},
};

/// Text made safe for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A state as people read it on a badge.
fn state_label(s: State) -> &'static str {
    match s {
        State::Ready => "Ready",
        State::Authorized => "Authorized",
        State::Token => "Token",
        State::NeedsAuth => "Needs authorization",
        State::NeedsToken => "Needs a token",
        State::TokenRejected => "Token rejected",
        State::Error => "Error",
        State::Disabled => "Disabled",
    }
}

/// "in 5 min", "3 h ago" for a Unix time, against `now`.
fn relative(at: u64, now: u64) -> String {
    let (d, future) = if at >= now {
        (at - now, true)
    } else {
        (now - at, false)
    };
    let span = match d {
        0..60 => format!("{d} s"),
        60..3600 => format!("{} min", d / 60),
        3600..86400 => format!("{} h", d / 3600),
        _ => format!("{} d", d / 86400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A form that posts to `path` (the CSRF token rides in the query, for pages without
/// JavaScript; the script sends it as a header too).
fn form_open(path: &str, csrf: &str, class: &str, act: &str) -> String {
    format!(
        "<form method=\"post\" class=\"{class}\" data-act=\"{act}\" action=\"{}?csrf={}\">",
        escape(path),
        escape(csrf)
    )
}

fn flow_line(id: &str, name: &str, flow: &FlowView, csrf: &str) -> String {
    let mut s = format!(
        "<div class=\"flow flow-{}\" role=\"status\" data-flow-for=\"{}\">",
        match flow {
            FlowView::Starting | FlowView::Authorizing { .. } => "running",
            FlowView::Authorized { .. } => "done",
            FlowView::Declined { .. } => "declined",
            FlowView::Failed { .. } => "failed",
        },
        escape(id)
    );
    match flow {
        FlowView::Starting => s.push_str("Authorizing: finding the authorization server…"),
        FlowView::Authorizing { url, device } => {
            s.push_str("Authorizing: ");
            if let Some(d) = device {
                let _ = write!(
                    s,
                    "enter the code <strong class=\"user-code\">{}</strong> at ",
                    escape(&d.user_code)
                );
                match &d.link {
                    Some(link) => {
                        let _ = write!(
                            s,
                            "<a href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">{}</a>",
                            escape(link),
                            escape(&d.verification_uri)
                        );
                    }
                    None => s.push_str(&escape(&d.verification_uri)),
                }
            } else if let Some(u) = url {
                let _ = write!(
                    s,
                    "waiting for the sign-in page. <a class=\"signin-link\" href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">Open it</a> if no tab opened.",
                    escape(u)
                );
            } else {
                s.push_str("starting…");
            }
        }
        FlowView::Authorized { issuer, note } => {
            let _ = write!(s, "Authorized by {}", escape(issuer));
            if let Some(n) = note {
                let _ = write!(s, " ({})", escape(n));
            }
        }
        FlowView::Declined { reason } | FlowView::Failed { reason } => {
            s.push_str(&escape(reason));
        }
    }
    if !flow.finished() {
        s.push_str(&form_open(
            &format!("/servers/{id}/cancel"),
            csrf,
            "inline",
            "cancel",
        ));
        let _ = write!(
            s,
            " <button class=\"act-cancel\" type=\"submit\" aria-label=\"Cancel the authorization of {}\">Cancel</button></form>",
            escape(name)
        );
    }
    s.push_str("</div>");
    s
}

/// One card.
pub fn card(c: &Card, flow: Option<&FlowView>, csrf: &str, now: u64) -> String {
    let id = escape(&c.id);
    let base = format!("/servers/{}", c.id);
    let mut s = String::new();
    let _ = write!(
        s,
        "<article class=\"card\" id=\"card-{id}\" data-id=\"{id}\" data-name=\"{name}\" data-state=\"{state}\" aria-labelledby=\"name-{id}\">\
         <header><h2 id=\"name-{id}\">{name}</h2><span class=\"badge state-{state}\">{label}</span></header>\
         <p class=\"url\">{url}</p><dl>",
        name = escape(&c.name),
        state = c.state.as_str(),
        label = state_label(c.state),
        url = escape(&c.url),
    );
    let mut row = |k: &str, v: String| {
        let _ = write!(s, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    row("Transport", escape(&c.transport));
    row(
        "MCP revision",
        escape(c.protocol.as_deref().unwrap_or("not known yet")),
    );
    row(
        "Tools",
        c.tools
            .map(|n| n.to_string())
            .unwrap_or_else(|| "not listed yet".into()),
    );
    row("Sign-in", escape(&c.auth));
    if let Some(at) = c.expires_at {
        let verb = if at > now { "expires" } else { "expired" };
        row(
            "Token",
            format!(
                "{verb} <span class=\"expires\" data-at=\"{at}\">{}</span>",
                relative(at, now)
            ),
        );
    }
    if let Some(e) = c.last_error.as_deref().or(c.unreadable.as_deref()) {
        row(
            "Last error",
            format!("<span class=\"error\">{}</span>", escape(e)),
        );
    }
    s.push_str("</dl>");
    if let Some(f) = flow {
        s.push_str(&flow_line(&c.id, &c.name, f, csrf));
    }
    s.push_str("<div class=\"actions\">");
    let running = flow.is_some_and(|f| !f.finished());
    let oauth = c.auth == "oauth";
    // The one action from the state, as `keyway list` offers it; an OAuth server may
    // always sign in again. A token server never offers authorization.
    let name = escape(&c.name);
    if c.enabled && (c.action == Action::Authorize || oauth) && !running {
        let label = if c.action == Action::Authorize {
            "Authorize"
        } else {
            "Re-authorize"
        };
        let primary = if c.action == Action::Authorize {
            " primary"
        } else {
            ""
        };
        s.push_str(&form_open(
            &format!("{base}/authorize"),
            csrf,
            "inline",
            "authorize",
        ));
        let _ = write!(
            s,
            "<button class=\"act-authorize{primary}\" type=\"submit\" aria-label=\"{label} {name}\">{label}</button></form>"
        );
    }
    let takes_token = matches!(c.auth.as_str(), "token" | "none" | "headers")
        && c.action != Action::Authorize
        && (c.action == Action::SetToken || c.auth == "token");
    if takes_token {
        let label = if c.state == State::NeedsToken {
            "Set token"
        } else {
            "Replace token"
        };
        s.push_str(&form_open(
            &format!("{base}/token"),
            csrf,
            "token-form",
            "token",
        ));
        let _ = write!(
            s,
            "<label for=\"token-{id}\">Access token</label>\
             <input id=\"token-{id}\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
             <button class=\"act-token{}\" type=\"submit\" aria-label=\"{label} of {name}\">{label}</button></form>",
            if c.action == Action::SetToken {
                " primary"
            } else {
                ""
            }
        );
    }
    if c.enabled {
        s.push_str(&form_open(
            &format!("{base}/tools"),
            csrf,
            "inline",
            "tools",
        ));
        let _ = write!(
            s,
            "<button class=\"act-tools\" type=\"submit\" formmethod=\"get\" aria-label=\"Show tools of {name}\">Show tools</button></form>"
        );
        s.push_str(&form_open(
            &format!("{base}/disable"),
            csrf,
            "inline",
            "disable",
        ));
        let _ = write!(
            s,
            "<button class=\"act-disable\" type=\"submit\" aria-label=\"Disable {name}\">Disable</button></form>"
        );
    } else {
        s.push_str(&form_open(
            &format!("{base}/enable"),
            csrf,
            "inline",
            "enable",
        ));
        let _ = write!(
            s,
            "<button class=\"act-enable primary\" type=\"submit\" aria-label=\"Enable {name}\">Enable</button></form>"
        );
    }
    s.push_str(&form_open(
        &format!("{base}/remove"),
        csrf,
        "inline remove-form",
        "remove",
    ));
    let _ = write!(
        s,
        "<label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label>\
         <button class=\"act-remove danger\" type=\"submit\" aria-label=\"Remove {name}\">Remove</button></form>"
    );
    s.push_str("</div></article>");
    s
}

/// Every card, or the empty state.
pub fn cards(cards: &[Card], flows: &BTreeMap<String, FlowView>, csrf: &str, now: u64) -> String {
    if cards.is_empty() {
        return "<p class=\"empty\">No servers yet. Add one with its URL.</p>".into();
    }
    cards
        .iter()
        .map(|c| card(c, flows.get(&c.id), csrf, now))
        .collect()
}

/// The whole page.
pub fn page(cards_html: &str, csrf: &str, store: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<meta name="color-scheme" content="light dark">
<title>keyway: MCP servers</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header class="top">
  <h1>MCP servers</h1>
  <p class="store">Store: <code>{store}</code></p>
  <button id="add-open" class="primary" type="button">Add server</button>
  <div id="notice" role="status" aria-live="polite"></div>
</header>
<main>
  <section id="cards" aria-label="Saved servers">{cards_html}</section>
  <noscript><p class="hint">Without JavaScript the list is read-only except for the buttons on each card; adding a server needs <code>keyway add URL</code>.</p></noscript>
</main>

<dialog id="add-dialog" aria-labelledby="add-title">
  <form id="add-form" method="dialog" novalidate>
    <h2 id="add-title">Add a server</h2>
    <label for="add-url">Server URL</label>
    <input id="add-url" name="url" type="url" required placeholder="https://mcp.example.com/mcp" autocomplete="url" spellcheck="false">
    <label for="add-name">Name</label>
    <input id="add-name" name="name" type="text" placeholder="from the URL" autocomplete="off" spellcheck="false">
    <label for="add-token">Access token <span class="optional">(optional)</span></label>
    <input id="add-token" name="token" type="password" autocomplete="off">
    <label for="add-transport">Transport</label>
    <select id="add-transport" name="transport">
      <option value="auto" selected>Automatic</option>
      <option value="http">Streamable HTTP</option>
      <option value="sse">Legacy SSE</option>
    </select>
    <div id="probe-result" class="probe" role="status" aria-live="polite"></div>
    <div class="dialog-actions">
      <button id="add-cancel" type="button" value="cancel">Cancel</button>
      <button id="add-save" type="button" disabled>Add</button>
      <button id="add-authorize" type="button" class="primary" hidden>Add &amp; Authorize</button>
    </div>
  </form>
</dialog>

<dialog id="tools-dialog" aria-labelledby="tools-title">
  <div class="dialog-body">
    <h2 id="tools-title">Tools</h2>
    <div id="tools-list" role="status" aria-live="polite"></div>
    <div class="dialog-actions"><button id="tools-close" type="button">Close</button></div>
  </div>
</dialog>

<dialog id="remove-dialog" aria-labelledby="remove-title">
  <div class="dialog-body">
    <h2 id="remove-title">Remove server?</h2>
    <p id="remove-text"></p>
    <div class="dialog-actions">
      <button id="remove-cancel" type="button">Cancel</button>
      <button id="remove-confirm" type="button" class="danger">Remove</button>
    </div>
  </div>
</dialog>
</body>
</html>
"#,
        csrf = escape(csrf),
        store = escape(store),
    )
}

/// A small page for answers to forms posted without JavaScript.
pub fn message(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · keyway</title>\
         <link rel=\"stylesheet\" href=\"/app.css\"></head><body><main class=\"message\"><h1>{t}</h1>\
         <p>{x}</p><p><a href=\"/\">Back to the servers</a></p></main></body></html>",
        t = escape(title),
        x = escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(auth: &str, state: State, action: Action) -> Card {
        Card {
            name: "<b>evil</b>".into(),
            id: "abc".into(),
            url: "https://x.example/mcp?a=\"1\"".into(),
            transport: "http".into(),
            enabled: true,
            auth: auth.into(),
            state,
            action,
            expires_at: Some(1_000 + 300),
            last_error: Some("<script>alert(1)</script>".into()),
            protocol: Some("2025-11-25".into()),
            tools: Some(3),
            unreadable: None,
        }
    }

    #[test]
    fn everything_from_a_server_is_escaped() {
        let html = card(
            &sample("oauth", State::NeedsAuth, Action::Authorize),
            None,
            "t",
            1_000,
        );
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>evil"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("in 5 min"));
    }

    #[test]
    fn a_token_server_never_offers_authorization() {
        for (state, action) in [
            (State::NeedsToken, Action::SetToken),
            (State::TokenRejected, Action::SetToken),
            (State::Token, Action::None),
        ] {
            let html = card(&sample("token", state, action), None, "t", 0);
            assert!(!html.contains("act-authorize"), "{state:?}");
            assert!(html.contains("act-token"), "{state:?}");
        }
        let html = card(
            &sample("oauth", State::Authorized, Action::None),
            None,
            "t",
            0,
        );
        assert!(html.contains("Re-authorize"));
        assert!(!html.contains("act-token"));
    }

    #[test]
    fn a_running_flow_hides_the_authorize_button() {
        let flow = FlowView::Authorizing {
            url: Some("https://as.example/authorize?x=1&y=2".into()),
            device: None,
        };
        let html = card(
            &sample("oauth", State::NeedsAuth, Action::Authorize),
            Some(&flow),
            "t",
            0,
        );
        assert!(!html.contains("act-authorize"));
        assert!(html.contains("x=1&amp;y=2"));
    }
}
