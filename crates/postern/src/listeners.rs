//! Which protocol runs on which listener.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_config::ListenerKind;
use postern_imap::ImapServer;
use postern_pop3::Pop3Server;
use postern_smtp::{SmtpServer, SmtpSettings, proto::Role};
use tokio::net::TcpListener;

use crate::serve::Services;

pub fn spawn(kind: ListenerKind, addr: SocketAddr, listener: TcpListener, s: Services) {
    tracing::info!(listener = kind.name(), %addr, "listening");
    let tracker = s.tracker.clone();
    match kind {
        ListenerKind::Smtp | ListenerKind::Submission | ListenerKind::Submissions => {
            let server = Arc::new(SmtpServer {
                config: s.config.clone(),
                pregreet_passed: Default::default(),
                settings: SmtpSettings {
                    role: if kind == ListenerKind::Smtp {
                        Role::Mx
                    } else {
                        Role::Submission
                    },
                    implicit_tls: kind.implicit_tls(),
                },
                store: s.store.clone(),
                directory: s.directory.clone(),
                tls: s.tls.clone(),
                spool_dir: s.spool_dir.clone(),
                shutdown: s.shutdown.clone(),
                trust: s.trust.clone(),
                abuse: s.abuse.clone(),
                ingest: s.ingest.clone(),
            });
            tokio::spawn(server.run(listener, tracker));
        }
        ListenerKind::Pop3 | ListenerKind::Pop3s => {
            let server = Arc::new(Pop3Server {
                config: s.config.clone(),
                implicit_tls: kind.implicit_tls(),
                store: s.store.clone(),
                directory: s.directory.clone(),
                tls: s.tls.clone(),
                shutdown: s.shutdown.clone(),
            });
            tokio::spawn(server.run(listener, tracker));
        }
        ListenerKind::Imap | ListenerKind::Imaps => {
            let server = Arc::new(ImapServer {
                config: s.config.clone(),
                implicit_tls: kind.implicit_tls(),
                store: s.store.clone(),
                directory: s.directory.clone(),
                tls: s.tls.clone(),
                shutdown: s.shutdown.clone(),
                spool_dir: s.spool_dir.clone(),
            });
            tokio::spawn(server.run(listener, tracker));
        }
        ListenerKind::ManageSieve => {
            let server = Arc::new(postern_managesieve::ManageSieveServer {
                config: s.config.clone(),
                store: s.store.clone(),
                sieve: s.directory.sieve.clone(),
                directory: s.directory.clone(),
                tls: s.tls.clone(),
                shutdown: s.shutdown.clone(),
            });
            tokio::spawn(server.run(listener, tracker));
        }
        ListenerKind::Http | ListenerKind::Https => {
            let server = Arc::new(postern_http::HttpServer {
                config: s.config.clone(),
                directory: s.directory.clone(),
                tls: s.tls.clone(),
                implicit_tls: kind.implicit_tls(),
                shutdown: s.shutdown.clone(),
                hooks: s.hooks.clone(),
            });
            tokio::spawn(server.run(listener, tracker));
        }
    }
}
