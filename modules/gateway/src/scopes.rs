//! Scopes: what a credential may do. API keys carry them (`mlserve keys
//! create --scope`), JWTs in a configurable claim. With authentication off
//! there is no caller and nothing is checked.
//!
//! - `infer`: the Open Inference Protocol on every model; `infer:<model>`
//!   on that model only.
//! - `predict`: the predict API (`/v1/models/{name}:predict`).
//! - `rollouts:admin`: canary splits and rollouts.
//! - `registry:read`, `registry:write` (and Triton's repository load and
//!   unload), `features:read`, `features:write`, `training:submit`,
//!   `keys:admin`.

use mlserve_proto::{CallContext, ErrorCode, ServiceError, ServiceResult};

use crate::error::GatewayError;

/// The Open Inference Protocol, on every model.
pub const INFER: &str = "infer";
/// The predict API.
pub const PREDICT: &str = "predict";
/// Canary splits and rollouts.
pub const ROLLOUTS_ADMIN: &str = "rollouts:admin";
/// Reading the registry.
pub const REGISTRY_READ: &str = "registry:read";
/// Changing the registry, and Triton's repository load and unload.
pub const REGISTRY_WRITE: &str = "registry:write";
/// Reading features.
pub const FEATURES_READ: &str = "features:read";
/// Writing features and definitions.
pub const FEATURES_WRITE: &str = "features:write";
/// Submitting training runs.
pub const TRAINING_SUBMIT: &str = "training:submit";
/// Creating and revoking API keys.
pub const KEYS_ADMIN: &str = "keys:admin";

/// Every scope name (besides `infer:<model>`).
pub const ALL: [&str; 9] = [
    INFER,
    PREDICT,
    ROLLOUTS_ADMIN,
    REGISTRY_READ,
    REGISTRY_WRITE,
    FEATURES_READ,
    FEATURES_WRITE,
    TRAINING_SUBMIT,
    KEYS_ADMIN,
];

/// The scopes of a key created without `--scope`, and of a JWT without the
/// scopes claim (unless `gateway.jwt.default_scopes` says otherwise): the
/// data plane only.
pub const DEFAULT: [&str; 2] = [INFER, PREDICT];

/// Checks and normalizes scopes given as items that may each hold several,
/// separated by spaces or commas: known names, or `infer:<model>`. Order is
/// kept and duplicates dropped.
pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, GatewayError> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in items
        .into_iter()
        .flat_map(|item| item.split([' ', ',']))
        .filter(|s| !s.is_empty())
    {
        if !is_known(scope) {
            return Err(GatewayError::BadRequest(format!(
                "unknown scope '{scope}': use {} or infer:<model>",
                ALL.join(", ")
            )));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    Ok(scopes)
}

/// Whether `scope` is one of [`ALL`] or `infer:<model>` with a valid name.
pub fn is_known(scope: &str) -> bool {
    ALL.contains(&scope)
        || scope
            .strip_prefix("infer:")
            .is_some_and(|model| !model.is_empty() && model.bytes().all(model_name_byte))
}

fn model_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.".contains(&b)
}

fn denied(what: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::PermissionDenied,
        format!("the credential lacks the scope {what}"),
    )
}

/// Allows the call when authentication is off or the caller holds `scope`;
/// else a permission error naming it.
pub fn require(ctx: &CallContext, scope: &str) -> ServiceResult<()> {
    match &ctx.caller {
        Some(caller) if !caller.has_scope(scope) => Err(denied(&format!("'{scope}'"))),
        _ => Ok(()),
    }
}

/// Allows the call when authentication is off or the caller holds one of
/// `scopes`; else a permission error naming them.
pub fn require_any(ctx: &CallContext, scopes: &[&str]) -> ServiceResult<()> {
    match &ctx.caller {
        Some(caller) if !scopes.iter().any(|s| caller.has_scope(s)) => {
            let named: Vec<String> = scopes.iter().map(|s| format!("'{s}'")).collect();
            Err(denied(&named.join(" or ")))
        }
        _ => Ok(()),
    }
}

/// Allows an inference call on `model`: `infer`, or `infer:<model>`.
pub fn require_infer(ctx: &CallContext, model: &str) -> ServiceResult<()> {
    match &ctx.caller {
        Some(caller)
            if !caller
                .scopes
                .iter()
                .any(|s| s == INFER || s.strip_prefix("infer:") == Some(model)) =>
        {
            Err(denied(&format!("'{INFER}' (or 'infer:{model}')")))
        }
        _ => Ok(()),
    }
}

/// Allows a server-wide inference call (metadata, the repository index):
/// `infer` or `infer:<model>` for any model.
pub fn require_some_infer(ctx: &CallContext) -> ServiceResult<()> {
    match &ctx.caller {
        Some(caller)
            if !caller
                .scopes
                .iter()
                .any(|s| s == INFER || s.starts_with("infer:")) =>
        {
            Err(denied(&format!("'{INFER}' (or 'infer:<model>')")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mlserve_proto::Caller;

    use super::*;

    fn with(scopes: &[&str]) -> CallContext {
        CallContext {
            caller: Some(Arc::new(Caller {
                identity: "key:t".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                priority: 0,
            })),
            ..CallContext::default()
        }
    }

    #[test]
    fn scopes_parse_split_and_refuse_unknown_names() {
        assert_eq!(
            parse(["infer, predict", "infer:tabular rollouts:admin", "infer"]).unwrap(),
            ["infer", "predict", "infer:tabular", "rollouts:admin"]
        );
        for bad in ["admin", "infer:", "infer:a/b", "registry:delete", "INFER"] {
            let err = parse([bad]).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadRequest, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(parse(ALL).is_ok());
    }

    #[test]
    fn checks_pass_without_a_caller_and_name_the_missing_scope() {
        let anonymous = CallContext::default();
        assert!(require(&anonymous, ROLLOUTS_ADMIN).is_ok());
        assert!(require_infer(&anonymous, "m").is_ok());
        assert!(require_some_infer(&anonymous).is_ok());

        let predict_only = with(&[PREDICT]);
        assert!(require(&predict_only, PREDICT).is_ok());
        let err = require(&predict_only, ROLLOUTS_ADMIN).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(err.message.contains("'rollouts:admin'"), "{}", err.message);
        assert!(require_infer(&predict_only, "m").is_err());
        assert!(require_some_infer(&predict_only).is_err());

        let one_model = with(&["infer:a"]);
        assert!(require_infer(&one_model, "a").is_ok());
        let err = require_infer(&one_model, "b").unwrap_err();
        assert!(err.message.contains("infer:b"), "{}", err.message);
        assert!(require_some_infer(&one_model).is_ok());
        assert!(require_infer(&with(&[INFER]), "b").is_ok());
    }

    #[test]
    fn any_of_several_scopes_will_do() {
        let reader = with(&[REGISTRY_READ]);
        assert!(require_any(&reader, &[TRAINING_SUBMIT, REGISTRY_READ]).is_ok());
        let err = require_any(&reader, &[ROLLOUTS_ADMIN, KEYS_ADMIN]).unwrap_err();
        assert!(
            err.message.contains("'rollouts:admin' or 'keys:admin'"),
            "{}",
            err.message
        );
        assert!(require_any(&CallContext::default(), &[KEYS_ADMIN]).is_ok());
    }
}
