//! A step's stdout and stderr, read from an offset: from the step's log file
//! while this node has it (it grows while the step runs), else from the copy
//! kept in the object store when the attempt ended.

use futures_util::StreamExt;
use mlserve_proto::training::LogsResponse;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::attempt::instance_dir;
use crate::engine::Engine;
use crate::error::{Result, TrainingError};
use crate::outputs;

/// Up to `max` bytes of `stream` of step instance `step` of `run`, from `offset`.
pub async fn read(
    engine: &Engine,
    run: &str,
    step: &str,
    stream: &str,
    offset: u64,
    max: u64,
) -> Result<LogsResponse> {
    let store = engine.store();
    let steps = store.steps(run).await?;
    let Some(row) = steps.iter().find(|s| s.name == step) else {
        store.run(run).await?;
        return Err(TrainingError::NotFound(format!(
            "run '{run}' has no step '{step}' (yet)"
        )));
    };
    let ended = row.state.is_terminal();
    let local = engine
        .settings()
        .work_dir
        .join("runs")
        .join(run)
        .join(instance_dir(row))
        .join("logs")
        .join(format!("{stream}.log"));
    let data = match tokio::fs::File::open(&local).await {
        Ok(mut file) => {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| TrainingError::Internal(e.to_string()))?;
            let mut data = Vec::new();
            file.take(max)
                .read_to_end(&mut data)
                .await
                .map_err(|e| TrainingError::Internal(e.to_string()))?;
            data
        }
        Err(_) => {
            let key = outputs::key(run, &instance_dir(row), &format!("logs/{stream}.log"));
            match engine.env.artifacts.read(&key).await {
                Ok(mut chunks) => {
                    let mut data = Vec::new();
                    let mut skipped = 0u64;
                    while let Some(chunk) = chunks.next().await {
                        let chunk = chunk.map_err(|e| TrainingError::Artifacts(e.to_string()))?;
                        let start = offset.saturating_sub(skipped).min(chunk.len() as u64) as usize;
                        skipped += chunk.len() as u64;
                        data.extend_from_slice(&chunk[start..]);
                        if data.len() as u64 >= max {
                            data.truncate(max as usize);
                            break;
                        }
                    }
                    data
                }
                Err(_) => Vec::new(),
            }
        }
    };
    let next_offset = offset + data.len() as u64;
    let complete = ended && (data.len() as u64) < max;
    Ok(LogsResponse {
        data,
        next_offset,
        complete,
    })
}
