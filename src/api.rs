//! The built-in HTTP endpoint: the approvals JSON API, the approvers' web page, `/metrics` and
//! `/healthz`. Transport (parsing, limits, TLS, timeouts) is `http::server`; this is routing,
//! authentication and rendering.
//!
//! Authentication: API calls carry `Authorization: Bearer <token>` where the token was minted with
//! `portcullis token issue --identity NAME --scope approve`. The web page logs in with the same
//! token once, then uses a session cookie (`HttpOnly; Secure; SameSite=Strict`) and a CSRF token
//! in every form. `/healthz` and `/metrics` need no token (they reveal no statement text).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::approval::{ApprovalRequest, Grant, State};
use crate::config::Identity;
use crate::http::parse::{Method, Request};
use crate::http::response::{html_escape as esc, json_string as js, Response};
use crate::http::server::Handler;
use crate::proto::pg::scram::ct_eq;
use crate::server::{lock, now_unix, Gateway};

/// Name of the web session cookie.
const COOKIE: &str = "portcullis_session";
/// Longest web session (also capped by the token's expiry).
const WEB_SESSION_SECS: u64 = 8 * 3600;
/// Web sessions kept at once; the oldest is dropped past this.
const MAX_WEB_SESSIONS: usize = 1024;
/// Requests listed per page / API answer.
const LIST_LIMIT: usize = 200;

struct WebSession {
    identity: String,
    token_id: String,
    csrf: String,
    expires_at: u64,
}

pub struct Api {
    gw: Arc<Gateway>,
    sessions: Mutex<HashMap<String, WebSession>>,
}

/// The request handler for `http::server::serve`.
pub fn handler(gw: Arc<Gateway>) -> Handler {
    let api = Arc::new(Api {
        gw,
        sessions: Mutex::new(HashMap::new()),
    });
    Arc::new(move |req: Request, peer: SocketAddr, tls: bool| {
        let api = api.clone();
        Box::pin(async move { api.handle(req, peer, tls).await })
    })
}

fn json_error(status: u16, message: &str) -> Response {
    Response::json(status, format!("{{\"error\":{}}}", js(message)))
}

fn request_json(r: &ApprovalRequest) -> String {
    let params: Vec<String> = r
        .params
        .iter()
        .map(|p| p.as_deref().map(js).unwrap_or_else(|| "null".into()))
        .collect();
    let approvals: Vec<String> = r
        .approvals
        .iter()
        .map(|(by, at)| format!("{{\"by\":{},\"at\":{at}}}", js(by)))
        .collect();
    let opt = |v: &Option<String>| v.as_deref().map(js).unwrap_or_else(|| "null".into());
    format!(
        "{{\"id\":{},\"state\":{},\"requester\":{},\"origin\":{},\"target\":{},\"session\":{},\"text\":{},\"params\":[{}],\"hash\":{},\"rule\":{},\"created_at\":{},\"expires_at\":{},\"required\":{},\"approvals\":[{}],\"decided_by\":{},\"reason\":{},\"decided_at\":{}}}",
        js(&r.id),
        js(r.state.as_str()),
        js(&r.requester),
        js(&r.origin),
        js(&r.target),
        js(&r.session),
        js(&r.text),
        params.join(","),
        js(&r.hash),
        js(&r.rule),
        r.created_at,
        r.expires_at,
        r.required,
        approvals.join(","),
        opt(&r.decided_by),
        opt(&r.reason),
        r.decided_at.map(|t| t.to_string()).unwrap_or_else(|| "null".into()),
    )
}

/// `?format=text`: what the CLI prints.
fn wants_text(req: &Request) -> bool {
    req.query("format") == Some("text")
}

/// One line per request, for `portcullis approvals list`.
fn request_line(r: &ApprovalRequest, now: u64) -> String {
    format!(
        "{}  {:<9}  {}/{}  {:<14} {:<14} {:<20} {:>5}  {}",
        r.id,
        r.state.as_str(),
        r.approvals.len(),
        r.required,
        r.requester,
        r.target,
        r.rule,
        age(now.saturating_sub(r.created_at)),
        clip(&r.text.replace(['\n', '\r'], " "), 80)
    )
}

