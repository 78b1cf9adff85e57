//! A point-in-time training set written as Parquet: the column types from
//! the catalog, the rows from `GetHistoricalFeatures`. Used by the CLI
//! (`mlserve features historical --out x.parquet`) and the training role's
//! `features.training_set` step, through the client (local or remote).

use std::path::PathBuf;

use futures_util::StreamExt;
use mlserve_proto::features::{
    EntityRow, FeatureService, FeaturesClient, GetHistoricalFeaturesRequest, HistoricalRow,
    ListRequest,
};
use mlserve_proto::{CallContext, ServiceResult};

use crate::{export, parquet_io};

/// The Parquet columns of a training set: `event_ts`, the join keys, then
/// the features, each typed from the catalog (`string` when unknown).
pub async fn parquet_columns(
    client: &FeaturesClient,
    ctx: CallContext,
    keys: &[String],
    features: &[String],
) -> ServiceResult<Vec<(String, String)>> {
    let entities = client
        .list_entities(ctx.clone(), ListRequest {})
        .await?
        .entities;
    let views = client
        .list_feature_views(ctx, ListRequest {})
        .await?
        .feature_views;
    let mut columns = vec![("event_ts".to_string(), "timestamp".to_string())];
    for key in keys {
        let dtype = entities
            .iter()
            .find(|e| e.join_keys.contains(key))
            .map_or("string", |e| e.value_type.as_str());
        columns.push((key.clone(), dtype.to_string()));
    }
    for reference in features {
        let (view, feature) = reference.split_once(':').unwrap_or(("", reference));
        let dtype = views
            .iter()
            .filter(|v| v.name == view)
            .flat_map(|v| v.fields.iter())
            .find(|f| f.name == feature)
            .map_or("string", |f| f.dtype.as_str());
        columns.push((reference.clone(), dtype.to_string()));
    }
    Ok(columns)
}

/// Retrieves `features` as of each entity row and writes them to `path` as
/// Parquet; returns the number of rows written. `progress` is called per row.
pub async fn write_parquet_file(
    client: &FeaturesClient,
    ctx: CallContext,
    features: Vec<String>,
    entities: Vec<EntityRow>,
    path: PathBuf,
    progress: impl Fn(u64),
) -> Result<u64, String> {
    let keys = export::key_columns(
        entities
            .first()
            .map(|r| HistoricalRow {
                keys: r.keys.clone(),
                ..Default::default()
            })
            .as_ref(),
    );
    let columns = parquet_columns(client, ctx.clone(), &keys, &features)
        .await
        .map_err(|e| e.message)?;
    let mut stream = client
        .get_historical_features(ctx, GetHistoricalFeaturesRequest { features, entities })
        .await
        .map_err(|e| e.message)?;
    let mut table = Vec::new();
    while let Some(row) = stream.next().await {
        table.push(export::parquet_cells(&row.map_err(|e| e.message)?, &keys));
        progress(table.len() as u64);
    }
    let written = table.len() as u64;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot create '{}': {e}", path.display()))?;
        parquet_io::write_parquet(std::io::BufWriter::new(file), &columns, &table)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(written)
}
