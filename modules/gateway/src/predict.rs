//! `POST /v1/models/{model}:predict`: request → features (the model's
//! transform: entity lookup and tabular assembly, image decode and resize,
//! tokenization) → inference → post-processing declared in
//! `[gateway.pipelines.<model>]` → JSON.
//!
//! Body (JSON): `{"rows": [{"user_id": "7", "amount": 3.5}, ...]}` (entity
//! keys and/or raw feature values; `"instances"` as in KServe's v1 protocol,
//! or one `"row"`), `{"images": ["<base64>", ...]}` (or `"image"`),
//! `{"texts": ["...", ...]}` (or `"text"`); or `multipart/form-data` with
//! `image` file parts, `text` fields and `row` fields (a JSON object each).
//! The answer is `{"model_name", "model_version", "predictions": [...]}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use mlserve_proto::features::{FeatureService, TransformRequest};
use mlserve_proto::http::decode_base64_payload;
use mlserve_proto::inference::InferenceService;
use mlserve_proto::{pb, CallContext, ServiceError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::postprocess::{postprocess, Output};

/// Handles `POST /v1/models/{model}:predict` (scope `predict`).
pub async fn predict(
    State(gateway): State<Arc<Gateway>>,
    ctx: CallContext,
    Path(spec): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServiceError> {
    let Some(model) = spec.strip_suffix(":predict") else {
        let err = GatewayError::NotFound(format!(
            "no route POST /v1/models/{spec}: use /v1/models/<model>:predict"
        ));
        return Err(err.into());
    };
    crate::scopes::require(&ctx, crate::scopes::PREDICT)?;
    let answer = run(&gateway, ctx, model, &headers, body).await?;
    Ok(axum::Json(answer).into_response())
}

async fn run(
    gateway: &Gateway,
    ctx: CallContext,
    model: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Value, GatewayError> {
    if body.len() > gateway.max_body_bytes {
        return Err(GatewayError::PayloadTooLarge(gateway.max_body_bytes));
    }
    let pipeline = &gateway.pipelines.get(model).await?;
    let features = gateway.features.as_ref().ok_or_else(|| {
        GatewayError::Unavailable(
            "the features role is not reachable from this gateway (set features.endpoint or --features-endpoint)"
                .into(),
        )
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut transform = transform_request(content_type, body).await?;
    transform.model = model.to_string();
    let batch = transform.rows_json.len() + transform.images.len() + transform.texts.len();
    if batch == 0 {
        return Err(GatewayError::BadRequest(
            "predict needs rows, images or texts".into(),
        ));
    }
    // The features call spends from the same deadline as inference.
    let ctx = match ctx.deadline {
        Some(_) => ctx,
        None => ctx.with_timeout(gateway.default_timeout()),
    };
    let deadline = ctx.deadline.unwrap_or_else(Instant::now);
    let transformed = features.transform(ctx.clone(), transform);
    let tensors = tokio::time::timeout_at(deadline.into(), transformed)
        .await
        .map_err(|_| {
            GatewayError::Unavailable("deadline exceeded in the features role".into())
        })??;
    let mut request = tensors.into_infer_request(model);
    if let Some(output) = &pipeline.output {
        request
            .outputs
            .push(pb::model_infer_request::InferRequestedOutputTensor {
                name: output.clone(),
                ..Default::default()
            });
    }
    // The predict scope covers the model call: the router, not the scoped client.
    let response = gateway.router.model_infer(ctx, request).await?;
    let output = Output::find(&response, pipeline.output.as_deref())?;
    let predictions = postprocess(pipeline, &output)?;
    Ok(json!({
        "model_name": model,
        "model_version": response.model_version,
        "predictions": predictions,
    }))
}

/// Decodes a predict body into the features role's request (model name
/// still empty): `multipart/form-data` when `content_type` says so, JSON
/// otherwise. The body is whole in memory, so this never waits on I/O.
/// Public as the entry point of the fuzz targets in `fuzz/`.
pub async fn transform_request(
    content_type: &str,
    body: Bytes,
) -> Result<TransformRequest, GatewayError> {
    if content_type.starts_with("multipart/form-data") {
        transform_from_multipart(content_type, body).await
    } else {
        transform_from_json(&body)
    }
}

/// A predict request's JSON body: one kind of input, under its plural name or
/// one item under its singular name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictBody {
    row: Option<Map<String, Value>>,
    rows: Option<Vec<Map<String, Value>>>,
    /// KServe v1's name for rows.
    instances: Option<Vec<Map<String, Value>>>,
    image: Option<String>,
    images: Option<Vec<String>>,
    text: Option<String>,
    texts: Option<Vec<String>>,
}

/// The items of the one name given (none given: no items; two: an error).
fn one_of<T, const N: usize>(given: [(&str, Option<Vec<T>>); N]) -> Result<Vec<T>, GatewayError> {
    let mut present = given.into_iter().filter_map(|(n, v)| Some((n, v?)));
    let Some((name, items)) = present.next() else {
        return Ok(Vec::new());
    };
    match present.next() {
        Some((other, _)) => Err(GatewayError::BadRequest(format!(
            "give either '{name}' or '{other}', not both"
        ))),
        None => Ok(items),
    }
}

fn transform_from_json(body: &[u8]) -> Result<TransformRequest, GatewayError> {
    let body: PredictBody = serde_json::from_slice(body).map_err(|e| {
        GatewayError::BadRequest(format!(
            "invalid predict body ({e}): expected {{\"rows\": [{{...}}]}} (or \"instances\"), \
             {{\"images\": [\"<base64>\"]}} or {{\"texts\": [\"...\"]}}"
        ))
    })?;
    let rows = one_of([
        ("row", body.row.map(|r| vec![r])),
        ("rows", body.rows),
        ("instances", body.instances),
    ])?;
    let images = one_of([
        ("image", body.image.map(|i| vec![i])),
        ("images", body.images),
    ])?;
    let texts = one_of([("text", body.text.map(|t| vec![t])), ("texts", body.texts)])?;
    let images = images
        .iter()
        .map(|text| {
            decode_base64_payload(text)
                .map_err(|e| GatewayError::BadRequest(format!("image is not valid base64: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(TransformRequest {
        model: String::new(),
        rows_json: rows
            .into_iter()
            .map(|row| Value::Object(row).to_string())
            .collect(),
        images,
        texts,
    })
}

fn bad_multipart(error: impl std::fmt::Display) -> GatewayError {
    GatewayError::BadRequest(format!("invalid multipart body: {error}"))
}

/// Reads a `multipart/form-data` body (RFC 7578, parsed by `multer`): `image`
/// file parts, `text` and `row` fields. The body is already in memory and
/// under the size limit, so it is one chunk of the stream.
async fn transform_from_multipart(
    content_type: &str,
    body: Bytes,
) -> Result<TransformRequest, GatewayError> {
    let boundary = multer::parse_boundary(content_type).map_err(bad_multipart)?;
    let body = futures_util::stream::once(async { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(body, boundary);
    let mut request = TransformRequest::default();
    while let Some(field) = form.next_field().await.map_err(bad_multipart)? {
        let name = field
            .name()
            .ok_or_else(|| bad_multipart("part without a Content-Disposition name"))?
            .to_string();
        let data = field.bytes().await.map_err(bad_multipart)?;
        match name.as_str() {
            "image" | "images" => request.images.push(data.to_vec()),
            "text" | "texts" => request.texts.push(
                String::from_utf8(data.to_vec())
                    .map_err(|_| GatewayError::BadRequest("text part is not UTF-8".into()))?,
            ),
            "row" | "rows" => request.rows_json.push(
                String::from_utf8(data.to_vec())
                    .map_err(|_| GatewayError::BadRequest("row part is not UTF-8".into()))?,
            ),
            other => {
                return Err(GatewayError::BadRequest(format!(
                    "unknown multipart field '{other}': use image, text or row"
                )))
            }
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_become_transform_requests() {
        let t =
            transform_from_json(br#"{"rows": [{"user_id": "1"}, {"user_id": "2", "amount": 3}]}"#)
                .unwrap();
        let rows: Vec<Value> = t
            .rows_json
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                json!({"user_id": "1"}),
                json!({"user_id": "2", "amount": 3})
            ]
        );
        let t = transform_from_json(br#"{"instances": [{"x": 1}]}"#).unwrap();
        assert_eq!(t.rows_json, [r#"{"x":1}"#]);
        let t = transform_from_json(br#"{"row": {"x": 1}}"#).unwrap();
        assert_eq!(t.rows_json, [r#"{"x":1}"#]);
        let t = transform_from_json(br#"{"image": "data:image/png;base64,AAEC"}"#).unwrap();
        assert_eq!(t.images, vec![vec![0u8, 1, 2]]);
        let t = transform_from_json(br#"{"texts": ["a", "b"]}"#).unwrap();
        assert_eq!(t.texts, vec!["a", "b"]);
        for bad in [
            &br#"[]"#[..],
            br#"{"rows": 1}"#,
            br#"{"text": "a", "texts": ["b"]}"#,
            br#"{"image": "%%%"}"#,
            br#"{"rows": [1]}"#,
            br#"{"rows": [{}], "instances": [{}]}"#,
            br#"{"rows_json": [{}]}"#,
            b"not json",
        ] {
            let err = transform_from_json(bad).unwrap_err();
            assert_eq!(err.code(), mlserve_proto::ErrorCode::BadRequest);
        }
    }

    #[tokio::test]
    async fn multipart_parts_are_read() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\x01\r\n--XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"row\"\r\n\r\n{\"user_id\": \"7\"}\r\n--XyZ--\r\n";
        let t = transform_from_multipart(
            "multipart/form-data; boundary=XyZ",
            Bytes::from_static(body),
        )
        .await
        .unwrap();
        assert_eq!(t.images, vec![b"\x89PNG\r\n\x00\x01".to_vec()]);
        assert_eq!(t.texts, vec!["hello"]);
        assert_eq!(t.rows_json, vec![r#"{"user_id": "7"}"#]);
    }

    #[tokio::test]
    async fn malformed_multipart_bodies_are_400() {
        let part =
            |name: &str| format!("--a\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n");
        for (ct, body) in [
            ("multipart/form-data", b"--a\r\n".to_vec()),
            ("multipart/form-data; boundary=a", b"nothing".to_vec()),
            (
                "multipart/form-data; boundary=a",
                format!("{}no end", part("x")).into_bytes(),
            ),
            (
                "multipart/form-data; boundary=a",
                b"--a\r\nX: y\r\n\r\nv\r\n--a--".to_vec(),
            ),
            (
                "multipart/form-data; boundary=a",
                format!("{}v\r\n--a--\r\n", part("other")).into_bytes(),
            ),
            (
                "multipart/form-data; boundary=a",
                [part("text").as_bytes(), b"\xff\r\n--a--\r\n"].concat(),
            ),
        ] {
            let err = transform_from_multipart(ct, Bytes::from(body.clone()))
                .await
                .unwrap_err();
            assert_eq!(err.code(), mlserve_proto::ErrorCode::BadRequest, "{body:?}");
        }
    }
}
