//! `POST /v2/models/{m}[/versions/{v}]/infer`: read the body, decode it, run
//! the service, encode the answer, compress it when the client accepts that.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::body::{accepted_coding, compress, offload, read_body};
use super::handlers::model_config_of;
use super::infer_request::{decode, decode_raw, header_length, ResponsePlan, HEADER_LENGTH};
use super::infer_response::encode;
use super::{model_ref, PathParams, SharedState};
use crate::body_guard::BodyLease;
use crate::inference::InferenceService;
use crate::{pb, CallContext, ServiceError};

/// The infer handler.
pub(super) async fn model_infer(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
    request: Request,
) -> Result<Response, ServiceError> {
    // The request is taken whole, not as a `HeaderMap` (which axum clones).
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let model = model_ref(params)?;
    let header_len = header_length(&headers)?;
    let lease = parts.extensions.get::<BodyLease>().cloned();
    let body = read_body(&headers, body, state.options.max_body_bytes, lease).await?;
    let mut decoded = match header_len {
        Some(0) => {
            let request = pb::ModelMetadataRequest {
                name: model.name.clone(),
                version: model.version.clone(),
            };
            let metadata = state.service.model_metadata(ctx.clone(), request).await?;
            decode_raw(body, &metadata)?
        }
        _ => {
            // Only the JSON part needs parsing; binary data is sliced.
            let json_len = header_len.unwrap_or(body.len());
            offload(json_len, move || decode(body, header_len)).await?
        }
    };
    if decoded.plan.classifies() {
        let config = model_config_of(&state, ctx.clone(), &model).await?;
        decoded.plan.batched = config.max_batch_size.unwrap_or(0) > 0;
    }
    decoded.request.model_name = model.name;
    decoded.request.model_version = model.version;

    let response = state.service.model_infer(ctx, decoded.request).await?;
    let plan = decoded.plan;
    let coding = accepted_coding(&headers);
    let work = encode_work(&response, &plan, coding.is_some());
    let (body, header_len) = offload(work, move || {
        let encoded = encode(response, &plan)?;
        let body = match coding {
            Some(coding) => compress(coding, &encoded.body)?,
            None => encoded.body,
        };
        Ok((body, encoded.header_len))
    })
    .await?;

    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    let content_type = if header_len.is_some() {
        "application/octet-stream"
    } else {
        "application/json"
    };
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(len) = header_len {
        out.insert(HEADER_LENGTH, HeaderValue::from(len));
    }
    if let Some(coding) = coding {
        out.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
    }
    Ok(response)
}

/// About how many bytes encoding `response` works through: all of them when
/// compressing; otherwise those written as JSON (per-element formatting),
/// plus a sixteenth of those copied as binary (a plain copy).
fn encode_work(response: &pb::ModelInferResponse, plan: &ResponsePlan, compressing: bool) -> usize {
    response
        .outputs
        .iter()
        .zip(&response.raw_output_contents)
        .map(|(output, raw)| {
            let wanted = plan.outputs.get(&output.name).copied().unwrap_or_default();
            let binary = wanted.binary.unwrap_or(plan.binary_default);
            if compressing || !binary {
                raw.len()
            } else {
                raw.len() / 16
            }
        })
        .sum()
}