/// Everything about one request, for `portcullis approvals show`.
fn request_text(r: &ApprovalRequest, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request:    {}", r.id);
    let _ = writeln!(out, "state:      {}", r.state.as_str());
    let _ = writeln!(out, "requester:  {} ({})", r.requester, r.origin);
    let _ = writeln!(out, "target:     {}", r.target);
    let _ = writeln!(out, "rule:       {}", r.rule);
    let _ = writeln!(out, "age:        {}", age(now.saturating_sub(r.created_at)));
    if r.state == State::Pending {
        let _ = writeln!(
            out,
            "times out:  in {}",
            age(r.expires_at.saturating_sub(now))
        );
    }
    let votes: Vec<&str> = r.approvals.iter().map(|(b, _)| b.as_str()).collect();
    let _ = writeln!(
        out,
        "approvals:  {}/{} {}",
        r.approvals.len(),
        r.required,
        votes.join(", ")
    );
    if let Some(by) = &r.decided_by {
        let _ = writeln!(out, "decided by: {by}");
    }
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "reason:     {reason}");
    }
    for (i, p) in r.params.iter().enumerate() {
        let _ = writeln!(
            out,
            "${}:         {}",
            i + 1,
            p.as_deref().unwrap_or("NULL")
        );
    }
    let _ = writeln!(out, "statement:\n{}", r.text);
    out
}

fn grant_json(g: &Grant) -> String {
    let by: Vec<String> = g.granted_by.iter().map(|b| js(b)).collect();
    format!(
        "{{\"id\":{},\"identity\":{},\"target\":{},\"text\":{},\"rule\":{},\"granted_by\":[{}],\"created_at\":{},\"expires_at\":{}}}",
        js(&g.id),
        js(&g.identity),
        js(&g.target),
        js(&g.text),
        js(&g.rule),
        by.join(","),
        g.created_at,
        g.expires_at
    )
}

fn random_hex(gw: &Gateway) -> String {
    gw.random_hex(32)
}

impl Api {
    async fn handle(&self, req: Request, _peer: SocketAddr, tls: bool) -> Response {
        let segments: Vec<&str> = req
            .path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (req.method, segments.as_slice()) {
            (Method::Get | Method::Head, ["healthz"]) => Response::text(200, "ok\n"),
            (Method::Get | Method::Head, ["metrics"]) => Response::new(200)
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .body(
                    self.gw
                        .metrics
                        .render(
                            self.gw.broker.pending_count(),
                            &self.gw.upstream_pool.kept_per_target(Instant::now()),
                        )
                        .into_bytes(),
                ),
            (_, ["api", ..]) => self.api(&req, &segments[1..]).await,
            (Method::Get | Method::Head, []) => self.page(&req, None),
            (Method::Get | Method::Head, ["requests", id]) => self.page(&req, Some(id)),
            (Method::Get | Method::Head, ["app.js"]) => Response::new(200)
                .header("Content-Type", "text/javascript; charset=utf-8")
                .body(APP_JS.as_bytes().to_vec()),
            (Method::Post, ["login"]) => self.login(&req, tls),
            (Method::Post, ["logout"]) => self.logout(&req),
            (Method::Post, ["requests", id, verb @ ("approve" | "deny")]) => {
                self.form_decide(&req, id, *verb == "approve").await
            }
            (Method::Post, ["grants", id, "revoke"]) => self.form_revoke(&req, id),
            _ => Response::text(404, "not found\n"),
        }
    }

    /// The approver behind `Authorization: Bearer ...`.
    fn bearer(&self, req: &Request) -> Result<Identity, Response> {
        let Some(secret) = req.bearer_token() else {
            return Err(json_error(
                401,
                "missing bearer token: mint one with `portcullis token issue --scope approve`",
            )
            .header("WWW-Authenticate", "Bearer"));
        };
        self.identity_of_token(secret)
            .map(|(identity, _)| identity)
            .ok_or_else(|| {
                json_error(401, "invalid, expired or revoked token")
                    .header("WWW-Authenticate", "Bearer")
            })
    }

    fn identity_of_token(
        &self,
        secret: &str,
    ) -> Option<(Identity, crate::identity::tokens::TokenInfo)> {
        let info = self
            .gw
            .tokens
            .find_bearer(secret, "approve", now_unix())
            .ok()??;
        let loaded = self.gw.loaded();
        let identity = loaded.policy.active_identity(&info.identity)?.clone();
        Some((identity, info))
    }

