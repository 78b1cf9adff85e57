use super::*;
use crate::routing::tests::FakeInference;

fn options(max: usize) -> EndpointOptions {
    EndpointOptions {
        connect_timeout: Duration::from_millis(200),
        eject_for: Duration::from_secs(60),
        max_concurrency: max,
        internal_token: None,
    }
}

fn local(name: &str, max: usize) -> Arc<Endpoint> {
    let client = InferenceClient::local(FakeInference::new(name));
    let mut e = Endpoint::local(client, max);
    e.name = name.into();
    Arc::new(e)
}

#[test]
fn targets_parse() {
    assert_eq!(
        Target::parse("http://10.0.0.1:8001").unwrap(),
        Target::Static("http://10.0.0.1:8001".into())
    );
    assert_eq!(
        Target::parse("inference-0:8001").unwrap(),
        Target::Static("http://inference-0:8001".into())
    );
    assert_eq!(
        Target::parse("dns:///inference.ns.svc:8001").unwrap(),
        Target::Dns {
            host: "inference.ns.svc".into(),
            port: 8001
        }
    );
    for bad in ["", "dns:///nohost", "dns:///:1", "dns:///h:port"] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn least_outstanding_then_capacity_then_health() {
    let (a, b) = (local("a", 2), local("b", 2));
    let set = EndpointSet::new(vec![a.clone(), b.clone()], options(2));
    let first = set.pick(&[]).unwrap();
    let second = set.pick(&[]).unwrap();
    assert_ne!(
        first.endpoint.name, second.endpoint.name,
        "the idle endpoint is preferred"
    );
    let _third = set.pick(&[]).unwrap();
    let _fourth = set.pick(&[]).unwrap();
    assert_eq!(set.pick(&[]).err(), Some(NoEndpoint::AtCapacity));
    drop(first);
    assert!(set.pick(&[]).is_ok(), "a released slot is reusable");

    let (a, b) = (local("a", 10), local("b", 10));
    let set = EndpointSet::new(vec![a.clone(), b.clone()], options(10));
    a.eject(Duration::from_secs(60), "test");
    for _ in 0..5 {
        assert_eq!(
            set.pick(&[]).unwrap().endpoint.name,
            "b",
            "ejected endpoints are skipped"
        );
    }
    assert_eq!(
        set.pick(&["b".to_string()]).unwrap().endpoint.name,
        "a",
        "all ejected: still try rather than fail"
    );
    a.restore();
    assert!(a.healthy());
    assert_eq!(
        EndpointSet::new(vec![], options(1)).pick(&[]).err(),
        Some(NoEndpoint::Empty)
    );
}

#[tokio::test]
async fn replace_keeps_known_endpoints_and_dns_resolves() {
    let set = EndpointSet::new(vec![], options(4));
    set.replace(&[
        "http://127.0.0.1:1".to_string(),
        "http://127.0.0.1:2".to_string(),
    ]);
    let before = set.snapshot();
    set.replace(&[
        "http://127.0.0.1:2".to_string(),
        "http://127.0.0.1:3".to_string(),
    ]);
    let after = set.snapshot();
    assert_eq!(after.len(), 2);
    assert!(
        Arc::ptr_eq(&before[1], &after[0]),
        "the endpoint that stayed is the same object"
    );
    let uris = resolve(&[
        Target::Dns {
            host: "localhost".into(),
            port: 8001,
        },
        Target::Static("http://x:1".into()),
    ])
    .await;
    assert!(
        uris.iter().any(|u| u == "http://127.0.0.1:8001"),
        "{uris:?}"
    );
    assert_eq!(uris.last().map(String::as_str), Some("http://x:1"));
}
