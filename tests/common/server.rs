//! A local HTTP server on loopback for tests that need one (image hosts, redirects, slow or broken
//! servers), counting the requests it sees.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::Router;

#[derive(Clone)]
pub struct TestServer {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl TestServer {
    /// Serve `router` on 127.0.0.1, any port.
    pub async fn start(router: Router) -> TestServer {
        Self::start_on("127.0.0.1:0", router).await.unwrap()
    }

    /// Serve `router` on `bind` (port 0 = any). `None` when the address cannot be bound here
    /// (e.g. no IPv6 loopback): an honest skip of that part, a failure under CI.
    pub async fn start_on(bind: &str, router: Router) -> Option<TestServer> {
        let listener = match tokio::net::TcpListener::bind(bind).await {
            Ok(l) => l,
            Err(e) => {
                super::skip_unless_ci(
                    &format!("the part of this test that needs {bind}"),
                    &format!("cannot bind it: {e}"),
                );
                return None;
            }
        };
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(req).await
            }
        }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Some(TestServer { addr, hits })
    }

    /// `http://<addr>` (an IPv6 address in brackets).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