    async fn api(&self, req: &Request, rest: &[&str]) -> Response {
        let identity = match self.bearer(req) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let now = now_unix();
        match (req.method, rest) {
            (Method::Get, ["requests"]) => {
                let state = match req.query("state") {
                    None | Some("") | Some("all") => None,
                    Some(s) => match State::from_name(s) {
                        Some(st) => Some(st),
                        None => return json_error(
                            400,
                            "state must be pending, approved, denied, timed_out, abandoned or all",
                        ),
                    },
                };
                let list = self.gw.broker.list(state, LIST_LIMIT);
                if wants_text(req) {
                    let mut out = String::new();
                    for r in &list {
                        let _ = writeln!(out, "{}", request_line(r, now));
                    }
                    return Response::text(200, &out);
                }
                let list: Vec<String> = list.iter().map(request_json).collect();
                Response::json(200, format!("{{\"requests\":[{}]}}", list.join(",")))
            }
            (Method::Get, ["requests", id]) => match self.gw.broker.get(id) {
                Some(r) if wants_text(req) => Response::text(200, &request_text(&r, now)),
                Some(r) => Response::json(200, request_json(&r)),
                None => json_error(404, "no approval request has this id"),
            },
            (Method::Post, ["requests", id, verb @ ("approve" | "deny")]) => {
                let reason = req
                    .form()
                    .into_iter()
                    .find(|(k, _)| k == "reason")
                    .map(|(_, v)| v)
                    .filter(|v| !v.is_empty());
                match self.decide(id, &identity, *verb == "approve", reason).await {
                    Ok(r) if wants_text(req) => {
                        Response::text(200, &format!("{}\n", request_line(&r, now)))
                    }
                    Ok(r) => Response::json(200, request_json(&r)),
                    Err((status, msg)) if wants_text(req) => {
                        Response::text(status, &format!("{msg}\n"))
                    }
                    Err((status, msg)) => json_error(status, &msg),
                }
            }
            (Method::Get, ["grants"]) => {
                let list: Vec<String> = self.gw.broker.grants(now).iter().map(grant_json).collect();
                Response::json(200, format!("{{\"grants\":[{}]}}", list.join(",")))
            }
            (Method::Post, ["grants", id, "revoke"]) => {
                match self.gw.broker.revoke_grant(id, &identity.name, now) {
                    Some(g) => Response::json(200, grant_json(&g)),
                    None => json_error(404, "no active grant has this id"),
                }
            }
            _ => json_error(404, "no such API route"),
        }
    }

    async fn decide(
        &self,
        id: &str,
        approver: &Identity,
        approve: bool,
        reason: Option<String>,
    ) -> Result<ApprovalRequest, (u16, String)> {
        let broker = self.gw.broker.clone();
        let policy = self.gw.loaded().policy.clone();
        let (id, approver) = (id.to_string(), approver.clone());
        smol::unblock(move || broker.decide(&id, &approver, approve, reason, &policy, now_unix()))
            .await
            .map_err(|e| (e.http_status(), e.to_string()))
    }

    // ---- the web page ------------------------------------------------------------------------

    fn web_session(&self, req: &Request) -> Option<(Identity, String)> {
        let id = req.cookie(COOKIE)?;
        let now = now_unix();
        let mut sessions = lock(&self.sessions);
        let s = sessions.get(id)?;
        // The token must still be live (revoking it logs the approver out).
        let token_live = self
            .gw
            .tokens
            .list()
            .ok()
            .and_then(|l| l.into_iter().find(|t| t.id == s.token_id))
            .is_some_and(|t| !t.revoked && t.expires_at > now);
        if s.expires_at <= now || !token_live {
            sessions.remove(id);
            return None;
        }
        let identity = self
            .gw
            .loaded()
            .policy
            .active_identity(&s.identity)?
            .clone();
        Some((identity, s.csrf.clone()))
    }

