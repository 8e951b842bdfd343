//! The HTTP endpoints answer, and /metrics exports what the reconcile records.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use pgsteward_operator::{
    metrics::Metrics,
    server::{ServerState, serve_on},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    (code, response)
}

#[tokio::test]
async fn metrics_healthz_and_readyz_answer() {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(
        listener,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    ));

    metrics.reconciled(std::time::Duration::from_millis(40), None);
    metrics.reconciled(std::time::Duration::from_millis(90), Some("invalid_spec"));
    metrics.status_write("written");
    metrics.set_conditions("shop/db", Some(vec![("Ready".into(), "True".into())]));

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "pgsteward_reconciliations_total 2",
        "pgsteward_reconcile_duration_seconds_count 2",
        "pgsteward_reconcile_errors_total{error=\"invalid_spec\"} 1",
        "pgsteward_status_writes_total{outcome=\"written\"} 1",
        "pgsteward_instances{condition=\"Ready\",status=\"True\"} 1",
    ] {
        assert!(body.contains(line), "/metrics lacks {line:?}:\n{body}");
    }
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    metrics.set_conditions("shop/db", None);
    let (_, body) = get(addr, "/metrics").await;
    assert!(
        !body.contains("pgsteward_instances{"),
        "a deleted instance is no longer counted:\n{body}"
    );
}
