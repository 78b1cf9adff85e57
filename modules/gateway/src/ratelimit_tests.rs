use super::*;

#[test]
fn decisions_report_the_bucket() {
    let limit = Limit::new(2.0, 4.0);
    let (d, left) = decide(limit, 4.0);
    assert!(d.allowed);
    assert_eq!((d.limit, d.remaining, d.reset_secs), (4, 3, 1));
    assert_eq!(left, 3.0);
    let (d, _) = decide(limit, 0.5);
    assert!(!d.allowed);
    assert_eq!((d.remaining, d.retry_after_secs, d.reset_secs), (0, 1, 2));
    assert_eq!(
        Limit::new(3.0, 0.0).burst,
        3.0,
        "burst defaults to the rate"
    );
}

#[tokio::test(start_paused = true)]
async fn local_bucket_bursts_then_refills() {
    let limiter = RateLimiter::local();
    let limit = Limit::new(10.0, 5.0);
    let mut allowed = 0;
    for _ in 0..8 {
        if limiter.check("k", limit).await.unwrap().unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5, "the burst, then refusals");
    let refused = limiter.check("k", limit).await.unwrap().unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after_secs, 1);
    assert!(
        limiter
            .check("other", limit)
            .await
            .unwrap()
            .unwrap()
            .allowed,
        "buckets are per key"
    );
    tokio::time::advance(Duration::from_millis(250)).await;
    let d = limiter.check("k", limit).await.unwrap().unwrap();
    assert!(d.allowed, "2.5 tokens came back");
    assert_eq!(d.remaining, 1);
    assert!(
        limiter
            .check("k", Limit::new(0.0, 0.0))
            .await
            .unwrap()
            .is_none(),
        "rate 0 is unlimited"
    );
}

fn redis_url() -> String {
    std::env::var("MLSERVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn redis_counters_are_shared_between_gateways() {
    let a = RateLimiter::redis(&redis_url(), FailureMode::Closed).unwrap();
    let b = RateLimiter::redis(&redis_url(), FailureMode::Closed).unwrap();
    let key = format!("test-{}-{}", std::process::id(), fastrand::u64(..));
    // A slow refill so the test cannot race it.
    let limit = Limit::new(0.01, 6.0);
    let mut allowed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let d = limiter
            .check(&key, limit)
            .await
            .expect("redis reachable")
            .unwrap();
        if d.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 6, "two gateways share one bucket of 6");
    let d = a.check(&key, limit).await.unwrap().unwrap();
    assert!(!d.allowed);
    assert_eq!((d.limit, d.remaining), (6, 0));
    assert!(d.retry_after_secs >= 99);
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{closed_port}");
    let limit = Limit::new(1.0, 1.0);
    let open = RateLimiter::redis(&url, FailureMode::Open).unwrap();
    assert_eq!(
        open.check("k", limit).await.unwrap(),
        None,
        "fail open: no limit applied"
    );
    let closed = RateLimiter::redis(&url, FailureMode::Closed).unwrap();
    let err = closed.check("k", limit).await.unwrap_err();
    assert_eq!(err.code(), mlserve_proto::ErrorCode::Unavailable);
}
