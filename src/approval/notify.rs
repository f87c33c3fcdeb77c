//! Webhook notifications for new approval requests: a JSON POST (with a Slack-compatible `text`
//! field) to each URL in `[gateway] webhooks`, over HTTPS with rustls.
//!
//! Never on the data path: the proxy hands a request to a bounded queue (`try_send`, dropped with
//! a log line when full) and one background thread delivers, with a few retries and backoff.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::ApprovalRequest;
use crate::http::client;
use crate::http::response::json_string as js;

/// Requests waiting to be announced; more are dropped (the page and API still show them).
const QUEUE: usize = 256;
/// Attempts per URL, with 1 s, 2 s, 4 s between them.
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Notifier {
    tx: Option<smol::channel::Sender<String>>,
}

/// The JSON body for one request.
pub fn payload(r: &ApprovalRequest, public_url: Option<&str>) -> String {
    let link = public_url
        .map(|u| format!("{}/requests/{}", u.trim_end_matches('/'), r.id))
        .unwrap_or_default();
    let mut statement: String = r.text.chars().take(500).collect();
    if statement.len() < r.text.len() {
        statement.push('…');
    }
    let text = format!(
        "portcullis: {} wants to run on {} (rule {}): {}{}{}",
        r.requester,
        r.target,
        r.rule,
        statement,
        if link.is_empty() {
            ""
        } else {
            " — approve: "
        },
        link
    );
    format!(
        "{{\"text\":{},\"id\":{},\"requester\":{},\"origin\":{},\"target\":{},\"rule\":{},\"statement\":{},\"url\":{},\"expires_at\":{}}}",
        js(&text),
        js(&r.id),
        js(&r.requester),
        js(&r.origin),
        js(&r.target),
        js(&r.rule),
        js(&r.text),
        js(&link),
        r.expires_at
    )
}

impl Notifier {
    /// A notifier that sends nothing (no webhooks configured).
    pub fn disabled() -> Notifier {
        Notifier { tx: None }
    }

    /// Start the delivery thread for `urls`.
    pub fn start(urls: Vec<String>, tls: Option<Arc<ClientConfig>>) -> Notifier {
        if urls.is_empty() {
            return Notifier::disabled();
        }
        let (tx, rx) = smol::channel::bounded::<String>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("portcullis-webhooks".into())
            .spawn(move || {
                smol::block_on(async move {
                    while let Ok(body) = rx.recv().await {
                        for url in &urls {
                            deliver(url, &body, tls.clone()).await;
                        }
                    }
                })
            });
        match spawned {
            Ok(_) => Notifier { tx: Some(tx) },
            Err(e) => {
                eprintln!("portcullis: webhooks disabled: cannot start their thread: {e}");
                Notifier::disabled()
            }
        }
    }

    /// Queue a notification; never waits.
    pub fn notify(&self, body: String) {
        if let Some(tx) = &self.tx {
            if tx.try_send(body).is_err() {
                eprintln!("portcullis: webhook queue full; a notification was dropped");
            }
        }
    }
}

async fn deliver(url: &str, body: &str, tls: Option<Arc<ClientConfig>>) {
    let Ok(parsed) = client::parse_url(url) else {
        return;
    };
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let headers = [("Content-Type", "application/json")];
        match client::request(
            "POST",
            &parsed,
            &headers,
            body.as_bytes(),
            tls.clone(),
            TIMEOUT,
        )
        .await
        {
            Ok((status, _)) if (200..300).contains(&status) => return,
            Ok((status, _)) if (400..500).contains(&status) && status != 429 => {
                eprintln!(
                    "portcullis: webhook {}: refused with {status}; not retried",
                    parsed.host
                );
                return;
            }
            Ok((status, _)) => eprintln!(
                "portcullis: webhook {} attempt {attempt}: status {status}",
                parsed.host
            ),
            Err(e) => eprintln!("portcullis: webhook {} attempt {attempt}: {e}", parsed.host),
        }
        if attempt < ATTEMPTS {
            smol::Timer::after(wait).await;
            wait *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::State;

    #[test]
    fn payload_has_slack_text_and_the_fields() {
        let r = ApprovalRequest {
            id: "apr_000000000001".into(),
            requester: "ci-bot".into(),
            origin: "nightly \"job\"".into(),
            target: "app-db".into(),
            session: "s".into(),
            text: "delete from t where id = 1".into(),
            params: vec![],
            hash: "0".repeat(64),
            fingerprint: "0".repeat(64),
            rule: "writes".into(),
            created_at: 1,
            expires_at: 601,
            state: State::Pending,
            required: 1,
            approvals: vec![],
            decided_by: None,
            reason: None,
            decided_at: None,
        };
        let p = payload(&r, Some("https://bastion:8443/"));
        assert!(p.starts_with("{\"text\":\"portcullis: ci-bot wants to run on app-db (rule writes): delete from t where id = 1"));
        assert!(p.contains("approve: https://bastion:8443/requests/apr_000000000001"));
        assert!(p.contains("\"origin\":\"nightly \\\"job\\\"\""));
        assert!(p.contains("\"expires_at\":601}"));
    }
}
