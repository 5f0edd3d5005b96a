//! Server-sent events: what changed in the user's mail, as the store tells IMAP IDLE, so the
//! page shows new mail without reloading.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_store::StoreEvent;
use tokio::sync::broadcast::error::RecvError;

use super::store;
use crate::AppState;
use crate::api::Call;

/// A comment now and then keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// The event a store event makes for this account, if any.
fn event_of(e: &StoreEvent, account: u64) -> Option<String> {
    match e {
        StoreEvent::Mailbox {
            account: a,
            mailbox,
            ..
        } if *a == account => Some(format!(
            "event: mailbox\ndata: {{\"folder\":{mailbox}}}\n\n"
        )),
        StoreEvent::MailboxList { account: a } if *a == account => {
            Some("event: folders\ndata: {}\n\n".into())
        }
        StoreEvent::Missed => Some("event: folders\ndata: {}\n\n".into()),
        _ => None,
    }
}

pub(in crate::api) async fn events(st: Arc<AppState>, c: Call) -> Response {
    let account = c.me().id;
    let mut rx = store(&st).subscribe();
    let mut shutdown = st.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        if tx
            .send(Bytes::from_static(b"retry: 3000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let out = tokio::select! {
                _ = shutdown.wait() => return,
                r = tokio::time::timeout(KEEPALIVE, rx.recv()) => match r {
                    Err(_) => Some(": keepalive\n\n".to_string()),
                    Ok(Ok(e)) => event_of(&e, account),
                    // Fell behind: anything may have changed.
                    Ok(Err(RecvError::Lagged(_))) => Some("event: folders\ndata: {}\n\n".into()),
                    Ok(Err(RecvError::Closed)) => return,
                },
            };
            if let Some(out) = out
                && tx.send(Bytes::from(out)).await.is_err()
            {
                return;
            }
        }
    });
    let mut r = (StatusCode::OK, stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A body fed by a task through a channel: the task ends when the client goes.
fn async_stream<F, Fut>(f: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(f(tx));
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Body::from_stream(s)
}