    fn check_csrf(&self, req: &Request) -> Result<Identity, Response> {
        let Some((identity, csrf)) = self.web_session(req) else {
            return Err(Response::redirect("/"));
        };
        let sent = req
            .form()
            .into_iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v)
            .unwrap_or_default();
        if !ct_eq(sent.as_bytes(), csrf.as_bytes()) {
            return Err(Response::text(
                403,
                "missing or wrong CSRF token; reload the page and try again\n",
            ));
        }
        Ok(identity)
    }

    fn login(&self, req: &Request, tls: bool) -> Response {
        let token = req
            .form()
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let Some((identity, info)) = self.identity_of_token(token.trim()) else {
            return Response::html(
                401,
                page_shell(
                    "Sign in",
                    &login_form(Some("That token is not a live approver token.")),
                ),
            );
        };
        let id = random_hex(&self.gw);
        let csrf = random_hex(&self.gw);
        let now = now_unix();
        {
            let mut sessions = lock(&self.sessions);
            sessions.retain(|_, s| s.expires_at > now);
            if sessions.len() >= MAX_WEB_SESSIONS {
                if let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires_at)
                    .map(|(k, _)| k.clone())
                {
                    sessions.remove(&oldest);
                }
            }
            sessions.insert(
                id.clone(),
                WebSession {
                    identity: identity.name.clone(),
                    token_id: info.id.clone(),
                    csrf,
                    expires_at: (now + WEB_SESSION_SECS).min(info.expires_at),
                },
            );
        }
        // `Secure` is kept on plain HTTP too: browsers accept it on localhost, the only place
        // plain HTTP is allowed by default.
        let _ = tls;
        Response::redirect("/").header(
            "Set-Cookie",
            &format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={WEB_SESSION_SECS}"),
        )
    }

    fn logout(&self, req: &Request) -> Response {
        if self.check_csrf(req).is_ok() {
            if let Some(id) = req.cookie(COOKIE) {
                lock(&self.sessions).remove(id);
            }
        }
        Response::redirect("/").header(
            "Set-Cookie",
            &format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
        )
    }

    async fn form_decide(&self, req: &Request, id: &str, approve: bool) -> Response {
        let identity = match self.check_csrf(req) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let reason = req
            .form()
            .into_iter()
            .find(|(k, _)| k == "reason")
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty());
        match self.decide(id, &identity, approve, reason).await {
            Ok(_) => Response::redirect("/"),
            Err((status, msg)) => Response::html(
                status,
                page_shell(
                    "Not done",
                    &format!(
                        "<p class=err>{}</p><p><a href=\"/\">Back</a></p>",
                        esc(&msg)
                    ),
                ),
            ),
        }
    }

    fn form_revoke(&self, req: &Request, id: &str) -> Response {
        let identity = match self.check_csrf(req) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let _ = self.gw.broker.revoke_grant(id, &identity.name, now_unix());
        Response::redirect("/")
    }

    fn page(&self, req: &Request, only: Option<&str>) -> Response {
        let Some((identity, csrf)) = self.web_session(req) else {
            return Response::html(200, page_shell("Sign in", &login_form(None)));
        };
        let now = now_unix();
        let mut body = String::with_capacity(8192);
        let _ = write!(
            body,
            "<header><b>portcullis</b> approvals <span class=who>signed in as {}</span><form method=post action=/logout class=inline><input type=hidden name=csrf value=\"{csrf}\"><button>Sign out</button></form></header>",
            esc(&identity.name)
        );
        let pending: Vec<ApprovalRequest> = match only {
            Some(id) => self.gw.broker.get(id).into_iter().collect(),
            None => self.gw.broker.list(Some(State::Pending), LIST_LIMIT),
        };
        let _ = write!(
            body,
            "<h2 id=pending>{}</h2>",
            if only.is_some() {
                "Request"
            } else {
                "Waiting for approval"
            }
        );
        if pending.is_empty() {
            body.push_str("<p class=muted>Nothing is waiting.</p>");
        }
        for r in &pending {
            request_card(&mut body, r, &identity, &csrf, now);
        }
        if only.is_none() {
            body.push_str("<h2>Recent decisions</h2><table><tr><th>request</th><th>state</th><th>by</th><th>requester</th><th>statement</th></tr>");
            for r in self
                .gw
                .broker
                .list(None, 50)
                .iter()
                .filter(|r| r.state != State::Pending)
                .take(20)
            {
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/requests/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(r.state.as_str()),
                    esc(r.decided_by.as_deref().unwrap_or("")),
                    esc(&r.requester),
                    esc(&clip(&r.text, 120)),
                    id = esc(&r.id)
                );
            }
            body.push_str("</table><h2>Active grants</h2><table><tr><th>grant</th><th>identity</th><th>target</th><th>statement</th><th>ends in</th><th></th></tr>");
            for g in self.gw.broker.grants(now) {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td><form method=post action=\"/grants/{}/revoke\"><input type=hidden name=csrf value=\"{csrf}\"><button>Revoke</button></form></td></tr>",
                    esc(&g.id),
                    esc(&g.identity),
                    esc(&g.target),
                    esc(&clip(&g.text, 120)),
                    age(g.expires_at.saturating_sub(now)),
                    esc(&g.id)
                );
            }
            body.push_str("</table>");
        }
        body.push_str("<script src=\"/app.js\"></script>");
        Response::html(200, page_shell("Approvals", &body))
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

