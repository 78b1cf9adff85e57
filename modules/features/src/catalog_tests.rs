use super::*;
use mlserve_proto::features::Field;

fn entity() -> Entity {
    Entity {
        name: "driver".into(),
        join_keys: vec!["driver_id".into()],
        value_type: "int64".into(),
        ..Default::default()
    }
}

fn view(fields: &[(&str, &str)]) -> FeatureView {
    FeatureView {
        name: "driver_stats".into(),
        entities: vec!["driver".into()],
        fields: fields
            .iter()
            .map(|(n, t)| Field {
                name: n.to_string(),
                dtype: t.to_string(),
            })
            .collect(),
        ttl_secs: 3600,
        online: true,
        ..Default::default()
    }
}

fn applied(request: ApplyRequest) -> Catalog {
    let mut catalog = Catalog::default();
    for change in plan(&Catalog::default(), request, &[]).unwrap() {
        match change.kind {
            ENTITY => {
                catalog
                    .entities
                    .insert(change.name, serde_json::from_str(&change.spec).unwrap());
            }
            _ => {
                catalog
                    .views
                    .insert(change.name, serde_json::from_str(&change.spec).unwrap());
            }
        }
    }
    catalog
}

fn base() -> Catalog {
    applied(ApplyRequest {
        entities: vec![entity()],
        feature_views: vec![view(&[("rate", "float64"), ("trips", "int64")])],
    })
}

#[test]
fn compatible_changes_bump_the_version_and_identical_ones_do_not() {
    let catalog = base();
    let mut more = view(&[("rate", "float64"), ("trips", "int64"), ("new", "string")]);
    more.tags.insert("team".into(), "risk".into());
    let changes = plan(
        &catalog,
        ApplyRequest {
            entities: vec![entity()],
            feature_views: vec![more],
        },
        &[],
    )
    .unwrap();
    assert_eq!((changes[0].verb, changes[0].version), ("unchanged", 1));
    assert_eq!((changes[1].verb, changes[1].version), ("updated", 2));
}

#[test]
fn incompatible_changes_are_conflicts_with_clear_messages() {
    let catalog = base();
    let retyped = plan(
        &catalog,
        ApplyRequest {
            feature_views: vec![view(&[("rate", "string"), ("trips", "int64")])],
            ..Default::default()
        },
        &[],
    );
    let err = retyped.err().unwrap();
    assert!(matches!(err, FeaturesError::Conflict(_)));
    assert!(
        err.to_string()
            .contains("'rate' cannot change type (float64 -> string)"),
        "{err}"
    );

    let removed_in_use = plan(
        &catalog,
        ApplyRequest {
            feature_views: vec![view(&[("rate", "float64")])],
            ..Default::default()
        },
        &["driver_stats:trips".to_string()],
    );
    assert!(removed_in_use
        .err()
        .unwrap()
        .to_string()
        .contains("used by a pipeline"));
    let removed_unused = plan(
        &catalog,
        ApplyRequest {
            feature_views: vec![view(&[("rate", "float64")])],
            ..Default::default()
        },
        &[],
    );
    assert_eq!(removed_unused.unwrap()[0].version, 2);

    let mut rekeyed = entity();
    rekeyed.join_keys = vec!["id".into()];
    let err = plan(
        &catalog,
        ApplyRequest {
            entities: vec![rekeyed],
            ..Default::default()
        },
        &[],
    )
    .err()
    .unwrap();
    assert!(matches!(err, FeaturesError::Conflict(_)), "{err}");
}

#[test]
fn invalid_definitions_are_bad_requests() {
    let mut bad = view(&[("rate", "decimal")]);
    let err = plan(
        &Catalog::default(),
        ApplyRequest {
            entities: vec![entity()],
            feature_views: vec![bad.clone()],
        },
        &[],
    )
    .err()
    .unwrap();
    assert!(matches!(err, FeaturesError::Invalid(_)), "{err}");
    bad.fields[0].dtype = "float64".into();
    bad.entities = vec!["nobody".into()];
    let err = plan(
        &Catalog::default(),
        ApplyRequest {
            feature_views: vec![bad],
            ..Default::default()
        },
        &[],
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("unknown entity 'nobody'"), "{err}");
}

#[test]
fn toml_definitions_parse() {
    let text = include_str!("../tests/data/drivers.toml");
    let request = parse_definitions(text, "defs.toml").unwrap();
    assert_eq!(request.entities[0].join_keys, vec!["driver_id"]);
    assert_eq!(request.feature_views[0].fields[0].dtype, "float64");
    assert!(parse_definitions("[[entity]]\nname = 1\n", "x.toml").is_err());
}
