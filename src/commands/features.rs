//! `mlserve features ...`: the feature store, through a running features
//! role's gRPC API (`--endpoint`, default this configuration's gRPC port on
//! 127.0.0.1), so it works with every online store.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mlserve_common::Config;
use mlserve_features::{catalog, export, files, parquet_io, values};
use mlserve_proto::features::*;
use mlserve_proto::rpc::GrpcOptions;
use mlserve_proto::CallContext;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

/// `mlserve features` arguments.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// gRPC endpoint of the features role (default http://127.0.0.1:<server.grpc_port>).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[command(subcommand)]
    command: FeaturesCommand,
}

/// The `mlserve features` subcommands.
#[derive(Debug, Subcommand)]
enum FeaturesCommand {
    /// Apply the entity and feature view definitions of a TOML file or of every .toml file of a directory.
    Apply {
        /// A file or a directory.
        path: PathBuf,
    },
    /// List entities and feature views.
    List,
    /// Append a CSV file's rows to a view's offline store.
    Ingest {
        /// The feature view.
        view: String,
        /// CSV file with a header: join keys, the timestamp column, fields.
        file: PathBuf,
        /// Name of the event-time column (microseconds or RFC 3339).
        #[arg(long, default_value = "event_timestamp")]
        timestamp_column: String,
        /// Rows per request.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
    },
    /// Copy the latest offline rows in a time range to the online store.
    Materialize {
        /// Start (microseconds or RFC 3339).
        start: String,
        /// End (microseconds or RFC 3339).
        end: String,
        /// Views (default: every online view).
        #[arg(long = "view")]
        views: Vec<String>,
    },
    /// Materialize each view since its previous incremental run, up to END (default now).
    MaterializeIncremental {
        /// End (microseconds or RFC 3339); default now.
        end: Option<String>,
        /// Views (default: every online view).
        #[arg(long = "view")]
        views: Vec<String>,
    },
    /// Print online features for entities as JSON.
    GetOnline {
        /// `view:feature` references.
        #[arg(long = "feature", required = true)]
        features: Vec<String>,
        /// Entities as JSON objects of join keys, e.g. '{"driver_id": 1001}'.
        #[arg(long = "entity", required = true)]
        entities: Vec<String>,
    },
    /// Point-in-time training set: entity rows from a CSV (join keys + timestamp column).
    History {
        /// `view:feature` references.
        #[arg(long = "feature", required = true)]
        features: Vec<String>,
        /// CSV of entity rows.
        #[arg(long)]
        entities: PathBuf,
        /// Name of the entity rows' time column.
        #[arg(long, default_value = "event_timestamp")]
        timestamp_column: String,
        /// Output file: .csv, .json or .jsonl (newline-delimited JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs one `mlserve features` subcommand.
pub async fn run(args: FeaturesArgs, config: &Config) -> Result<()> {
    let endpoint = args
        .endpoint
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.server.grpc_port));
    let client = FeaturesClient::connect_lazy(
        &endpoint,
        &GrpcOptions::with_internal_token(config.server.internal_token.as_deref()),
    )?;
    match args.command {
        FeaturesCommand::Apply { path } => {
            let request = read_definitions(&path).await?;
            for line in client.apply(ctx(), request).await?.changes {
                println!("{line}");
            }
        }
        FeaturesCommand::List => {
            for e in client.list_entities(ctx(), ListRequest {}).await?.entities {
                println!(
                    "entity {} (v{}) join_keys={:?} {}",
                    e.name, e.version, e.join_keys, e.value_type
                );
            }
            for v in client
                .list_feature_views(ctx(), ListRequest {})
                .await?
                .feature_views
            {
                let fields: Vec<String> = v
                    .fields
                    .iter()
                    .map(|f| format!("{}:{}", f.name, f.dtype))
                    .collect();
                println!(
                    "feature_view {} (v{}) entities={:?} ttl={}s online={} fields={}",
                    v.name,
                    v.version,
                    v.entities,
                    v.ttl_secs,
                    v.online,
                    fields.join(",")
                );
            }
        }
        FeaturesCommand::Ingest {
            view,
            file,
            timestamp_column,
            batch,
        } => ingest(&client, &view, &file, &timestamp_column, batch.max(1)).await?,
        FeaturesCommand::Materialize { start, end, views } => {
            let request = MaterializeRequest {
                feature_views: views,
                start_ts: values::parse_time(&start)?,
                end_ts: values::parse_time(&end)?,
                incremental: false,
            };
            materialize(&client, request).await?
        }
        FeaturesCommand::MaterializeIncremental { end, views } => {
            let end_ts = match end {
                Some(end) => values::parse_time(&end)?,
                None => values::now_micros(),
            };
            let request = MaterializeRequest {
                feature_views: views,
                start_ts: 0,
                end_ts,
                incremental: true,
            };
            materialize(&client, request).await?
        }
        FeaturesCommand::GetOnline { features, entities } => {
            let entities = entities
                .iter()
                .map(|text| {
                    let object: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(text).with_context(|| format!("--entity '{text}'"))?;
                    Ok(EntityRow {
                        keys: object
                            .into_iter()
                            .map(|(k, v)| (k, v.to_string()))
                            .collect(),
                        event_ts: 0,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let response = client
                .get_online_features(ctx(), GetOnlineFeaturesRequest { features, entities })
                .await?;
            let body = mlserve_features::http::bodies::OnlineBody::try_from(response)?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        FeaturesCommand::History {
            features,
            entities,
            timestamp_column,
            out,
        } => history(&client, features, &entities, &timestamp_column, &out).await?,
    }
    Ok(())
}

/// A CLI call's context: no deadline, id or caller.
fn ctx() -> CallContext {
    CallContext::new()
}

async fn read_definitions(path: &Path) -> Result<ApplyRequest> {
    let mut paths = Vec::new();
    if path.is_dir() {
        let mut dir = tokio::fs::read_dir(path).await?;
        while let Some(entry) = dir.next_entry().await? {
            if entry.path().extension().is_some_and(|e| e == "toml") {
                paths.push(entry.path());
            }
        }
        paths.sort();
    } else {
        paths.push(path.to_path_buf());
    }
    if paths.is_empty() {
        bail!("no .toml definition files in {}", path.display());
    }
    let mut request = ApplyRequest::default();
    for p in paths {
        let text = tokio::fs::read_to_string(&p)
            .await
            .with_context(|| format!("reading {}", p.display()))?;
        let part = catalog::parse_definitions(&text, &p.display().to_string())?;
        request.entities.extend(part.entities);
        request.feature_views.extend(part.feature_views);
    }
    Ok(request)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

async fn ingest(
    client: &FeaturesClient,
    view: &str,
    file: &Path,
    ts_column: &str,
    batch: usize,
) -> Result<()> {
    let views = client
        .list_feature_views(ctx(), ListRequest {})
        .await?
        .feature_views;
    let definition = views
        .iter()
        .find(|v| v.name == view)
        .with_context(|| format!("unknown feature view '{view}'"))?;
    let entities = client.list_entities(ctx(), ListRequest {}).await?.entities;
    let rows = if file.extension().is_some_and(|e| e == "parquet") {
        let data = tokio::fs::read(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        let (definition, ts_column) = (definition.clone(), ts_column.to_string());
        tokio::task::spawn_blocking(move || {
            parquet_io::rows_from_parquet(data, &definition, &entities, &ts_column)
        })
        .await??
    } else {
        let text = tokio::fs::read_to_string(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        files::rows_from_csv(&text, definition, &entities, ts_column)?
    };
    let progress = bar(rows.len() as u64, &format!("ingest {view}"));
    let mut total = 0;
    for chunk in rows.chunks(batch) {
        let request = IngestRequest {
            feature_view: view.to_string(),
            rows: chunk.to_vec(),
        };
        total += client.ingest(ctx(), request).await?.offline_rows;
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    println!("ingested {total} rows into {view}");
    Ok(())
}

async fn materialize(client: &FeaturesClient, request: MaterializeRequest) -> Result<()> {
    let views = if request.feature_views.is_empty() {
        client
            .list_feature_views(ctx(), ListRequest {})
            .await?
            .feature_views
            .into_iter()
            .filter(|v| v.online)
            .map(|v| v.name)
            .collect()
    } else {
        request.feature_views.clone()
    };
    let progress = bar(views.len() as u64, "materialize");
    for view in views {
        progress.set_message(format!("materialize {view}"));
        let one = MaterializeRequest {
            feature_views: vec![view],
            ..request.clone()
        };
        for done in client.materialize(ctx(), one).await?.views {
            progress.suspend(|| {
                println!(
                    "{}: {} rows written to the online store ({} .. {})",
                    done.feature_view, done.rows_written, done.start_ts, done.end_ts
                )
            });
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(())
}

async fn history(
    client: &FeaturesClient,
    features: Vec<String>,
    entities: &Path,
    ts_column: &str,
    out: &Path,
) -> Result<()> {
    let text = tokio::fs::read_to_string(entities)
        .await
        .with_context(|| format!("reading {}", entities.display()))?;
    let records = files::parse_csv(&text)?;
    let Some((header, body)) = records.split_first() else {
        bail!("{} is empty", entities.display())
    };
    let ts_index = header
        .iter()
        .position(|h| h == ts_column)
        .with_context(|| format!("no column '{ts_column}'"))?;
    let mut rows = Vec::with_capacity(body.len());
    for record in body {
        let mut row = EntityRow::default();
        for (i, (name, cell)) in header.iter().zip(record).enumerate() {
            if i == ts_index {
                row.event_ts = values::parse_time(cell)?;
            } else {
                let value = match cell.parse::<i64>() {
                    Ok(n) => serde_json::Value::from(n),
                    Err(_) => serde_json::Value::String(cell.clone()),
                };
                row.keys.insert(name.clone(), value.to_string());
            }
        }
        rows.push(row);
    }
    let format = match out.extension().and_then(|e| e.to_str()) {
        Some("csv") => Some(export::Format::Csv),
        Some("json" | "jsonl" | "ndjson") => Some(export::Format::Ndjson),
        Some("parquet") => None,
        _ => bail!("--out must end in .csv, .json, .jsonl or .parquet"),
    };
    let keys = export::key_columns(
        rows.first()
            .map(|r| HistoricalRow {
                keys: r.keys.clone(),
                ..Default::default()
            })
            .as_ref(),
    );
    let progress = bar(rows.len() as u64, "history");
    let Some(format) = format else {
        let written = mlserve_features::training_set::write_parquet_file(
            client,
            ctx(),
            features,
            rows,
            out.to_path_buf(),
            |n| progress.set_position(n),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        progress.finish();
        println!("wrote {written} rows to {}", out.display());
        return Ok(());
    };
    let mut stream = client
        .get_historical_features(
            ctx(),
            GetHistoricalFeaturesRequest {
                features: features.clone(),
                entities: rows,
            },
        )
        .await?;
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(out).await?);
    if format == export::Format::Csv {
        file.write_all(export::csv_header(&keys, &features).as_bytes())
            .await?;
    }
    let mut written = 0u64;
    while let Some(row) = stream.next().await {
        let row = row?;
        let line = match format {
            export::Format::Csv => export::csv_line(&row, &keys),
            export::Format::Ndjson => export::json_line(&row, &features),
        };
        file.write_all(line.as_bytes()).await?;
        written += 1;
        progress.inc(1);
    }
    file.flush().await?;
    progress.finish();
    println!("wrote {written} rows to {}", out.display());
    Ok(())
}