fn request_card(out: &mut String, r: &ApprovalRequest, me: &Identity, csrf: &str, now: u64) {
    let _ = write!(
        out,
        "<section class=card id=\"{id}\"><div class=meta><b>{id}</b> · <b>{}</b> on <b>{}</b> · rule <b>{}</b> · {} · {}</div><pre>{}</pre>",
        esc(&r.requester),
        esc(&r.target),
        esc(&r.rule),
        esc(r.state.as_str()),
        if r.state == State::Pending { format!("waiting {}, times out in {}", age(now.saturating_sub(r.created_at)), age(r.expires_at.saturating_sub(now))) } else { String::new() },
        esc(&r.text),
        id = esc(&r.id)
    );
    if !r.params.is_empty() {
        out.push_str("<div class=meta>parameters: ");
        for (i, p) in r.params.iter().enumerate() {
            let _ = write!(
                out,
                "${} = <code>{}</code> ",
                i + 1,
                esc(p.as_deref().unwrap_or("NULL"))
            );
        }
        out.push_str("</div>");
    }
    let _ = write!(
        out,
        "<div class=meta>origin: {} · approvals {}/{}{}</div>",
        esc(&r.origin),
        r.approvals.len(),
        r.required,
        r.decided_by
            .as_deref()
            .map(|b| format!(" · decided by {}", esc(b)))
            .unwrap_or_default()
    );
    if r.state == State::Pending {
        if r.requester == me.name {
            out.push_str(
                "<p class=muted>This is your own request; another approver must decide.</p>",
            );
        } else {
            let _ = write!(
                out,
                "<div class=actions><form method=post action=\"/requests/{id}/approve\"><input type=hidden name=csrf value=\"{csrf}\"><button class=ok>Approve</button></form><form method=post action=\"/requests/{id}/deny\"><input type=hidden name=csrf value=\"{csrf}\"><input name=reason placeholder=\"reason\" aria-label=\"deny reason\"><button class=no>Deny</button></form></div>",
                id = esc(&r.id)
            );
        }
    }
    out.push_str("</section>");
}

fn login_form(error: Option<&str>) -> String {
    format!(
        "<header><b>portcullis</b> approvals</header><h2>Sign in</h2>{}<form method=post action=/login><label>Approver token<br><input type=password name=token autocomplete=off required></label> <button>Sign in</button></form><p class=muted>Mint one with <code>portcullis token issue --identity NAME --scope approve</code>.</p>",
        error.map(|e| format!("<p class=err>{}</p>", esc(e))).unwrap_or_default()
    )
}

fn page_shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\"><title>{} · portcullis</title><style>{CSS}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 1rem 3rem;color:#1d2330}\
header{display:flex;gap:1rem;align-items:center;padding:.8rem 0;border-bottom:1px solid #d8dce5;flex-wrap:wrap}\
.who{margin-left:auto;color:#556}.inline{display:inline}\
.card{border:1px solid #d8dce5;border-radius:8px;padding:.8rem;margin:.8rem 0;background:#fafbfd}\
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #e3e6ee;padding:.6rem;border-radius:6px;font-size:14px}\
.meta{color:#445;font-size:13px;margin:.2rem 0}.muted{color:#778}.err{color:#a01515;font-weight:600}\
.actions{display:flex;gap:.6rem;flex-wrap:wrap;margin-top:.5rem}.actions form{display:flex;gap:.4rem}\
button{font:inherit;padding:.35rem .9rem;border-radius:6px;border:1px solid #99a;background:#fff;cursor:pointer}\
button.ok{background:#1b7f3b;color:#fff;border-color:#1b7f3b}button.no{background:#a01515;color:#fff;border-color:#a01515}\
input{font:inherit;padding:.3rem .5rem;border:1px solid #99a;border-radius:6px}\
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #e3e6ee;padding:.3rem;text-align:left;vertical-align:top}";

/// Live refresh: reload the page every 5 seconds unless the approver is typing a reason.
const APP_JS: &str = "setInterval(function(){var a=document.activeElement;if(!a||a.tagName!=='INPUT'){location.reload();}},5000);\n";
